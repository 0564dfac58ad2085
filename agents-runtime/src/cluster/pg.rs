//! [`Pg`]: a pool of PostgreSQL connections driven by a runtime of their own, usable from async
//! code ([`Pg::run`]) and from the synchronous [`Store`](crate::storage::Store) calls
//! ([`Pg::block`]).
//!
//! The connections live on a small runtime with one worker thread, not on the server's: lease
//! renewals keep their rhythm while the server's workers are busy, a synchronous store call
//! can wait for a query without a runtime of its own, and the pool outlives no runtime (the
//! runtime ends with the last [`Pg`]).

use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};

use super::error::ClusterError;

/// How long a connection may take to open, and a query to answer, before it is an error.
pub(crate) const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// Which connections a query takes.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Lane {
    /// The pool's.
    Pool,
    /// The lease's own connection, so renewals never wait behind other queries.
    Lease,
}

/// A pool of connections to one PostgreSQL database, on a runtime of its own.
pub(crate) struct Pg {
    pool: Pool,
    /// One connection of its own for lease renewals, so they never wait behind other queries.
    lease: Pool,
    runtime: RuntimeThread,
}

impl Pg {
    /// Connections to `url` (`postgres://USER[:PASSWORD]@HOST[:PORT]/DB`), at most `max` at once.
    /// Nothing is opened yet: the first query opens the first connection.
    pub(crate) fn new(url: &str, max: usize) -> Result<Arc<Self>, ClusterError> {
        let mut config = tokio_postgres::Config::from_str(url)
            .map_err(|e| ClusterError::new(format!("the cluster URL is not valid: {e}")))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(QUERY_TIMEOUT);
        }
        config.application_name("agents-rs");
        config.keepalives_idle(Duration::from_secs(10));
        let runtime = RuntimeThread::start()?;
        let pool = new_pool(config.clone(), max)?;
        let lease = new_pool(config, 1)?;
        Ok(Arc::new(Self { pool, lease, runtime }))
    }

    /// Runs `work` with a pooled connection on the connections' runtime, and waits for it.
    /// The whole of `work` must end within `timeout`, or it is an error.
    pub(crate) async fn run<T, F, Fut>(
        &self,
        doing: &'static str,
        timeout: Duration,
        work: F,
    ) -> Result<T, ClusterError>
    where
        T: Send + 'static,
        F: FnOnce(deadpool_postgres::Object) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, tokio_postgres::Error>> + Send + 'static,
    {
        self.run_on(Lane::Pool, doing, timeout, work).await
    }

    /// [`run`](Self::run) on `lane`: the pool, or the lease's own connection.
    pub(crate) async fn run_on<T, F, Fut>(
        &self,
        lane: Lane,
        doing: &'static str,
        timeout: Duration,
        work: F,
    ) -> Result<T, ClusterError>
    where
        T: Send + 'static,
        F: FnOnce(deadpool_postgres::Object) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, tokio_postgres::Error>> + Send + 'static,
    {
        let pool = match lane {
            Lane::Pool => self.pool.clone(),
            Lane::Lease => self.lease.clone(),
        };
        let task = self.runtime.handle.spawn(Self::with_client(pool, doing, timeout, work));
        task.await.map_err(|e| ClusterError::new(format!("{doing}: the task failed: {e}")))?
    }

    /// [`run`](Self::run) from synchronous code: blocks the calling thread until it ends.
    pub(crate) fn block<T, F, Fut>(
        &self,
        doing: &'static str,
        timeout: Duration,
        work: F,
    ) -> Result<T, ClusterError>
    where
        T: Send + 'static,
        F: FnOnce(deadpool_postgres::Object) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, tokio_postgres::Error>> + Send + 'static,
    {
        let (done, result) = std::sync::mpsc::sync_channel(1);
        let work = Self::with_client(self.pool.clone(), doing, timeout, work);
        self.runtime.handle.spawn(async move {
            let _ = done.send(work.await);
        });
        result.recv().map_err(|_| ClusterError::new(format!("{doing}: the task failed")))?
    }

    /// Spawns `future` on the connections' runtime (a background loop such as lease renewal).
    pub(crate) fn spawn(&self, future: impl Future<Output = ()> + Send + 'static) {
        self.runtime.handle.spawn(future);
    }

    async fn with_client<T, F, Fut>(
        pool: Pool,
        doing: &'static str,
        timeout: Duration,
        work: F,
    ) -> Result<T, ClusterError>
    where
        F: FnOnce(deadpool_postgres::Object) -> Fut,
        Fut: Future<Output = Result<T, tokio_postgres::Error>>,
    {
        let attempt = async {
            let client = pool.get().await.map_err(|e| ClusterError::pool(doing, e))?;
            work(client).await.map_err(|e| ClusterError::postgres(doing, e))
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(result) => result,
            Err(_) => Err(ClusterError::new(format!(
                "{doing}: PostgreSQL did not answer within {} ms",
                timeout.as_millis()
            ))),
        }
    }
}

/// A pool of at most `max` connections made with `config`.
fn new_pool(config: tokio_postgres::Config, max: usize) -> Result<Pool, ClusterError> {
    let manager = Manager::from_config(
        config,
        tokio_postgres::NoTls,
        ManagerConfig { recycling_method: RecyclingMethod::Fast },
    );
    Pool::builder(manager)
        .max_size(max)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .wait_timeout(Some(QUERY_TIMEOUT))
        .create_timeout(Some(QUERY_TIMEOUT))
        .recycle_timeout(Some(QUERY_TIMEOUT))
        .build()
        .map_err(|e| ClusterError::new(format!("cannot build the connection pool: {e}")))
}

/// The connections' runtime, on a thread that ends (and drops it) with this.
struct RuntimeThread {
    handle: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl RuntimeThread {
    fn start() -> Result<Self, ClusterError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| ClusterError::new(format!("cannot start the PostgreSQL runtime: {e}")))?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("agents-postgres".into())
            .spawn(move || {
                runtime.block_on(async {
                    let _ = stopped.await;
                });
                runtime.shutdown_background();
            })
            .map_err(|e| ClusterError::new(format!("cannot start the PostgreSQL thread: {e}")))?;
        Ok(Self { handle, stop: Some(stop) })
    }
}

impl Drop for RuntimeThread {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
