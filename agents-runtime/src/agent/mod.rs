//! The [`Agent`] trait: the lifecycle hooks of a Cloudflare agent, which `#[agent]` implements
//! from an impl block.

pub(crate) mod callback;
pub(crate) mod context;
pub(crate) mod host;
pub(crate) mod queue;
pub(crate) mod schedule;
pub(crate) mod stub;
pub(crate) mod tasks;

use std::future::Future;

use bytes::Bytes;

use crate::agent::callback::{Trigger, unknown_callback};
use crate::agent::context::Context;
use crate::error::{Error, Result};
use crate::instance::connection::Connection;
use crate::instance::log_budget::clip;
use crate::instance::rpc::{Call, CallOutcome, CallableInfo};
use crate::instance::state::StateSource;
use crate::message::Message;
use crate::request::{ConnectionContext, Request, Response};
use crate::storage::AlarmInfo;

/// An agent with a declared state (`#[agent(state = T)]`), which [`Context::state`] and
/// [`Context::set_state`] need: an agent without one has no `this.state` to read or set.
/// `#[agent]` implements it; a hand-written [`Agent`] with a state implements it too.
#[diagnostic::on_unimplemented(
    message = "`{Self}` declares no state, so `ctx.state()` and `ctx.set_state(..)` do not apply",
    label = "needs `#[agent(state = ...)]` on `{Self}`'s impl block",
    note = "declare the state type on the impl block: `#[agent(state = MyState)]` (`Serialize` and \
            `Deserialize`; its `Default`, or an `initial_state` hook, gives the first state)"
)]
pub trait StatefulAgent: Agent {}

/// A class of agents: one live instance per name, events one turn at a time on `&mut self`.
///
/// Normally written with `#[agent]` on an inherent impl block, which implements this trait
/// from the hooks found there: each takes `&mut self`, `ctx: &mut Context<Self>`, then the
/// parameters of the method of the same name below. Every hook is optional. A hook that
/// returns an error reaches [`on_error`](Agent::on_error); the socket stays open and the
/// instance keeps running.
pub trait Agent: Sized + Send + 'static {
    /// The route name: `/agents/{NAME}/{instance}`. `#[agent]` derives it from the type name
    /// with Cloudflare's kebab-case rule (`ChatRoom` → `chat-room`).
    const NAME: &'static str;

    /// The per-connection state type (`Connection<S>`); `()` when the agent keeps none.
    type ConnectionState: serde::Serialize + serde::de::DeserializeOwned + Send + 'static;

    /// The agent state (`this.state`), synced to clients; `()` when the agent keeps none.
    type State: serde::Serialize + serde::de::DeserializeOwned + Send + Sync + 'static;

    /// Whether the agent has a state to sync (`#[agent(state = T)]`). Without one, clients get
    /// no `cf_agent_state` frames.
    const HAS_STATE: bool = false;

    /// Whether an idle instance hibernates: after the server's `hibernate_after` delay without
    /// events, the struct (and the state in memory) is dropped while its connections stay open,
    /// and the next event starts it again (`on_start` included). `#[agent(hibernate = false)]`
    /// keeps it in memory while it has connections (`static options = { hibernate: false }`).
    const HIBERNATE: bool = true;

    /// When writes are acknowledged; see [`Durability`](crate::storage::Durability).
    /// `#[agent(durability = "relaxed")]` lets frames go out before the disk has the write.
    const DURABILITY: crate::storage::Durability = crate::storage::Durability::Confirmed;

    /// The `#[callable]` methods, for clients and tools (`getCallableMethods()`).
    const CALLABLES: &'static [CallableInfo] = &[];

    /// The names of the `#[callback]` methods, which schedules and the queue call.
    const CALLBACKS: &'static [&'static str] = &[];

    /// Builds a fresh instance before `on_start` (`#[agent]` uses `Default`).
    fn create() -> Self;

    /// The state of a new instance (`initialState`); `#[agent]` uses the user's
    /// `initial_state()` or `Default`.
    fn initial_state() -> Self::State;

    /// Runs before the instance handles its first event, and again whenever it is started after
    /// being dropped from memory. No connection or request is handled before it succeeds; if it
    /// fails, the waiting connection is refused and the next event tries again.
    fn on_start(&mut self, _ctx: &mut Context<Self>) -> impl Future<Output = Result<()>> + Send {
        async { Ok(()) }
    }

    /// A plain HTTP request to `/agents/{agent}/{name}[/...]`. Default: 404 `Not implemented`.
    fn on_request(
        &mut self,
        _ctx: &mut Context<Self>,
        _request: Request,
    ) -> impl Future<Output = Result<Response>> + Send {
        async { Ok(not_implemented()) }
    }

    /// The tags of a new connection (`getConnectionTags`): at most 9, each 1 to 256 characters.
    /// Runs before `on_connect`; breaking a rule refuses the connection with an `{"error":…}`
    /// frame and close code 1011.
    fn connection_tags(
        &mut self,
        _ctx: &mut Context<Self>,
        _connection: &Connection<Self::ConnectionState>,
        _conn_ctx: &ConnectionContext,
    ) -> impl Future<Output = Result<Vec<String>>> + Send {
        async { Ok(Vec::new()) }
    }

    /// Whether a new connection gets the protocol frames (identity, state, MCP) and state
    /// broadcasts (`shouldSendProtocolMessages`). Default `true`; return `false` for clients
    /// that cannot handle JSON text frames. RPC and state frames from it still work.
    fn should_send_protocol_messages(
        &mut self,
        _ctx: &mut Context<Self>,
        _connection: &Connection<Self::ConnectionState>,
        _conn_ctx: &ConnectionContext,
    ) -> impl Future<Output = Result<bool>> + Send {
        async { Ok(true) }
    }

    /// Whether a new connection is readonly (`shouldConnectionBeReadonly`): it receives state
    /// but cannot change it. Default `false`.
    fn should_connection_be_readonly(
        &mut self,
        _ctx: &mut Context<Self>,
        _connection: &Connection<Self::ConnectionState>,
        _conn_ctx: &ConnectionContext,
    ) -> impl Future<Output = Result<bool>> + Send {
        async { Ok(false) }
    }

    /// Checks a state change before it happens (`validateStateChange`); an error rejects it.
    ///
    /// It runs inside `ctx.set_state` and for client `cf_agent_state` frames, so it sees the
    /// context (the current state is `ctx.state()`) but not the agent's fields.
    fn validate_state_change(
        _ctx: &Context<Self>,
        _next: &Self::State,
        _source: StateSource<'_, Self::ConnectionState>,
    ) -> Result<()> {
        Ok(())
    }

    /// Runs after an accepted state change (`onStateChanged`), once the hook or frame that
    /// made it is done. Its errors go to `on_error`.
    fn on_state_changed(
        &mut self,
        _ctx: &mut Context<Self>,
        _state: &Self::State,
        _source: StateSource<'_, Self::ConnectionState>,
    ) -> impl Future<Output = Result<()>> + Send {
        async { Ok(()) }
    }

    /// Runs a `#[callable]` method; `#[agent]` generates it.
    fn call(
        &mut self,
        _ctx: &mut Context<Self>,
        _call: Call,
    ) -> impl Future<Output = CallOutcome> + Send {
        async { CallOutcome::NotFound }
    }

    /// The alarm set with [`Storage::set_alarm`](crate::storage::Storage::set_alarm) is due
    /// (`alarm(alarmInfo)`): it runs as a turn, waking the instance if it is hibernated or
    /// out of memory. After it succeeds the alarm is deleted, unless it set the alarm again.
    /// If it fails (an error or a panic), it is retried with backoff (2 s, doubling) at most
    /// [`MAX_ALARM_RETRIES`](crate::storage::MAX_ALARM_RETRIES) times; `info` says which
    /// retry it is. It runs at least once per alarm: after a crash it may run again.
    fn on_alarm(
        &mut self,
        _ctx: &mut Context<Self>,
        _info: AlarmInfo,
    ) -> impl Future<Output = Result<()>> + Send {
        async { Ok(()) }
    }

    /// Runs a `#[callback]` method for a schedule or the queue; `#[agent]` generates it.
    fn run_callback(
        &mut self,
        _ctx: &mut Context<Self>,
        callback: &str,
        _payload: serde_json::Value,
        _trigger: Trigger<'_>,
    ) -> impl Future<Output = Result<()>> + Send {
        let error = unknown_callback::<Self>(callback);
        async move { Err(error) }
    }

    /// A new WebSocket connection. No `on_message` of this connection runs before it returns.
    fn on_connect(
        &mut self,
        _ctx: &mut Context<Self>,
        _connection: &Connection<Self::ConnectionState>,
        _conn_ctx: &ConnectionContext,
    ) -> impl Future<Output = Result<()>> + Send {
        async { Ok(()) }
    }

    /// A text or binary message from a connection.
    fn on_message(
        &mut self,
        _ctx: &mut Context<Self>,
        _connection: &Connection<Self::ConnectionState>,
        _message: Message,
    ) -> impl Future<Output = Result<()>> + Send {
        async { Ok(()) }
    }

    /// A connection closed, with the client's code and reason. It is no longer listed by
    /// `get_connections` and can no longer be sent to.
    fn on_close(
        &mut self,
        _ctx: &mut Context<Self>,
        _connection: &Connection<Self::ConnectionState>,
        _code: u16,
        _reason: &str,
        _was_clean: bool,
    ) -> impl Future<Output = Result<()>> + Send {
        async { Ok(()) }
    }

    /// An error: with `Some(connection)` the docs' `onError(connection, error)` (a hook of that
    /// connection failed, or its socket broke), with `None` the server-level `onError(error)`.
    /// The default logs it, at most 10 lines a second per instance (the lines it drops are
    /// counted in the next one) and at most 256 bytes of the error's text, since a client can
    /// cause errors as fast as it sends.
    fn on_error(
        &mut self,
        ctx: &mut Context<Self>,
        connection: Option<&Connection<Self::ConnectionState>>,
        error: &Error,
    ) -> impl Future<Output = Result<()>> + Send {
        // Within the instance's allowance of lines, clipped: a client can cause errors.
        if let Some(dropped) = ctx.log_budget().take() {
            let (agent, name, error) =
                (Self::NAME, ctx.name(), clip(&error.to_string()).into_owned());
            match connection {
                Some(conn) => tracing::error!(
                    agent,
                    name,
                    connection = conn.id(),
                    dropped,
                    "error on websocket connection: {error}"
                ),
                None => tracing::error!(agent, name, dropped, "error on server: {error}"),
            }
        }
        async { Ok(()) }
    }
}

/// The default `on_request` answer: 404 `Not implemented`, as a Cloudflare agent's.
pub fn not_implemented() -> Response {
    let mut response = Response::new(Bytes::from_static(b"Not implemented"));
    *response.status_mut() = http::StatusCode::NOT_FOUND;
    response
}
