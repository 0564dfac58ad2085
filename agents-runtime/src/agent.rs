//! The [`Agent`] trait: the hooks of the seeds, which `#[agent]` implements from an impl block.

use std::future::Future;

use bytes::Bytes;

use crate::connection::Connection;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::message::Message;
use crate::request::{ConnectionContext, Request, Response};

/// A class of agents: one live instance per name, events one turn at a time on `&mut self`.
///
/// Normally written with `#[agent]` on an inherent impl block, which implements this trait
/// from the hooks found there (see the crate docs). Every hook is optional. A hook that
/// returns an error reaches [`on_error`](Agent::on_error); the socket stays open and the
/// instance keeps running.
pub trait Agent: Sized + Send + 'static {
    /// The route name: `/agents/{NAME}/{instance}`. `#[agent]` derives it from the type name
    /// with Cloudflare's kebab-case rule (`ChatRoom` → `chat-room`).
    const NAME: &'static str;

    /// The per-connection state type (`Connection<S>`); `()` when the agent keeps none.
    type ConnectionState: serde::Serialize + serde::de::DeserializeOwned + Send + 'static;

    /// Builds a fresh instance before `on_start` (`#[agent]` uses `Default`).
    fn create() -> Self;

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
    /// The default logs it.
    fn on_error(
        &mut self,
        ctx: &mut Context<Self>,
        connection: Option<&Connection<Self::ConnectionState>>,
        error: &Error,
    ) -> impl Future<Output = Result<()>> + Send {
        let (agent, name) = (Self::NAME, ctx.name());
        match connection {
            Some(conn) => tracing::error!(
                agent,
                name,
                connection = conn.id(),
                "error on websocket connection: {error}"
            ),
            None => tracing::error!(agent, name, "error on server: {error}"),
        }
        async { Ok(()) }
    }
}

/// The default `on_request` answer: 404 `Not implemented`, as the reference's.
pub fn not_implemented() -> Response {
    let mut response = Response::new(Bytes::from_static(b"Not implemented"));
    *response.status_mut() = http::StatusCode::NOT_FOUND;
    response
}
