//! An instance's MCP servers in memory: the table its turns and its connection tasks share
//! (behind a `std` mutex, never held across an `.await`), and the `cf_agent_mcp_servers`
//! frame built from it, once per change.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rmcp::RoleClient;
use rmcp::service::Peer;
use serde_json::Value;
use tokio::sync::Notify;
use tokio::task::AbortHandle;

use super::stored::StoredServer;
use super::types::{McpConnectionState, McpServer, McpServersState};
use crate::instance::event::Event;
use crate::instance::mailbox::Refused;
use crate::instance::shared::Instance;
use crate::message::Message;
use crate::sync::lock;
use crate::wire::protocol;

/// The longest error text a client is shown, in characters (as the SDK).
const MAX_ERROR_CHARS: usize = 500;
/// How long a failed server waits before a start of the instance tries it again (an
/// `on_start` that keeps failing starts the instance at every event).
const RETRY_FAILED_AFTER: Duration = Duration::from_secs(5);

/// The table of servers, shared by the instance and its connection tasks.
pub(crate) struct Shared {
    pub(crate) instance: Arc<Instance>,
    /// The server's HTTP client for MCP.
    pub(crate) http: reqwest::Client,
    /// Whether loopback addresses may be reached.
    pub(crate) loopback: bool,
    table: Mutex<Table>,
    /// Told of every change, for the calls that wait for a server to be ready.
    news: Notify,
}

/// Whether the clients have the table as it is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Broadcast {
    /// They have it.
    #[default]
    Done,
    /// A change is not broadcast yet; the end of a turn will.
    Due,
    /// A change is not broadcast yet, and an event is on its way to the instance's mailbox
    /// for it (so no other is sent).
    Asked,
}

#[derive(Default)]
struct Table {
    servers: Vec<Entry>,
    /// The frame of the table as it is, once built.
    frame: Option<Message>,
    broadcast: Broadcast,
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
    /// When it failed, if it did.
    failed_at: Option<tokio::time::Instant>,
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
            failed_at: None,
        }
    }

    /// The connection failed or was lost, for `why`.
    pub(crate) fn fail(&mut self, why: String) {
        let failed_at = Some(tokio::time::Instant::now());
        *self =
            Self { state: McpConnectionState::Failed, error: Some(why), failed_at, ..Self::new() };
    }
}

/// One server as a turn sees it.
pub(crate) struct Snapshot {
    pub(crate) generation: u64,
    pub(crate) name: String,
    pub(crate) state: McpConnectionState,
    pub(crate) error: Option<String>,
    pub(crate) options_match: bool,
    pub(crate) peer: Option<Peer<RoleClient>>,
}

impl Shared {
    pub(crate) fn new(instance: Arc<Instance>, http: reqwest::Client, loopback: bool) -> Self {
        let table = Mutex::new(Table::default());
        Self { instance, http, loopback, table, news: Notify::new() }
    }

    /// Adds `server` to the table, connecting; returns the generation to connect with.
    pub(crate) fn insert(&self, server: StoredServer) -> u64 {
        let mut table = lock(&self.table);
        let generation = table.next_generation();
        table.servers.push(Entry { stored: server, live: Live::new(), generation, task: None });
        table.changed();
        generation
    }

    /// Starts server `id` over (with `stored`, if given): its connection is stopped and it is
    /// connecting again. Returns what to connect to, and the generation to connect with.
    pub(crate) fn renew(
        &self,
        id: &str,
        stored: Option<StoredServer>,
    ) -> Option<(StoredServer, u64)> {
        let mut table = lock(&self.table);
        let generation = table.next_generation();
        let entry = table.servers.iter_mut().find(|entry| entry.stored.id == id)?;
        entry.stop();
        if let Some(stored) = stored {
            entry.stored = stored;
        }
        entry.generation = generation;
        entry.live = Live::new();
        let renewed = (entry.stored.clone(), generation);
        table.changed();
        Some(renewed)
    }

    /// The task of connection `generation` of server `id`, which stops it when the server is
    /// removed or renewed; it is stopped at once if that happened already.
    pub(crate) fn attach(&self, id: &str, generation: u64, task: AbortHandle) {
        let mut table = lock(&self.table);
        match table.current(id, generation) {
            Some(entry) => entry.task = Some(task),
            None => task.abort(),
        }
    }

    /// Removes server `id` and stops its connection; `false` if there is none.
    pub(crate) fn remove(&self, id: &str) -> bool {
        let mut table = lock(&self.table);
        let Some(at) = table.servers.iter().position(|entry| entry.stored.id == id) else {
            return false;
        };
        table.servers.remove(at).stop();
        table.changed();
        drop(table);
        self.news.notify_waiters();
        true
    }

    /// The ids of the servers whose connection failed a while ago (to try again).
    pub(crate) fn failed(&self) -> Vec<String> {
        let table = lock(&self.table);
        let failed = table.servers.iter().filter(|entry| {
            entry.live.failed_at.is_some_and(|at| at.elapsed() >= RETRY_FAILED_AFTER)
        });
        failed.map(|entry| entry.stored.id.clone()).collect()
    }

    /// Whether server `id` is on the list.
    pub(crate) fn contains(&self, id: &str) -> bool {
        lock(&self.table).servers.iter().any(|entry| entry.stored.id == id)
    }

    /// Stops every connection (the instance leaves memory, or restarts from storage).
    pub(crate) fn close_all(&self) {
        lock(&self.table).servers.iter_mut().for_each(Entry::stop);
    }

    /// A connection's news: `update` is applied if connection `generation` of server `id` is
    /// still the current one, and then the instance is told (an event, one on its way at a
    /// time) and so are the calls waiting for the server. Returns whether it applied.
    pub(crate) fn update(&self, id: &str, generation: u64, update: impl FnOnce(&mut Live)) -> bool {
        let mut table = lock(&self.table);
        let Some(entry) = table.current(id, generation) else {
            return false;
        };
        update(&mut entry.live);
        table.changed();
        self.tell(table);
        true
    }

    /// After a change by a connection task: the calls waiting for a server are told, and the
    /// instance gets an event for the broadcast, one on its way at a time. The event is sent
    /// with the table unlocked (waking a hibernated instance may drop one, and with it a
    /// table) and never waited for: a full mailbox has turns queued, and each broadcasts at
    /// its end.
    fn tell(&self, mut table: std::sync::MutexGuard<'_, Table>) {
        let ask = table.broadcast == Broadcast::Due;
        if ask {
            table.broadcast = Broadcast::Asked;
        }
        drop(table);
        self.news.notify_waiters();
        if ask
            && let Err(Refused::Full(_) | Refused::Closed) =
                self.instance.mailbox.try_send(&self.instance, Event::McpChanged)
        {
            let mut table = lock(&self.table);
            if table.broadcast == Broadcast::Asked {
                table.broadcast = Broadcast::Due;
            }
        }
    }

    /// Connection `generation` of server `id` was lost (a request found the server gone): its
    /// session closes and it is `failed`, for `why`; the connection's later news is ignored.
    pub(crate) fn lose(&self, id: &str, generation: u64, why: String) {
        let mut table = lock(&self.table);
        let next = table.next_generation();
        let Some(entry) = table.current(id, generation) else {
            return;
        };
        entry.stop();
        entry.generation = next;
        entry.live.fail(why);
        table.changed();
        self.tell(table);
    }

    /// Waits for the next change (register first with `enable`, then look, then wait).
    pub(crate) fn news(&self) -> tokio::sync::futures::Notified<'_> {
        self.news.notified()
    }

    /// Server `id` as it is now, if it is on the list; `options` (if given) are compared with
    /// its own.
    pub(crate) fn snapshot(&self, id: &str) -> Option<Snapshot> {
        let table = lock(&self.table);
        let entry = table.servers.iter().find(|entry| entry.stored.id == id)?;
        Some(snapshot(entry, None))
    }

    /// The server named `name` at `url`, if one is listed (with whether its options are
    /// `options`), and how many servers there are.
    pub(crate) fn find(
        &self,
        name: &str,
        url: &str,
        options: &super::types::McpServerOptions,
    ) -> (usize, Option<(String, Snapshot)>) {
        let table = lock(&self.table);
        let found = table
            .servers
            .iter()
            .find(|e| e.stored.name == name && e.stored.server_url == url)
            .map(|entry| (entry.stored.id.clone(), snapshot(entry, Some(options))));
        (table.servers.len(), found)
    }

    /// Whether server `id` listed a tool named `name`.
    pub(crate) fn has_tool(&self, id: &str, name: &str) -> bool {
        let table = lock(&self.table);
        let entry = table.servers.iter().find(|entry| entry.stored.id == id);
        entry.is_some_and(|entry| entry.live.tools.iter().any(|tool| tool["name"] == name))
    }

    /// Whether a connection is under way.
    pub(crate) fn any_pending(&self) -> bool {
        lock(&self.table).servers.iter().any(|entry| entry.live.state.is_pending())
    }

    /// The servers and what they offer (`getMcpServers()`).
    pub(crate) fn state(&self) -> McpServersState {
        lock(&self.table).state()
    }

    /// The frame of the table as it is.
    pub(crate) fn frame(&self) -> Message {
        lock(&self.table).frame()
    }

    /// The frame to broadcast, if the table changed since the last one.
    pub(crate) fn take_broadcast(&self) -> Option<Message> {
        let mut table = lock(&self.table);
        if std::mem::take(&mut table.broadcast) == Broadcast::Done {
            return None;
        }
        Some(table.frame())
    }
}

fn snapshot(entry: &Entry, options: Option<&super::types::McpServerOptions>) -> Snapshot {
    Snapshot {
        generation: entry.generation,
        name: entry.stored.name.clone(),
        state: entry.live.state,
        error: entry.live.error.clone(),
        options_match: options.is_none_or(|options| *options == entry.stored.options),
        peer: entry.live.peer.clone(),
    }
}

impl Entry {
    /// Stops its connection's task, if it has one.
    fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl Table {
    /// Server `id`, if connection `generation` is its current one.
    fn current(&mut self, id: &str, generation: u64) -> Option<&mut Entry> {
        self.servers.iter_mut().find(|e| e.stored.id == id && e.generation == generation)
    }

    fn next_generation(&mut self) -> u64 {
        self.next_generation += 1;
        self.next_generation
    }

    fn changed(&mut self) {
        self.frame = None;
        if self.broadcast == Broadcast::Done {
            self.broadcast = Broadcast::Due;
        }
    }

    fn frame(&mut self) -> Message {
        if let Some(frame) = &self.frame {
            return frame.clone();
        }
        let frame = protocol::mcp_servers_of(&self.state()).expect("the MCP state serializes");
        self.frame = Some(frame.clone());
        frame
    }

    fn state(&self) -> McpServersState {
        let mut state = McpServersState::default();
        for Entry { stored, live, .. } in &self.servers {
            let server = McpServer {
                auth_url: None,
                capabilities: live.capabilities.clone(),
                error: live.error.as_deref().map(sanitize),
                instructions: live.instructions.clone(),
                name: stored.name.clone(),
                server_url: stored.server_url.clone(),
                state: live.state,
            };
            state.servers.insert(stored.id.clone(), server);
            state.tools.extend(live.tools.iter().cloned());
            state.prompts.extend(live.prompts.iter().cloned());
            state.resources.extend(live.resources.iter().cloned());
        }
        state
    }
}

/// An error as clients are shown it: control characters removed (tabs and line ends kept),
/// at most 500 characters.
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
