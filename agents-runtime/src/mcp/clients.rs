//! An instance's MCP servers in memory: the table its connection tasks and its turns share,
//! the `cf_agent_mcp_servers` frame built from it (once per change), and the owner that stops
//! the connections when the instance leaves memory.

use std::sync::{Arc, Mutex};

use rmcp::RoleClient;
use rmcp::service::Peer;
use serde_json::Value;
use tokio::sync::Notify;
use tokio::task::AbortHandle;

use super::stored::{self, StoredServer};
use super::{McpConnectionState, McpServer, McpServersState, connection};
use crate::instance::event::Event;
use crate::instance::shared::Instance;
use crate::message::Message;
use crate::sync::lock;
use crate::wire::protocol;

/// The longest error text a client is shown, in characters (as the SDK).
const MAX_ERROR_CHARS: usize = 500;

/// An instance's MCP servers: `None` until it has some. It moves with the instance's
/// connections while it hibernates, so the connections to the servers stay; dropped when the
/// instance leaves memory, which stops them.
#[derive(Default)]
pub(crate) struct McpClients {
    shared: Option<Arc<Shared>>,
    /// Whether the list was read from storage (on the instance's first start).
    loaded: bool,
}

impl McpClients {
    /// The instance starts: on its first start it connects to the servers on its list; when
    /// it wakes, it tries again the ones that failed (as the SDK does on every start).
    pub(crate) fn start(&mut self, instance: &Arc<Instance>) {
        if let Some(shared) = &self.shared {
            shared.retry_failed();
            return;
        }
        if self.loaded {
            return;
        }
        match stored::load(instance) {
            Ok(servers) => {
                self.loaded = true;
                for server in servers {
                    self.shared(instance).insert(server);
                }
            }
            Err(e) => tracing::error!(
                name = %instance.name,
                "the MCP servers cannot be read; the next start tries again: {e}"
            ),
        }
    }

    /// The table, made on first use.
    pub(crate) fn shared(&mut self, instance: &Arc<Instance>) -> &Arc<Shared> {
        self.loaded = true;
        self.shared.get_or_insert_with(|| Arc::new(Shared::new(instance.clone())))
    }

    /// The table, if the instance has MCP servers (or had).
    pub(crate) fn get(&self) -> Option<&Arc<Shared>> {
        self.shared.as_ref()
    }

    /// The `cf_agent_mcp_servers` frame a new connection gets.
    pub(crate) fn frame(&self) -> Message {
        match &self.shared {
            Some(shared) => shared.frame(),
            None => protocol::mcp_servers(),
        }
    }

    /// The frame to broadcast, if the servers changed since the last one.
    pub(crate) fn take_broadcast(&self) -> Option<Message> {
        self.shared.as_ref()?.take_broadcast()
    }
}

impl Drop for McpClients {
    fn drop(&mut self) {
        if let Some(shared) = &self.shared {
            shared.close_all();
        }
    }
}

/// The table of servers, shared by the instance and its connection tasks.
pub(crate) struct Shared {
    pub(crate) instance: Arc<Instance>,
    table: Mutex<Table>,
    /// Told of every change, for the calls that wait for a server to be ready.
    pub(crate) changed: Notify,
}

#[derive(Default)]
struct Table {
    servers: Vec<Entry>,
    /// The frame of the table as it is, once built.
    frame: Option<Message>,
    /// A change is not broadcast yet.
    due: bool,
    /// An event is on its way to the instance's mailbox for it.
    nudged: bool,
    /// Numbers the connections made, so a stopped one's late news is ignored.
    next_generation: u64,
}

struct Entry {
    stored: StoredServer,
    live: Live,
    generation: u64,
    task: Option<AbortHandle>,
}

/// What a server's connection knows.
pub(crate) struct Live {
    pub(crate) state: McpConnectionState,
    pub(crate) error: Option<String>,
    pub(crate) instructions: Option<String>,
    pub(crate) capabilities: Option<Value>,
    /// Tools, prompts and resources as listed, each with `serverId`.
    pub(crate) tools: Vec<Value>,
    pub(crate) prompts: Vec<Value>,
    pub(crate) resources: Vec<Value>,
    /// The session, once ready.
    pub(crate) peer: Option<Peer<RoleClient>>,
}

impl Live {
    fn new() -> Self {
        Self {
            state: McpConnectionState::Connecting,
            error: None,
            instructions: None,
            capabilities: None,
            tools: Vec::new(),
            prompts: Vec::new(),
            resources: Vec::new(),
            peer: None,
        }
    }

    /// The connection failed or was lost, for `why`.
    pub(crate) fn fail(&mut self, why: String) {
        *self = Self { state: McpConnectionState::Failed, error: Some(why), ..Self::new() };
    }
}

/// One server as a turn sees it.
pub(crate) struct Snapshot {
    pub(crate) name: String,
    pub(crate) state: McpConnectionState,
    pub(crate) error: Option<String>,
    pub(crate) tools: Vec<Value>,
    pub(crate) peer: Option<Peer<RoleClient>>,
}

impl Shared {
    fn new(instance: Arc<Instance>) -> Self {
        Self { instance, table: Mutex::new(Table::default()), changed: Notify::new() }
    }

    /// Adds `server` to the table and starts its connection.
    pub(crate) fn insert(self: &Arc<Self>, server: StoredServer) {
        let mut table = lock(&self.table);
        let generation = table.next_generation;
        table.next_generation += 1;
        let task = connection::spawn(self.clone(), server.clone(), generation);
        table.servers.push(Entry {
            stored: server,
            live: Live::new(),
            generation,
            task: Some(task),
        });
        table.changed();
    }

    /// Removes server `id` and stops its connection; `false` if there is none.
    pub(crate) fn remove(&self, id: &str) -> bool {
        let mut table = lock(&self.table);
        let Some(at) = table.servers.iter().position(|entry| entry.stored.id == id) else {
            return false;
        };
        let entry = table.servers.remove(at);
        if let Some(task) = entry.task {
            task.abort();
        }
        table.changed();
        drop(table);
        self.changed.notify_waiters();
        true
    }

    /// Connects again to the servers whose connection failed.
    fn retry_failed(self: &Arc<Self>) {
        let mut table = lock(&self.table);
        let mut retried = false;
        for at in 0..table.servers.len() {
            if table.servers[at].live.state != McpConnectionState::Failed {
                continue;
            }
            let generation = table.next_generation;
            table.next_generation += 1;
            let entry = &mut table.servers[at];
            entry.generation = generation;
            entry.live = Live::new();
            entry.task = Some(connection::spawn(self.clone(), entry.stored.clone(), generation));
            retried = true;
        }
        if retried {
            table.changed();
        }
    }

    /// Stops every connection (the instance leaves memory).
    fn close_all(&self) {
        for entry in &mut lock(&self.table).servers {
            if let Some(task) = entry.task.take() {
                task.abort();
            }
        }
    }

    /// A connection's news: `update` is applied if connection `generation` of server `id` is
    /// still the current one. Returns whether it was.
    pub(crate) fn update(&self, id: &str, generation: u64, update: impl FnOnce(&mut Live)) -> bool {
        let mut table = lock(&self.table);
        let Some(entry) =
            table.servers.iter_mut().find(|e| e.stored.id == id && e.generation == generation)
        else {
            return false;
        };
        update(&mut entry.live);
        table.changed();
        true
    }

    /// After [`update`](Self::update) from a connection task: waiters are told, and the
    /// instance gets an event to broadcast the change (one on its way at a time).
    pub(crate) async fn tell(&self) {
        self.changed.notify_waiters();
        let nudge = !std::mem::replace(&mut lock(&self.table).nudged, true);
        if nudge {
            let _ = self.instance.mailbox.send(&self.instance, Event::McpChanged).await;
        }
    }

    /// Server `id` as it is now, if it is on the list.
    pub(crate) fn snapshot(&self, id: &str) -> Option<Snapshot> {
        let table = lock(&self.table);
        let entry = table.servers.iter().find(|entry| entry.stored.id == id)?;
        Some(Snapshot {
            name: entry.stored.name.clone(),
            state: entry.live.state,
            error: entry.live.error.clone(),
            tools: entry.live.tools.clone(),
            peer: entry.live.peer.clone(),
        })
    }

    /// How many servers are on the list, and whether one named `name` at `url` is.
    pub(crate) fn find(
        &self,
        name: &str,
        url: &str,
    ) -> (usize, Option<(String, McpConnectionState)>) {
        let table = lock(&self.table);
        let found = table
            .servers
            .iter()
            .find(|e| e.stored.name == name && e.stored.server_url == url)
            .map(|e| (e.stored.id.clone(), e.live.state));
        (table.servers.len(), found)
    }

    /// Whether a connection is under way.
    pub(crate) fn any_pending(&self) -> bool {
        lock(&self.table).servers.iter().any(|entry| entry.live.state.is_pending())
    }

    /// The servers and what they offer (`getMcpServers()`).
    pub(crate) fn state(&self) -> McpServersState {
        lock(&self.table).state()
    }

    fn frame(&self) -> Message {
        let mut table = lock(&self.table);
        if let Some(frame) = &table.frame {
            return frame.clone();
        }
        let frame = protocol::mcp_servers_of(&table.state()).expect("the MCP state serializes");
        table.frame = Some(frame.clone());
        frame
    }

    fn take_broadcast(&self) -> Option<Message> {
        {
            let mut table = lock(&self.table);
            if !std::mem::take(&mut table.due) {
                return None;
            }
            table.nudged = false;
        }
        Some(self.frame())
    }
}

impl Table {
    fn changed(&mut self) {
        self.frame = None;
        self.due = true;
    }

    fn state(&self) -> McpServersState {
        let mut state = McpServersState::default();
        for Entry { stored, live, .. } in &self.servers {
            let server = McpServer {
                name: stored.name.clone(),
                server_url: stored.server_url.clone(),
                auth_url: None,
                state: live.state,
                error: live.error.as_deref().map(sanitize),
                instructions: live.instructions.clone(),
                capabilities: live.capabilities.clone(),
            };
            state.servers.insert(stored.id.clone(), server);
            state.tools.extend(live.tools.iter().cloned());
            state.prompts.extend(live.prompts.iter().cloned());
            state.resources.extend(live.resources.iter().cloned());
        }
        state
    }
}

/// An error as clients are shown it: control characters removed, at most 500 characters.
fn sanitize(error: &str) -> String {
    let kept = |c: &char| !c.is_control() || matches!(c, '\t' | '\n' | '\r');
    let mut text: String = error.chars().filter(kept).take(MAX_ERROR_CHARS + 1).collect();
    if text.chars().count() > MAX_ERROR_CHARS {
        text = text.chars().take(MAX_ERROR_CHARS).collect();
        text.push_str("...");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::sanitize;

    #[test]
    fn errors_are_shown_without_control_characters_and_clipped() {
        assert_eq!(sanitize("a\u{0}b\u{7}c\nd"), "abc\nd");
        let long = "é".repeat(600);
        let shown = sanitize(&long);
        assert_eq!(shown.chars().count(), 503);
        assert!(shown.ends_with("..."));
        assert_eq!(sanitize(&"x".repeat(500)), "x".repeat(500));
    }
}
