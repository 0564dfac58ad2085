//! Stateful WebSocket agents with the semantics of Cloudflare Agents and Durable Objects,
//! self-hosted.
//!
//! Annotate an inherent impl block with `#[agent]`; the hooks you write there (`on_start`,
//! `on_request`, `connection_tags`, `on_connect`, `on_message`, `on_close`, `on_error`, and the
//! others in the table below) become the agent's [`Agent`] implementation. Each
//! `(agent, name)` pair is one live instance, reached at `/agents/{agent}/{name}`, that handles
//! its events one turn at a time on `&mut self`.
//!
//! The guide is the mdBook in `book/` of the repository. The `testing` module (feature
//! `testing`) has the helpers for testing agents over real sockets.
//!
//! ```no_run
//! use agents_runtime::prelude::*;
//!
//! #[derive(Default)]
//! struct Echo;
//!
//! #[agent]
//! impl Echo {
//!     async fn on_connect(&mut self, _ctx: &mut Context<Self>, conn: &Connection, _c: &ConnectionContext) -> Result<()> {
//!         conn.send("Welcome!")?;
//!         Ok(())
//!     }
//!
//!     async fn on_message(&mut self, _ctx: &mut Context<Self>, conn: &Connection, message: Message) -> Result<()> {
//!         conn.send(message)?;
//!         Ok(())
//!     }
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<()> {
//!     Server::builder().bind("127.0.0.1:8787").await?.run().await
//! }
//! ```
//!
//! # Hook signatures
//!
//! Hooks may be `async fn` or `fn`, take `&mut self` (or `&self`), and return `()`/`T` or
//! `Result<T, E>` for any error convertible into [`Error`]. After `&mut self` every hook takes
//! `ctx: &mut Context<Self>`, then the parameters of the [`Agent`] trait method of the same
//! name, which documents each hook (`on_start`, `on_request`, `connection_tags`, `on_connect`,
//! `on_message`, `on_close`, `on_error`, `on_alarm`, `should_send_protocol_messages`,
//! `should_connection_be_readonly`, `on_state_changed`). `#[agent]` checks each hook's
//! receiver and number of parameters; the compiler checks their types against the trait's.
//!
//! With `#[agent(state = T)]`, two associated functions (no `self`) shape the state:
//! `fn initial_state() -> T` (default `T::default()`) and
//! `fn validate_state_change(ctx: &Context<Self>, next: &T, source: StateSource<'_, S>) -> Result<()>`.
//! Methods marked `#[callable]` are reachable by RPC; see [`callable`]. Methods marked
//! `#[callback]` are what schedules and the queue call later ([`Context::schedule`],
//! [`Context::queue`]); see [`callback`].

// The layers, bottom up; each uses only the ones listed before it. The architecture
// chapter of the book draws them, and `tests/tests/architecture.rs` checks that no import
// cycle crosses them.
//
// Foundations: plain types every layer shares.
mod env;
mod error;
mod limits;
mod message;
mod request;
mod sync;
// The WebSocket wire and the Cloudflare Agents protocol's frames.
mod wire;
// Durable storage and the output gate's group commit.
pub mod storage;
// Cluster mode: PostgreSQL, nodes and their leases, owners of agents, the fenced store.
pub mod cluster;
// Each instance's SQLite database (`ctx.sql()`), in the output gate's group commit.
mod sql;
// What an instance sends, and the write side of its sockets.
mod outbox;
// Live instances: connections, state, RPC, the directory.
mod instance;
// Clients of an agent: over a WebSocket, and the transport trait stubs share.
pub mod client;
// Agents as clients of remote MCP servers (`ctx.mcp()`).
pub mod mcp;
// Agents: the trait, the context, the host task that runs turns, in-process stubs.
mod agent;
// The network edge: warp, sockets, parking.
mod transport;
// What a user builds and runs.
#[cfg(feature = "bench")]
#[doc(hidden)]
pub mod bench;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzz;
mod registry;
mod server;
#[cfg(feature = "testing")]
pub mod testing;
pub mod typescript;

pub use agent::callback::{Callback, Trigger, TriggerKind};
pub use agent::context::Context;
pub use agent::schedule::{ScheduleCriteria, When};
pub use agent::stub::AgentStub;
pub use agent::tasks::{QueueItem, Schedule, ScheduleKind, ScheduleType};
pub use agent::{Agent, StatefulAgent, not_implemented};
pub use agents_macros::{TypeScript, callback, sql};

/// ```no_run
/// use agents_runtime::prelude::*;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Clone, Default, Serialize, Deserialize)]
/// struct Votes {
///     yes: u32,
///     no: u32,
/// }
///
/// /// `/agents/poll/{name}`: one poll per name, its votes synced to every client.
/// #[derive(Default)]
/// struct Poll;
///
/// #[agent(state = Votes, rename_all = "camelCase")]
/// impl Poll {
///     fn on_connect(&mut self, _ctx: &mut Context<Self>, conn: &Connection, _c: &ConnectionContext) -> Result<()> {
///         conn.send("vote with the callable `vote(yes)`")?;
///         Ok(())
///     }
///
///     #[callable]
///     fn vote(&mut self, ctx: &mut Context<Self>, yes: bool) -> Result<Votes> {
///         let mut votes = ctx.state().clone();
///         if yes { votes.yes += 1 } else { votes.no += 1 }
///         ctx.set_state(votes.clone())?;
///         Ok(votes)
///     }
/// }
///
/// // Generated beside it: `PollClient`, with `vote(yes)` as a typed method.
/// # async fn typed() -> Result<()> {
/// let poll = PollClient::connect("ws://127.0.0.1:8787/agents/poll/lunch").await?;
/// let votes: Votes = poll.vote(true).await?;
/// # let _ = votes; Ok(()) }
/// ```
pub use agents_macros::agent;

/// ```no_run
/// use agents_runtime::prelude::*;
///
/// #[derive(Default)]
/// struct Calculator;
///
/// #[agent(rename_all = "camelCase")]
/// impl Calculator {
///     /// `agent.call("add", [1, 2])` from the official client answers 3; a wrong argument
///     /// is an RPC error that names it.
///     #[callable(description = "Adds two numbers")]
///     fn add(&mut self, _ctx: &mut Context<Self>, a: i64, b: i64) -> Result<i64> {
///         a.checked_add(b).ok_or_else(|| Error::msg("the sum overflows"))
///     }
///
///     /// Async callables wait without holding up other instances.
///     #[callable(name = "slowEcho")]
///     async fn echo_later(&mut self, _ctx: &mut Context<Self>, text: String) -> Result<String> {
///         tokio::time::sleep(std::time::Duration::from_millis(10)).await;
///         Ok(text)
///     }
/// }
/// ```
pub use agents_macros::callable;
pub use env::Env;
pub use error::{ConnectionError, Error, IntoHookResult, Result};
pub use instance::auto_response::{MAX_AUTO_RESPONSE_LEN, WebSocketRequestResponsePair};
pub use instance::connection::Connection;
pub use instance::connections::Connections;
pub use instance::rpc::{Call, CallOutcome, CallableInfo, StreamingResponse};
pub use instance::state::StateSource;
pub use instance::tags::{MAX_TAG_LEN, MAX_TAGS};
pub use message::{Message, Text};
pub use request::{ConnectionContext, Request, Response};
pub use server::{DEFAULT_DATA_DIR, Server, ServerBuilder, ServerHandle, shutdown_signal};
pub use sql::{Sql, SqlCursor, SqlError, SqlParams, SqlValue};
pub use typescript::TypeScript;
pub use wire::close_code;

/// Re-exported so users and generated code name the same versions.
pub use bytes;
pub use http;
pub use serde;
pub use serde_json;

/// Everything an agent module usually needs: `use agents_runtime::prelude::*;`.
pub mod prelude {
    pub use crate::{
        Agent, Connection, ConnectionContext, Context, Error, Message, QueueItem, Request,
        Response, Result, Schedule, ScheduleCriteria, Server, Sql, SqlCursor, SqlError,
        StateSource, StreamingResponse, WebSocketRequestResponsePair, When, agent, callable,
        callback, sql, storage::AlarmInfo, storage::ListOptions, storage::Storage,
    };
}

/// What `#[agent]` expands to. Not a public API: it may change in any release.
#[doc(hidden)]
pub mod __private {
    pub use crate::agent::callback::{decode_payload, unknown_callback};
    pub use crate::client::{decode_result, encode_arg};
    pub use crate::error::IntoHookResult;
    pub use crate::instance::rpc::{check_arity, decode_arg, is_agent_method};
    pub use crate::registry::AgentRegistration;
    pub use crate::sql::Bindings;
    pub use crate::typescript::{TypeScriptAgent, doc_comment};
    pub use inventory;
}
