//! The instance host: one task per live `(agent, name)` that owns the agent struct and its
//! connections and runs events one turn at a time, in mailbox order.

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures_util::FutureExt;
use tokio::sync::{mpsc, oneshot};

use crate::agent::Agent;
use crate::connection::{Connection, ConnectionKey, ConnectionParts, Outgoing, close_code};
use crate::context::Context;
use crate::error::Error;
use crate::message::Message;
use crate::request::{ConnectionContext, Request, Response};
use crate::server::Shared;

/// What reaches an instance's mailbox.
pub(crate) enum Event {
    /// A socket finished its upgrade. Its later events queue behind this one, so its
    /// `on_message` never runs before its `on_connect` has finished.
    Connect(Box<ConnectRequest>),
    Message {
        key: ConnectionKey,
        message: Message,
    },
    Close {
        key: ConnectionKey,
        code: u16,
        reason: String,
        was_clean: bool,
    },
    Error {
        key: ConnectionKey,
        error: Error,
    },
    /// Boxed: HTTP is rare next to messages, and every mailbox slot is as big as the largest
    /// variant.
    Request {
        request: Box<Request>,
        reply: oneshot::Sender<Response>,
    },
}

pub(crate) struct ConnectRequest {
    pub(crate) parts: ConnectionParts,
    pub(crate) conn_ctx: ConnectionContext,
}

/// Starts the host task of instance `name` and returns its mailbox.
pub(crate) fn spawn<A: Agent>(shared: Arc<Shared>, name: Arc<str>) -> mpsc::Sender<Event> {
    let (tx, rx) = mpsc::channel(shared.limits.mailbox_capacity);
    tokio::spawn(run::<A>(rx, shared, name));
    tx
}

struct Host<A: Agent> {
    /// `None` until `on_start` succeeded.
    agent: Option<A>,
    ctx: Context<A>,
    shared: Arc<Shared>,
}

async fn run<A: Agent>(mut mailbox: mpsc::Receiver<Event>, shared: Arc<Shared>, name: Arc<str>) {
    let mut host =
        Host::<A> { agent: None, ctx: Context::new(name.clone(), shared.env.clone()), shared };
    loop {
        let event = if host.ctx.connections.is_empty() {
            let idle = host.shared.limits.evict_idle_after;
            match tokio::time::timeout(idle, mailbox.recv()).await {
                Ok(Some(event)) => event,
                Ok(None) => break,
                Err(_) if host.shared.instances.try_evict(A::NAME, &name, &mailbox) => break,
                Err(_) => continue,
            }
        } else {
            match mailbox.recv().await {
                Some(event) => event,
                None => break,
            }
        };
        if let Err(panic) = AssertUnwindSafe(host.handle(event)).catch_unwind().await {
            let error = Error::msg(format!("a hook panicked: {}", panic_message(&*panic)));
            tracing::error!(agent = A::NAME, name = %name, "{error}");
            if let Some(agent) = host.agent.as_mut() {
                report(agent, &mut host.ctx, None, error).await;
            }
        }
    }
    tracing::debug!(agent = A::NAME, name = %name, "instance left memory");
}

impl<A: Agent> Host<A> {
    async fn handle(&mut self, event: Event) {
        match event {
            Event::Connect(request) => {
                let ConnectRequest { parts, conn_ctx } = *request;
                let name = self.ctx.name_arc().clone();
                let conn = Connection::new(parts, name, &self.shared.limits);
                let connect = AssertUnwindSafe(self.connect(&conn, &conn_ctx)).catch_unwind();
                if let Err(panic) = connect.await {
                    let error = format!("a hook panicked: {}", panic_message(&*panic));
                    tracing::error!(agent = A::NAME, name = self.ctx.name(), "{error}");
                    match (&mut self.agent, self.ctx.connections.get(conn.key()).is_some()) {
                        // `on_connect` panicked: the connection stands, like after an error.
                        (Some(agent), true) => {
                            report(agent, &mut self.ctx, Some(&conn), Error::msg(error)).await;
                        }
                        // `on_start` or `connection_tags` panicked: refuse the connection.
                        _ => fail_setup(&conn, &error),
                    }
                }
            }
            Event::Message { key, message } => {
                let (Some(agent), Some(conn)) = (&mut self.agent, self.ctx.connections.get(key))
                else {
                    return;
                };
                // A connection the agent closed (say, refused in `on_connect`) is not heard:
                // what it sent before its close frame is dropped.
                if conn.is_closing() {
                    return;
                }
                let conn = conn.clone();
                if let Err(e) = agent.on_message(&mut self.ctx, &conn, message).await {
                    report(agent, &mut self.ctx, Some(&conn), e).await;
                }
            }
            Event::Close { key, code, reason, was_clean } => {
                let Some(conn) = self.ctx.connections.remove(key) else { return };
                conn.mark_closed();
                let Some(agent) = &mut self.agent else { return };
                let result = agent.on_close(&mut self.ctx, &conn, code, &reason, was_clean).await;
                if let Err(e) = result {
                    report(agent, &mut self.ctx, Some(&conn), e).await;
                }
            }
            Event::Error { key, error } => {
                let (Some(agent), Some(conn)) = (&mut self.agent, self.ctx.connections.get(key))
                else {
                    return;
                };
                let conn = conn.clone();
                report(agent, &mut self.ctx, Some(&conn), error).await;
            }
            Event::Request { request, reply } => {
                let response = self.request(*request).await;
                let _ = reply.send(response);
            }
        }
    }

    /// Builds the agent and runs `on_start` if it is not running yet.
    async fn ensure_started(&mut self) -> Result<(), Error> {
        if self.agent.is_none() {
            let mut agent = A::create();
            if let Err(e) = agent.on_start(&mut self.ctx).await {
                report(
                    &mut agent,
                    &mut self.ctx,
                    None,
                    Error::msg(format!("on_start failed: {e}")),
                )
                .await;
                return Err(e);
            }
            self.agent = Some(agent);
        }
        Ok(())
    }

    async fn connect(
        &mut self,
        conn: &Connection<A::ConnectionState>,
        conn_ctx: &ConnectionContext,
    ) {
        if let Err(e) = self.ensure_started().await {
            return fail_setup(conn, &e.to_string());
        }
        let agent = self.agent.as_mut().expect("started");
        let tags = match agent.connection_tags(&mut self.ctx, conn, conn_ctx).await {
            Ok(user_tags) => crate::tags::prepare(conn.id_arc(), user_tags),
            Err(e) => Err(e.to_string()),
        };
        match tags {
            Ok(tags) => conn.set_tags(tags),
            Err(rule) => {
                tracing::warn!(
                    agent = A::NAME,
                    name = self.ctx.name(),
                    connection = conn.id(),
                    "refusing connection: {rule}"
                );
                return fail_setup(conn, &rule);
            }
        }
        self.ctx.connections.insert(conn.clone());
        if let Err(e) = agent.on_connect(&mut self.ctx, conn, conn_ctx).await {
            report(agent, &mut self.ctx, Some(conn), e).await;
        }
    }

    async fn request(&mut self, request: Request) -> Response {
        if self.ensure_started().await.is_err() {
            return internal_error();
        }
        let agent = self.agent.as_mut().expect("started");
        match agent.on_request(&mut self.ctx, request).await {
            Ok(response) => response,
            Err(e) => {
                report(agent, &mut self.ctx, None, e).await;
                internal_error()
            }
        }
    }
}

/// Hands an error to `on_error`; an error or a panic in `on_error` itself is logged.
async fn report<A: Agent>(
    agent: &mut A,
    ctx: &mut Context<A>,
    conn: Option<&Connection<A::ConnectionState>>,
    error: Error,
) {
    let name: Arc<str> = ctx.name_arc().clone();
    match AssertUnwindSafe(agent.on_error(ctx, conn, &error)).catch_unwind().await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::error!(agent = A::NAME, name = %name, "on_error failed: {e} (handling: {error})");
        }
        Err(panic) => tracing::error!(
            agent = A::NAME,
            name = %name,
            "on_error panicked: {} (handling: {error})",
            panic_message(&*panic)
        ),
    }
}

/// Refuses a connection as the reference does: an `{"error":…}` frame, then close 1011.
fn fail_setup<S>(conn: &Connection<S>, message: &str) {
    let frame = serde_json::json!({ "error": message }).to_string();
    let _ = conn.push(Outgoing::Message(frame.into()));
    let _ = conn.close(close_code::SESSION_SETUP_FAILED, "Uncaught exception during session setup");
}

fn internal_error() -> Response {
    let mut response = Response::new(bytes::Bytes::from_static(b"Internal Server Error"));
    *response.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
    response
}

fn panic_message(panic: &(dyn Any + Send)) -> &str {
    if let Some(s) = panic.downcast_ref::<&str>() {
        s
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s
    } else {
        "(non-string panic payload)"
    }
}
