//! [`Context`]: what a hook can reach besides `self` (the agent's `this` properties and methods).

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use crate::agent::stub::AgentStub;
use crate::agent::{Agent, StatefulAgent};
use crate::env::Env;
use crate::error::{ConnectionError, Error, Result};
use crate::instance::auto_response::WebSocketRequestResponsePair;
use crate::instance::connection::Connection;
use crate::instance::connections::{ConnectionTable, Connections};
use crate::instance::directory::Directory;
use crate::instance::log_budget::LogBudget;
use crate::instance::shared::Instance;
use crate::instance::state::StateSource;
use crate::mcp::{McpClientManager, McpClients};
use crate::message::Message;
use crate::sql::{Sql, SqlSession};
use crate::storage::timers::Timers;
use crate::storage::{FORMAT_VERSION, Storage, decode_value};
use crate::wire::protocol;

/// The instance's context, passed to every hook as `ctx`.
///
/// It gives what the docs reach through `this`: the instance [`name`](Self::name), the
/// [`env`](Self::env), [`broadcast`](Self::broadcast), [`get_connections`](Self::get_connections)
/// and [`get_connection`](Self::get_connection).
///
/// ```no_run
/// use agents_runtime::prelude::*;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Clone, Default, Serialize, Deserialize)]
/// struct Score {
///     points: u64,
/// }
///
/// #[derive(Default)]
/// struct Game;
///
/// #[agent(state = Score)]
/// impl Game {
///     fn on_message(&mut self, ctx: &mut Context<Self>, conn: &Connection, message: Message) -> Result<()> {
///         // `this.state` and `this.setState`: synced to every client, kept on disk.
///         let points = ctx.state().points + 1;
///         ctx.set_state(Score { points })?;
///         // `this.broadcast`: everyone in this instance but the sender.
///         ctx.broadcast(format!("{} scored in {}", conn.id(), ctx.name()), &[conn.id()]);
///         let _ = message;
///         Ok(())
///     }
/// }
/// ```
pub struct Context<A: Agent> {
    name: Arc<str>,
    env: Env,
    directory: Arc<Directory>,
    instance: Arc<Instance>,
    connections: ConnectionTable<A::ConnectionState>,
    state: Arc<A::State>,
    /// The current state's `cf_agent_state` frame, built once per change and shared by every
    /// broadcast and connect; `None` until first needed.
    state_frame: Option<Message>,
    /// The connection whose event is being handled: a readonly one cannot change the state.
    current: Option<Connection<A::ConnectionState>>,
    /// Accepted state changes whose `on_state_changed` has not run yet.
    changes: Vec<StateChange<A>>,
    /// The instance's SQL database, open from its first statement until the context is
    /// dropped (hibernation).
    sql: SqlSession,
    /// Its MCP servers (`ctx.mcp()`).
    mcp: McpClients,
}

/// What an instance keeps while it is not awake (hibernated, or before it starts): its
/// connections, and its MCP servers with their sessions.
#[derive(Default)]
pub(crate) struct Kept<S> {
    pub(crate) connections: ConnectionTable<S>,
    pub(crate) mcp: McpClients,
}

/// An accepted state change, for `on_state_changed` once the current turn's hook is done.
pub(crate) struct StateChange<A: Agent> {
    pub(crate) state: Arc<A::State>,
    pub(crate) source: Option<Connection<A::ConnectionState>>,
}

impl<A: Agent> Context<A> {
    /// The context of an instance waking with `state` and the `connections` it kept.
    pub(crate) fn new(
        directory: Arc<Directory>,
        instance: Arc<Instance>,
        state: A::State,
        kept: Kept<A::ConnectionState>,
    ) -> Self {
        let Kept { connections, mcp } = kept;
        let sql = SqlSession::new(directory.databases.clone(), A::NAME, instance.name.clone());
        Self {
            sql,
            name: instance.name.clone(),
            env: directory.env.clone(),
            directory,
            instance,
            connections,
            state: Arc::new(state),
            state_frame: None,
            current: None,
            changes: Vec::new(),
            mcp,
        }
    }

    /// The instance leaves memory (hibernation, or a failed `on_start`): its connections stay,
    /// and so do its MCP servers' sessions.
    pub(crate) fn into_kept(self) -> Kept<A::ConnectionState> {
        Kept { connections: self.connections, mcp: self.mcp }
    }

    /// The instance's MCP client manager (`this.mcp`, `this.addMcpServer`,
    /// `this.getMcpServers`): connect to remote MCP servers and use their tools, prompts and
    /// resources. See the book's MCP chapter.
    pub fn mcp(&mut self) -> McpClientManager<'_> {
        McpClientManager::new(&mut self.mcp, &self.directory, &self.instance)
    }

    /// The MCP servers, as the host broadcasts them.
    pub(crate) fn mcp_clients(&self) -> &McpClients {
        &self.mcp
    }

    /// A turn starts for an event of `conn` (`None`: not a connection's event).
    pub(crate) fn begin_turn(&mut self, conn: Option<Connection<A::ConnectionState>>) {
        self.current = conn;
        self.sql.hook_started();
    }

    /// A hook starts that is not the turn's first (`on_state_changed`, `on_error`): if it
    /// fails, only its SQL statements are rolled back.
    pub(crate) fn hook_started(&self) {
        self.sql.hook_started();
    }

    /// The hook under way failed: its SQL statements are rolled back.
    pub(crate) fn hook_failed(&self) {
        self.sql.hook_failed(&self.instance.gate);
    }

    /// The turn is over: its SQL statements are committed, in the output gate's next flush.
    pub(crate) fn commit_turn(&self) {
        self.sql.end_turn(&self.instance.gate);
    }

    /// The turn's hook is done: its state changes, for `on_state_changed`.
    pub(crate) fn end_turn(&mut self) -> Vec<StateChange<A>> {
        self.current = None;
        std::mem::take(&mut self.changes)
    }

    /// The state changes made since the last call (by `on_state_changed` hooks).
    pub(crate) fn take_changes(&mut self) -> Vec<StateChange<A>> {
        std::mem::take(&mut self.changes)
    }

    /// The instance's own SQLite database (`this.sql`; `ctx.storage.sql` in Durable Objects).
    ///
    /// `ctx.sql().exec("SELECT value FROM cache WHERE key = ?", (key,))?.one_or_none()?`
    /// reads a row; [`sql!`](crate::sql!)`(ctx, "… WHERE key = {key}")` does the same with
    /// the value written in place, still bound as a parameter.
    ///
    /// The statements of a turn are one transaction, committed when the turn ends (and rolled
    /// back, a hook's own, if that hook fails); frames sent after a write wait until the
    /// commit is durable, as for [`storage`](Self::storage). See the book's SQL chapter.
    pub fn sql(&mut self) -> Sql<'_> {
        Sql::new(&mut self.sql, &self.instance.gate)
    }

    /// The instance's alarm, schedules and queue in the store.
    pub(crate) fn timers(&self) -> Timers<'_> {
        let instance = &*self.instance;
        Timers::new(&instance.gate, &instance.keys, &instance.alarm)
    }

    /// What the instance shares with its connections.
    pub(crate) fn instance(&self) -> &Arc<Instance> {
        &self.instance
    }

    /// The instance's allowance of log lines about client-caused errors.
    pub(crate) fn log_budget(&self) -> &LogBudget {
        &self.instance.log_budget
    }

    /// The live connections, as the host reads and changes them.
    pub(crate) fn connections(&self) -> &ConnectionTable<A::ConnectionState> {
        &self.connections
    }

    pub(crate) fn connections_mut(&mut self) -> &mut ConnectionTable<A::ConnectionState> {
        &mut self.connections
    }

    /// The agent state (`this.state`), of the type declared with `#[agent(state = T)]`.
    pub fn state(&self) -> &A::State
    where
        A: StatefulAgent,
    {
        &self.state
    }

    /// Replaces the agent state (`this.setState(state)`): checks it with
    /// `validate_state_change`, then sends it to every protocol-enabled connection (the caller
    /// included), then `on_state_changed` runs once the current hook is done.
    ///
    /// Fails with `Connection is readonly` while handling an event of a readonly connection
    /// (a callable it called, say), and with the validator's error if it refuses.
    pub fn set_state(&mut self, next: A::State) -> Result<()>
    where
        A: StatefulAgent,
    {
        if self.current.as_ref().is_some_and(Connection::is_readonly) {
            return Err(Error::msg(protocol::READONLY));
        }
        A::validate_state_change(self, &next, StateSource::Server)?;
        self.commit_state(next, None, None)
    }

    /// A client's `cf_agent_state` frame; the error is what the client is told.
    pub(crate) fn apply_client_state(
        &mut self,
        conn: &Connection<A::ConnectionState>,
        next: serde_json::Value,
    ) -> std::result::Result<(), &'static str> {
        if conn.is_readonly() {
            return Err(protocol::READONLY);
        }
        let name = self.name.clone();
        let rejected = move |why: &dyn std::fmt::Display| {
            tracing::error!(agent = A::NAME, name = %name, connection = conn.id(), "State update rejected: {why}");
            protocol::STATE_REJECTED
        };
        let sent = next.clone();
        let next: A::State = serde_json::from_value(next).map_err(|e| rejected(&e))?;
        A::validate_state_change(self, &next, StateSource::Connection(conn))
            .map_err(|e| rejected(&e))?;
        // A state that does not read back as the client sent it (fields the type does not
        // have, values it normalises) goes to the sender too: every client holds the same.
        let as_sent = serde_json::to_value(&next).is_ok_and(|value| value == sent);
        let echo = if as_sent { None } else { Some(conn) };
        self.commit_state(next, Some(conn.clone()), echo).map_err(|e| rejected(&e))
    }

    /// Stores an accepted state, broadcasts it (serialized once, for the store and the frame)
    /// and queues `on_state_changed`. The broadcast waits in the outboxes until the write is
    /// durable (the output gate). The connection the change came from does not get it back,
    /// unless it is `echo`.
    fn commit_state(
        &mut self,
        next: A::State,
        source: Option<Connection<A::ConnectionState>>,
        echo: Option<&Connection<A::ConnectionState>>,
    ) -> Result<()> {
        let mut stored = vec![FORMAT_VERSION];
        serde_json::to_writer(&mut stored, &next)?;
        let json = std::str::from_utf8(&stored[1..]).expect("serde_json writes UTF-8");
        let frame = protocol::state_from_json(json);
        if A::HAS_STATE {
            let gate = &self.instance.gate;
            gate.may_write()?;
            gate.wrote(gate.store().put(&self.instance.keys.state(), &stored))?;
        }
        self.state = Arc::new(next);
        self.state_frame = Some(frame.clone());
        // A change a client made is not echoed to that client (by id, as the Cloudflare runtime does).
        let without = source.as_ref().filter(|_| echo.is_none()).map(Connection::id);
        if A::HAS_STATE {
            self.connections.broadcast_protocol(&frame, without);
        }
        self.changes.push(StateChange { state: self.state.clone(), source });
        Ok(())
    }

    /// A handle on another agent instance of this server (`getAgentByName`); wrap it in the
    /// agent's generated client for typed calls:
    /// `CounterClient::new(ctx.get_agent_by_name::<Counter>("room")?)`.
    ///
    /// The call waits for the target's turn, so it holds up this instance meanwhile; an
    /// instance cannot call itself this way.
    pub fn get_agent_by_name<B: Agent>(&self, name: &str) -> Result<AgentStub> {
        if B::NAME == A::NAME && name == &*self.name {
            return Err(Error::msg(format!(
                "{}/{name} cannot call itself through a stub: call the method directly",
                A::NAME
            )));
        }
        AgentStub::new(self.directory.clone(), B::NAME, name)
    }

    /// The current state's frame, serialized on first use after a change.
    pub(crate) fn state_frame(&mut self) -> serde_json::Result<Message> {
        if let Some(frame) = &self.state_frame {
            return Ok(frame.clone());
        }
        let frame = protocol::state(&*self.state)?;
        self.state_frame = Some(frame.clone());
        Ok(frame)
    }

    /// Makes a connection readonly or writable again (`setConnectionReadonly`).
    pub fn set_connection_readonly(&self, conn: &Connection<A::ConnectionState>, readonly: bool) {
        conn.set_readonly(readonly);
    }

    /// Whether a connection is readonly (`isConnectionReadonly`).
    pub fn is_connection_readonly(&self, conn: &Connection<A::ConnectionState>) -> bool {
        conn.is_readonly()
    }

    /// Whether a connection gets protocol frames (`isConnectionProtocolEnabled`).
    pub fn is_connection_protocol_enabled(&self, conn: &Connection<A::ConnectionState>) -> bool {
        conn.is_protocol_enabled()
    }

    /// The instance's key-value storage (`this.ctx.storage`): data that survives hibernation
    /// and restarts, for `on_start` to rebuild in-memory fields from.
    pub fn storage(&self) -> Storage<'_> {
        Storage::new(&self.instance.gate, &self.instance.keys, &self.instance.alarm)
    }

    /// Sets (or with `None`, removes) the request text the runtime answers by itself on every
    /// connection of this instance, without waking it (`setWebSocketAutoResponse`). The pair
    /// lasts while the instance has connections, hibernation included; set it in `on_start`.
    pub fn set_websocket_auto_response(&self, pair: Option<WebSocketRequestResponsePair>) {
        self.instance.auto_response.set(pair);
    }

    /// The auto-response pair, if one is set (`getWebSocketAutoResponse`).
    pub fn get_websocket_auto_response(&self) -> Option<WebSocketRequestResponsePair> {
        self.instance.auto_response.get()
    }

    /// When the auto-response last answered `conn`, if ever
    /// (`getWebSocketAutoResponseTimestamp`). Kept after the pair is removed.
    pub fn get_websocket_auto_response_timestamp(
        &self,
        conn: &Connection<A::ConnectionState>,
    ) -> Option<SystemTime> {
        conn.auto_response_timestamp()
    }

    /// The instance name (`this.name`): the raw `{name}` path segment it is addressed by.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn name_arc(&self) -> &Arc<str> {
        &self.name
    }

    /// The agent's route name (`/agents/{agent}/...`), e.g. `chat-room`.
    pub fn agent(&self) -> &'static str {
        A::NAME
    }

    /// The shared resources given to the server builder (`this.env`).
    pub fn env(&self) -> &Env {
        &self.env
    }

    /// Sends `message` to every open connection whose id is not in `without`
    /// (`this.broadcast(message, without)`), and returns how many it was queued for.
    ///
    /// The message is built once; every outbox shares its bytes.
    pub fn broadcast(&self, message: impl Into<Message>, without: &[&str]) -> usize {
        self.connections.broadcast(&message.into(), without)
    }

    /// Open connections, all of them (`None`) or those with a tag (`Some("admin")`)
    /// (`this.getConnections(tag?)`). Connections that are closing are left out.
    pub fn get_connections(&self, tag: Option<&str>) -> Connections<'_, A::ConnectionState> {
        self.connections.iter(tag)
    }

    /// The connection with this id (`this.getConnection(id)`).
    ///
    /// Ids come from the client's `_pk`, so two live sockets can share one; that case is an
    /// error ([`ConnectionError::DuplicateId`]) as on Cloudflare, not a silent pick.
    pub fn get_connection(
        &self,
        id: &str,
    ) -> Result<Option<&Connection<A::ConnectionState>>, ConnectionError> {
        let mut found = self.connections.iter(Some(id)).filter(|conn| conn.id() == id);
        let first = found.next();
        if found.next().is_some() {
            return Err(ConnectionError::DuplicateId(id.to_owned()));
        }
        Ok(first)
    }
}

/// The state stored for an instance, or the initial state when there is none. A stored state
/// that does not decode is logged and replaced by the initial state, as on Cloudflare;
/// a store that cannot be read is an error (guessing could overwrite good data later).
pub(crate) fn load_state<A: Agent>(instance: &Instance, name: &str) -> Result<A::State> {
    if !A::HAS_STATE {
        return Ok(A::initial_state());
    }
    let Some(stored) = instance.gate.store().get(&instance.keys.state())? else {
        return Ok(A::initial_state());
    };
    // A format this build does not know (written by a newer release) is not overwritten.
    let json = decode_value(&stored)?;
    match serde_json::from_slice(json) {
        Ok(state) => Ok(state),
        Err(e) => {
            tracing::error!(
                agent = A::NAME,
                name,
                "the stored state cannot be decoded; starting from the initial state: {e}"
            );
            Ok(A::initial_state())
        }
    }
}

impl<A: Agent> fmt::Debug for Context<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("agent", &A::NAME)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}
