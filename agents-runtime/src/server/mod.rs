//! [`Server`]: the builder (agents, env, limits) and the running server.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::net::{TcpListener, ToSocketAddrs};

use crate::agent::Agent;
use crate::agent::stub::AgentStub;
use crate::cluster::ClusterConfig;
use crate::env::Env;
use crate::error::Error;
use crate::instance::{AgentClass, Directory};
use crate::limits::Limits;
use crate::registry;
use crate::sql::Databases;
use crate::storage::durability::GroupCommit;
use crate::storage::{MemoryStore, SledStore, Store};
use crate::transport::{AssetSpec, Assets, Edge};

mod cluster;

/// What the running server holds: the directory of instances and the network edge.
struct Running {
    edge: Arc<Edge>,
    data_dir: Option<PathBuf>,
    /// Cluster mode: the way the other nodes' links reach the instances (the links hold it
    /// weakly: kept alive here).
    _links: Option<Arc<crate::instance::inbound::Links>>,
}

impl Running {
    fn directory(&self) -> &Arc<Directory> {
        &self.edge.directory
    }

    /// Closes every socket with 1001, lets the instances finish what is queued, and flushes the
    /// store. Each wait is bounded by the close timeout.
    async fn shut_down(&self) {
        let directory = self.directory();
        directory.close();
        self.edge.sockets.shut_down();
        let wait = directory.limits.close_timeout + Duration::from_secs(1);
        let closed = wait_until(wait, || self.edge.sockets.open() == 0).await;
        if !closed {
            tracing::warn!(
                open = self.edge.sockets.open(),
                "shutdown: sockets still open after {wait:?}"
            );
        }
        directory.clear(wait).await;
        match directory.commits.flush_now().await {
            Ok(()) => tracing::info!("shutdown: store flushed"),
            Err(e) => tracing::error!("shutdown: the final flush failed: {e}"),
        }
        if let Some(cluster) = &directory.cluster {
            cluster::leave(cluster).await;
        }
        // The flusher lets go of the store, so the data directory is free once every other
        // holder (the server itself, the last sockets) is gone.
        directory.commits.stop(directory.limits.close_timeout).await;
    }
}

/// The classes a server hosts: `given` and every `#[agent]` in the binary, by route name; an
/// error if two types share a name.
fn collect_classes(given: Vec<AgentClass>) -> Result<HashMap<&'static str, AgentClass>, Error> {
    let mut classes: HashMap<&'static str, AgentClass> = HashMap::new();
    for class in given.into_iter().chain(registry::registered()) {
        if let Some(existing) = classes.get(class.name) {
            if (existing.type_id)() != (class.type_id)() {
                return Err(Error::msg(format!(
                    "two agents are named `{}`: {} and {}; rename one with #[agent(name = \"...\")]",
                    class.name, existing.type_name, class.type_name
                )));
            }
            continue;
        }
        classes.insert(class.name, class);
    }
    Ok(classes)
}

/// Polls `done` every 10 ms until it holds or `limit` passes; returns whether it held.
async fn wait_until(limit: Duration, done: impl Fn() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while !done() {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    true
}

/// Builds a [`Server`]: which agents it hosts, their `env`, and its limits.
///
/// Every `#[agent]` type linked into the binary is hosted; [`agent`](Self::agent) adds one
/// explicitly (a hand-written `Agent` impl, or to make the dependency visible).
pub struct ServerBuilder {
    classes: Vec<AgentClass>,
    env: HashMap<TypeId, Box<dyn Any + Send + Sync>>,
    limits: Limits,
    data: Data,
    store: Option<Arc<dyn Store>>,
    assets: Vec<AssetSpec>,
    cluster: Option<ClusterConfig>,
}

/// Where a server keeps its data: the directory named in [`DEFAULT_DATA_DIR`] unless the
/// builder says otherwise.
#[derive(Clone, Debug, PartialEq)]
enum Data {
    /// Not chosen: [`DEFAULT_DATA_DIR`].
    Default,
    Dir(PathBuf),
    InMemory,
}

/// Where a server keeps its data when its builder names no other place: `./.agents-data`,
/// relative to the working directory (the examples server's default too). Agents' state,
/// storage and SQL databases survive restarts there.
pub const DEFAULT_DATA_DIR: &str = ".agents-data";

impl ServerBuilder {
    /// Hosts agent `A` under `/agents/{A::NAME}/{name}`.
    pub fn agent<A: Agent>(mut self) -> Self {
        self.classes.push(AgentClass::of::<A>());
        self
    }

    /// Adds a shared resource to `env`, reachable from hooks as `ctx.env().get::<T>()`.
    /// One value per type; a second value of the same type replaces the first.
    pub fn env<T: Any + Send + Sync>(mut self, value: T) -> Self {
        self.env.insert(TypeId::of::<T>(), Box::new(value));
        self
    }

    /// Serves `body` at `path` (GET and HEAD, with an ETag) with the given `Content-Type`,
    /// the counterpart of a Worker's static assets: a front end shipped in the same binary
    /// as its agents, typically with `include_bytes!`. Paths are exact (`/` is not
    /// `/index.html`) and may not lie under `/agents/`; [`bind`](Self::bind) checks them.
    ///
    /// ```no_run
    /// # async fn main_() -> agents_runtime::Result<()> {
    /// let server = agents_runtime::Server::builder()
    ///     .asset("/", "text/html; charset=utf-8", &b"<h1>Hello</h1>"[..])
    ///     .bind("127.0.0.1:8787")
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn asset(
        mut self,
        path: impl Into<String>,
        content_type: impl Into<String>,
        body: impl Into<bytes::Bytes>,
    ) -> Self {
        let (path, content_type, body) = (path.into(), content_type.into(), body.into());
        self.assets.push(AssetSpec { path, content_type, body });
        self
    }

    /// The directory the server keeps its data in, created when the server binds (default
    /// [`DEFAULT_DATA_DIR`] in the working directory): the embedded store ([`SledStore`])
    /// lives in its `store` folder, the SQL databases in `sql`.
    ///
    /// ```no_run
    /// # async fn main_() -> agents_runtime::Result<()> {
    /// let server = agents_runtime::Server::builder().data_dir("/var/lib/my-agents");
    /// # let _ = server; Ok(()) }
    /// ```
    pub fn data_dir(mut self, path: impl Into<PathBuf>) -> Self {
        self.data = Data::Dir(path.into());
        self
    }

    /// Keeps everything in memory, lost when the process ends: for tests and throwaway
    /// servers. ([`testing::start`](crate::testing::start) does this unless the builder names
    /// a data directory or a store.)
    pub fn in_memory(mut self) -> Self {
        self.data = Data::InMemory;
        self
    }

    /// Whether the builder was told where to keep data (a directory, memory, or a store).
    #[cfg(feature = "testing")]
    pub(crate) fn names_its_storage(&self) -> bool {
        self.data != Data::Default || self.store.is_some()
    }

    /// Keeps agent state and storage in `store` instead of the data directory's sled database
    /// (another backend, or a store shared with the rest of the program).
    pub fn store(mut self, store: impl Store) -> Self {
        self.store = Some(Arc::new(store));
        self
    }

    /// Runs the server as a node of a cluster on PostgreSQL: every node serves every agent's
    /// sockets, each agent runs on one node at a time (its owner, fenced by PostgreSQL), and
    /// its data lives in PostgreSQL, so it moves to another node when its owner dies or lets
    /// it go. The tables are created or migrated when the server binds. See the book's
    /// cluster chapter.
    ///
    /// ```no_run
    /// # async fn main_() -> agents_runtime::Result<()> {
    /// use agents_runtime::cluster::ClusterConfig;
    /// let mut config = ClusterConfig::new("postgres://agents@db.internal/agents");
    /// config.node_addr = Some("10.0.0.5:8787".into());
    /// let server = agents_runtime::Server::builder().cluster(config).bind("0.0.0.0:8787").await?;
    /// # Ok(()) }
    /// ```
    pub fn cluster(mut self, config: ClusterConfig) -> Self {
        self.cluster = Some(config);
        self
    }

    /// How long an instance goes without events before it leaves memory. One with connections
    /// hibernates: its struct is dropped, its sockets stay open, and the next event starts it
    /// again (`on_start` included) unless it is `#[agent(hibernate = false)]`. One without
    /// connections is dropped entirely. Default 10 s, as on Cloudflare.
    pub fn hibernate_after(mut self, idle: Duration) -> Self {
        self.limits.hibernate_after = idle;
        self
    }

    /// Whether agents may connect to MCP servers on loopback addresses (`127.0.0.0/8`, `::1`,
    /// and names that resolve to them), as the Cloudflare SDK allows. Default `true`; turn it
    /// off where a client could add servers (as the `Toolbox` example lets it) and the host
    /// runs services on loopback that clients should not reach. Private and internal
    /// addresses are always refused; see the book's MCP chapter.
    pub fn allow_loopback_mcp_servers(mut self, allow: bool) -> Self {
        self.limits.mcp_loopback = allow;
        self
    }

    /// Largest WebSocket message (and frame) a client may send, in bytes; a bigger one closes
    /// the connection with 1009. Default 1 MiB.
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.limits.max_message_size = bytes;
        self
    }

    /// Messages queued per connection before a client that stopped reading is closed with
    /// 1013. Default 1024.
    pub fn outbox_capacity(mut self, messages: usize) -> Self {
        self.limits.outbox_capacity = messages;
        self
    }

    /// Bytes queued per connection before a client that stopped reading is closed with 1013
    /// (a single bigger message still goes out). Default 16 MiB.
    pub fn max_outbox_bytes(mut self, bytes: usize) -> Self {
        self.limits.max_outbox_bytes = bytes;
        self
    }

    /// Events queued per instance; sockets wait (and stop reading) while it is full.
    /// Default 1024.
    pub fn mailbox_capacity(mut self, events: usize) -> Self {
        self.limits.mailbox_capacity = events;
        self
    }

    /// Largest per-connection state, in bytes of JSON; `set_state` refuses a bigger one.
    /// Default 2048, Cloudflare's attachment limit.
    pub fn max_connection_state_size(mut self, bytes: usize) -> Self {
        self.limits.max_connection_state_size = bytes;
        self
    }

    /// Largest HTTP request body passed to `on_request`; a bigger one gets 413. Default 1 MiB.
    pub fn max_request_body_size(mut self, bytes: usize) -> Self {
        self.limits.max_request_body_size = bytes;
        self
    }

    /// Largest HTTP request head (request line and headers, the WebSocket upgrade's included),
    /// in bytes; a bigger one gets 431. At least 8192. Default 64 KiB.
    pub fn max_request_head_size(mut self, bytes: usize) -> Self {
        self.limits.max_request_head_size = bytes;
        self
    }

    /// How long flushes may fail (a full disk) before the runtime gives up on the writes they
    /// hold: frames waiting for those writes are dropped, RPC calls answered by them get an
    /// error instead, held HTTP answers become 503, and the instances that made the writes
    /// restart from what is durable. Meanwhile nothing that waits for a write is sent, and
    /// what does not wait is served as usual. Default 5 s.
    pub fn storage_timeout(mut self, timeout: Duration) -> Self {
        self.limits.storage_timeout = timeout;
        self
    }

    /// What unfinished WebSocket messages (a frame or fragments that have not fully arrived)
    /// may hold together, server-wide, in bytes. A socket whose unfinished message would go
    /// over it is closed with 1013 ("try again later"); messages that arrive whole in a read
    /// never count. Default 256 MiB.
    pub fn max_unfinished_input(mut self, bytes: usize) -> Self {
        self.limits.max_unfinished_input = bytes;
        self
    }

    /// How long a WebSocket message may take to arrive once it has begun; past it the socket
    /// is closed with 1008. Default 30 s.
    pub fn message_timeout(mut self, timeout: Duration) -> Self {
        self.limits.message_timeout = timeout;
        self
    }

    /// How long a client may take to send an HTTP request's head (the WebSocket upgrade's
    /// included); past it the connection is closed. Default 10 s.
    pub fn request_head_timeout(mut self, timeout: Duration) -> Self {
        self.limits.request_head_timeout = timeout;
        self
    }

    /// What one read from a socket takes at most, in bytes. Reads land in one buffer per
    /// worker thread; a connection keeps only the part of a frame that has not fully arrived,
    /// so an idle connection holds no read buffer. Default 64 KiB.
    pub fn read_buffer_size(mut self, bytes: usize) -> Self {
        self.limits.read_buffer_size = bytes;
        self
    }

    /// How long a close handshake may take before the socket is dropped. Default 5 s.
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.limits.close_timeout = timeout;
        self
    }

    /// How long writing to a client may stall before it is closed with 1013 as not reading.
    /// Default 30 s.
    pub fn send_timeout(mut self, timeout: Duration) -> Self {
        self.limits.send_timeout = timeout;
        self
    }

    /// Most WebSockets open at once; an upgrade over it gets 503 at once. Every WebSocket holds
    /// a file descriptor, so the default is the process's open-file limit less a tenth of it
    /// (at least 32) for the store, the listener and plain HTTP requests.
    pub fn max_connections(mut self, connections: usize) -> Self {
        self.limits.max_connections = connections;
        self
    }

    /// Most agent instances in memory at once; a request for a new one over it gets 503, a
    /// WebSocket close 1013. Default 100 000.
    pub fn max_instances(mut self, instances: usize) -> Self {
        self.limits.max_instances = instances;
        self
    }

    /// Most SQL databases open at once (`ctx.sql()`); each holds three file descriptors. An
    /// instance's database is open while it is awake; at the bound, the least recently used
    /// one between turns is closed. Default 256, or fewer where a tenth of the open-file limit
    /// cannot hold them; `max_connections`' default leaves their descriptors free.
    pub fn max_open_databases(mut self, databases: usize) -> Self {
        self.limits.sql.max_open_databases = databases;
        self
    }

    /// The longest SQL statement, in bytes. Default 100 000, as Cloudflare's.
    pub fn max_sql_statement_length(mut self, bytes: usize) -> Self {
        self.limits.sql.max_statement_length = bytes;
        self
    }

    /// Most bound parameters of one SQL statement. Default 100, as Cloudflare's.
    pub fn max_sql_bound_parameters(mut self, parameters: usize) -> Self {
        self.limits.sql.max_bound_parameters = parameters;
        self
    }

    /// The largest string, BLOB or row of an SQL database, in bytes. Default 2 000 000, as
    /// Cloudflare's.
    pub fn max_sql_row_size(mut self, bytes: usize) -> Self {
        self.limits.sql.max_row_size = bytes;
        self
    }

    /// The largest SQL database of one instance, in bytes. Default 10 GB, as Cloudflare's.
    pub fn max_sql_database_size(mut self, bytes: u64) -> Self {
        self.limits.sql.max_database_size = bytes;
        self
    }

    /// Checks the configuration, creates the data directory and binds the listener.
    pub async fn bind(self, addr: impl ToSocketAddrs) -> Result<Server, Error> {
        let limits = self.limits;
        for (what, value, least) in [
            // A refused connection needs two slots: its error frame and its close frame.
            ("outbox_capacity", limits.outbox_capacity, 2),
            ("max_outbox_bytes", limits.max_outbox_bytes, 1),
            ("mailbox_capacity", limits.mailbox_capacity, 1),
            ("max_message_size", limits.max_message_size, 1),
            ("read_buffer_size", limits.read_buffer_size, 1),
            // hyper's smallest read buffer.
            ("max_request_head_size", limits.max_request_head_size, 8192),
            ("max_connections", limits.max_connections, 1),
            ("max_instances", limits.max_instances, 1),
            ("max_open_databases", limits.sql.max_open_databases, 1),
            ("max_sql_statement_length", limits.sql.max_statement_length, 64),
            ("max_sql_bound_parameters", limits.sql.max_bound_parameters, 1),
            ("max_sql_row_size", limits.sql.max_row_size, 1024),
            (
                "max_sql_database_size",
                usize::try_from(limits.sql.max_database_size).unwrap_or(usize::MAX),
                65536,
            ),
        ] {
            if value < least {
                return Err(Error::msg(format!("{what} must be at least {least}")));
            }
        }
        let classes = collect_classes(self.classes)?;
        let assets = Assets::build(self.assets)?;
        let data_dir = match self.data {
            Data::Default => Some(PathBuf::from(DEFAULT_DATA_DIR)),
            Data::Dir(dir) => Some(dir),
            Data::InMemory => None,
        };
        if let Some(dir) = &data_dir {
            std::fs::create_dir_all(dir).map_err(|e| {
                Error::msg(format!("cannot create data directory {}: {e}", dir.display()))
            })?;
        }
        if self.cluster.is_some() && self.store.is_some() {
            return Err(Error::msg(
                "a cluster keeps its data in PostgreSQL: ServerBuilder::store and cluster exclude each other",
            ));
        }
        let listener = crate::transport::bind(addr).await?;
        let cluster = match &self.cluster {
            Some(config) => Some(cluster::join(config, listener.local_addr()?).await?),
            None => None,
        };
        let custom_store = self.store.is_some() || cluster.is_some();
        let store: Arc<dyn Store> = match (self.store, &cluster, &data_dir) {
            (Some(store), ..) => store,
            (None, Some(cluster), _) => cluster.store.clone(),
            (None, None, Some(dir)) => Arc::new(SledStore::open(dir.join("store"))?),
            (None, None, None) => Arc::new(MemoryStore::new()),
        };
        match &cluster {
            Some(cluster) => say(&format!("data in PostgreSQL (cluster node {})", cluster.node.id)),
            None => say_where_data_lives(data_dir.as_deref(), custom_store),
        }
        let commits = Arc::new(GroupCommit::start(store, limits.storage_timeout));
        let databases = match &cluster {
            // An agent's SQL database moves between nodes with it: its image is in PostgreSQL.
            Some(cluster) => Databases::in_store(limits.sql, cluster.store.clone()),
            None => Databases::new(data_dir.as_ref().map(|dir| dir.join("sql")), limits.sql),
        };
        let env = Env::from_map(self.env);
        let directory =
            Arc::new(Directory::new(classes, env, limits, commits, Arc::new(databases), cluster));
        let links =
            directory.cluster.as_ref().map(|cluster| cluster::hear_links(cluster, &directory));
        let edge = Arc::new(Edge::new(directory, assets));
        let running = Arc::new(Running { edge, data_dir, _links: links });
        Ok(Server { listener, running })
    }
}

/// A bound server. Start it with [`run`](Self::run) or [`run_until`](Self::run_until).
///
/// ```no_run
/// # async fn main_() -> agents_runtime::Result<()> {
/// let server = agents_runtime::Server::builder().bind("127.0.0.1:8787").await?;
/// println!("listening on {}", server.local_addr());
/// server.run().await?;
/// # Ok(()) }
/// ```
pub struct Server {
    listener: TcpListener,
    running: Arc<Running>,
}

impl Server {
    /// A builder hosting every `#[agent]` in the binary, with default limits.
    pub fn builder() -> ServerBuilder {
        ServerBuilder {
            classes: Vec::new(),
            env: HashMap::new(),
            limits: Limits::default(),
            data: Data::Default,
            store: None,
            assets: Vec::new(),
            cluster: None,
        }
    }

    /// The address the server listens on (the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound TCP listener has an address")
    }

    /// The route names of the hosted agents, sorted.
    pub fn agents(&self) -> Vec<&'static str> {
        let mut names: Vec<_> = self.running.directory().classes.keys().copied().collect();
        names.sort_unstable();
        names
    }

    /// A handle for observing the server while it runs.
    pub fn handle(&self) -> ServerHandle {
        ServerHandle { running: self.running.clone() }
    }

    /// Serves until the process ends.
    pub async fn run(self) -> Result<(), Error> {
        self.run_until(std::future::pending()).await
    }

    /// Serves until `shutdown` completes, then shuts down gracefully: stops accepting, closes
    /// every WebSocket with 1001 (`on_close` runs), lets the instances finish what is queued,
    /// and flushes the store. Each step waits at most the close timeout plus a second.
    ///
    /// [`shutdown_signal`](crate::shutdown_signal) is the usual `shutdown`: Ctrl-C or SIGTERM.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), Error> {
        let watchdog = tokio::spawn(self.running.directory().clone().restart_after_losses());
        let fence = self.running.directory().cluster.clone().map(|cluster| {
            tokio::spawn(cluster::fence_on_lapse(cluster, self.running.directory().clone()))
        });
        let alarms =
            tokio::spawn(crate::instance::alarm_clock::run(self.running.directory().clone()));
        let served =
            crate::transport::serve(self.listener, self.running.edge.clone(), shutdown).await;
        watchdog.abort();
        alarms.abort();
        if let Some(fence) = fence {
            fence.abort();
        }
        // Even if accepting failed, the open sockets close cleanly and the store is flushed.
        self.running.shut_down().await;
        Ok(served?)
    }
}

/// Observes a running server (for tests and metrics).
#[derive(Clone)]
pub struct ServerHandle {
    running: Arc<Running>,
}

impl ServerHandle {
    /// How many WebSockets are open now.
    pub fn open_connections(&self) -> usize {
        self.running.edge.sockets.open()
    }

    /// The bytes unfinished WebSocket messages hold now, counted against
    /// [`max_unfinished_input`](ServerBuilder::max_unfinished_input).
    pub fn unfinished_input(&self) -> usize {
        self.running.edge.input.held()
    }

    /// How many agent instances are in memory now: started and not hibernated.
    pub fn live_instances(&self) -> usize {
        self.running.directory().awake_instances.load(Ordering::Acquire)
    }

    /// How many agent instances are hibernated: their struct is out of memory while their
    /// connections stay open.
    pub fn hibernated_instances(&self) -> usize {
        self.running.directory().hibernated_instances.load(Ordering::Acquire)
    }

    /// How many WebSockets are parked: open, idle, and held for a hibernated instance without
    /// a task of their own (see the book's hibernation chapter).
    pub fn parked_connections(&self) -> usize {
        self.running.edge.sockets.parked.load(Ordering::Acquire)
    }

    /// A handle on an agent instance of this server, for typed in-process calls from outside
    /// any agent (a test, an admin task):
    /// `CounterClient::new(handle.get_agent_by_name::<Counter>("room")?)`.
    pub fn get_agent_by_name<B: Agent>(&self, name: &str) -> Result<AgentStub, Error> {
        AgentStub::new(self.running.directory().clone(), B::NAME, name)
    }

    /// How the store's group commit has gone so far: writes made durable, the flushes that
    /// did it, and the largest batch one flush covered.
    pub fn storage_stats(&self) -> crate::storage::StorageStats {
        self.running.directory().commits.stats()
    }

    /// The data directory (`None` when the server keeps its data in memory).
    pub fn data_dir(&self) -> Option<&std::path::Path> {
        self.running.data_dir.as_deref()
    }
}

/// Says where the server keeps its data, once per server: in the log, and on stderr as well
/// when the program set up no tracing subscriber (a first server prints nothing else, and must
/// not leave its user guessing whether data survives a restart).
fn say_where_data_lives(dir: Option<&std::path::Path>, custom_store: bool) {
    let line = match (dir, custom_store) {
        (Some(dir), false) => {
            let shown = std::path::absolute(dir).unwrap_or_else(|_| dir.to_owned());
            format!("data in {} (state, storage and SQL survive restarts)", shown.display())
        }
        (Some(dir), true) => {
            let shown = std::path::absolute(dir).unwrap_or_else(|_| dir.to_owned());
            format!(
                "state and storage in the configured store; SQL in {}",
                shown.join("sql").display()
            )
        }
        (None, false) => "data in memory only: it is lost when the process ends".to_owned(),
        (None, true) => "state and storage in the configured store; SQL in memory only".to_owned(),
    };
    say(&line);
}

/// Says `line` in the log, and on stderr as well when no tracing subscriber is set.
fn say(line: &str) {
    tracing::info!("{line}");
    if !tracing::dispatcher::has_been_set() {
        eprintln!("agents-rs: {line}");
    }
}

/// Resolves on Ctrl-C, or SIGTERM on Unix: the usual argument of
/// [`Server::run_until`](Server::run_until).
///
/// On Unix the signal handlers are installed when this is called, not when the future is
/// first polled, so call it (inside a tokio runtime) before binding the server: a SIGTERM that
/// comes once clients can connect then shuts the server down gracefully instead of killing
/// the process with its sockets open.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let (interrupt, terminate) = {
        use tokio::signal::unix::{SignalKind, signal};
        (received(signal(SignalKind::interrupt())), received(signal(SignalKind::terminate())))
    };
    #[cfg(not(unix))]
    let (interrupt, terminate) = (
        async {
            let _ = tokio::signal::ctrl_c().await;
        },
        std::future::pending::<()>(),
    );
    async move {
        tokio::select! {
            () = interrupt => {}
            () = terminate => {}
        }
        tracing::info!("shutting down");
    }
}

/// Resolves once `signal` (a handler already installed) is received; never, if it could not
/// be installed.
#[cfg(unix)]
async fn received(signal: std::io::Result<tokio::signal::unix::Signal>) {
    match signal {
        Ok(mut signal) => {
            signal.recv().await;
        }
        Err(_) => std::future::pending().await,
    }
}
