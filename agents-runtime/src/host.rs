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
use crate::protocol::{self, ClientFrame, RpcRequest};
use crate::request::{ConnectionContext, Request, Response};
use crate::rpc::{Call, CallOutcome, StreamingResponse};
use crate::server::Shared;
use crate::state::StateSource;

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
    /// An in-process call from an [`AgentStub`](crate::AgentStub).
    Call {
        call: Call,
        reply: oneshot::Sender<CallOutcome>,
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
    let ctx = Context::new(name.clone(), shared.clone(), A::initial_state());
    let mut host = Host::<A> { agent: None, ctx, shared };
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
        host.ctx.current = None;
        host.run_state_changes().await;
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
                self.ctx.current = Some(conn.clone());
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
                self.ctx.current = Some(conn.clone());
                match message.as_text().and_then(ClientFrame::parse) {
                    Some(ClientFrame::State(next)) => {
                        if let Err(error) = self.ctx.apply_client_state(&conn, next) {
                            let _ = conn.send(protocol::state_error(error));
                        }
                    }
                    Some(ClientFrame::Rpc(request)) => {
                        rpc(agent, &mut self.ctx, &conn, request).await
                    }
                    None => {
                        if let Err(e) = agent.on_message(&mut self.ctx, &conn, message).await {
                            report(agent, &mut self.ctx, Some(&conn), e).await;
                        }
                    }
                }
            }
            Event::Close { key, code, reason, was_clean } => {
                let Some(conn) = self.ctx.connections.remove(key) else { return };
                conn.mark_closed();
                self.ctx.current = Some(conn.clone());
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
            Event::Call { call, reply } => {
                let outcome = match self.ensure_started().await {
                    Ok(()) => {
                        let agent = self.agent.as_mut().expect("started");
                        match AssertUnwindSafe(agent.call(&mut self.ctx, call)).catch_unwind().await
                        {
                            Ok(outcome) => outcome,
                            Err(panic) => CallOutcome::Error(format!(
                                "a hook panicked: {}",
                                panic_message(&*panic)
                            )),
                        }
                    }
                    Err(e) => CallOutcome::Error(format!("the agent could not start: {e}")),
                };
                let _ = reply.send(outcome);
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
        // Both flags are settled before the connection is listed, so no broadcast reaches it
        // before its identity. A predicate that fails refuses the connection: guessing
        // "writable" or "protocol on" could hand a client more than it should get.
        let readonly = agent.should_connection_be_readonly(&mut self.ctx, conn, conn_ctx).await;
        let protocol = match readonly {
            Ok(readonly) => {
                conn.set_readonly(readonly);
                agent.should_send_protocol_messages(&mut self.ctx, conn, conn_ctx).await
            }
            Err(e) => Err(e),
        };
        let protocol = match protocol {
            Ok(protocol) => protocol,
            Err(e) => {
                tracing::warn!(
                    agent = A::NAME,
                    name = self.ctx.name(),
                    connection = conn.id(),
                    "refusing connection: {e}"
                );
                return fail_setup(conn, &e.to_string());
            }
        };
        conn.set_protocol_enabled(protocol);
        self.ctx.connections.insert(conn.clone());
        if protocol {
            send_connect_frames(&mut self.ctx, conn);
        }
        if let Err(e) = agent.on_connect(&mut self.ctx, conn, conn_ctx).await {
            report(agent, &mut self.ctx, Some(conn), e).await;
        }
    }

    /// `on_state_changed` for every change the last event made (and the changes those make,
    /// a bounded number of rounds).
    async fn run_state_changes(&mut self) {
        const ROUNDS: usize = 16;
        let Some(agent) = self.agent.as_mut() else {
            self.ctx.changes.clear();
            return;
        };
        for _ in 0..ROUNDS {
            if self.ctx.changes.is_empty() {
                return;
            }
            for change in std::mem::take(&mut self.ctx.changes) {
                let source = match &change.source {
                    Some(conn) => StateSource::Connection(conn),
                    None => StateSource::Server,
                };
                let hook = agent.on_state_changed(&mut self.ctx, &change.state, source);
                let error = match AssertUnwindSafe(hook).catch_unwind().await {
                    Ok(Ok(())) => continue,
                    Ok(Err(e)) => e,
                    Err(panic) => {
                        Error::msg(format!("a hook panicked: {}", panic_message(&*panic)))
                    }
                };
                report(agent, &mut self.ctx, None, error).await;
            }
        }
        tracing::error!(
            agent = A::NAME,
            name = self.ctx.name(),
            "on_state_changed keeps changing the state; stopped after {ROUNDS} rounds"
        );
        self.ctx.changes.clear();
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

/// Identity, state (when the agent has one) and MCP frames, in the reference's order.
fn send_connect_frames<A: Agent>(ctx: &mut Context<A>, conn: &Connection<A::ConnectionState>) {
    let state = if A::HAS_STATE {
        match ctx.state_frame() {
            Ok(frame) => Some(frame),
            Err(e) => {
                tracing::error!(
                    agent = A::NAME,
                    name = ctx.name(),
                    "the state cannot be serialized: {e}"
                );
                None
            }
        }
    } else {
        None
    };
    // `stateFollows` promises the very next frame is the state.
    let _ = conn.send(protocol::identity(ctx.name(), A::NAME, state.is_some()));
    if let Some(frame) = state {
        let _ = conn.send(frame);
    }
    let _ = conn.send(protocol::mcp_servers());
}

/// Runs one RPC call and answers it (unless the method streams its own answer). The answer
/// is dropped if the connection closed meanwhile, as the reference's `sendRpcResponseIfOpen`.
async fn rpc<A: Agent>(
    agent: &mut A,
    ctx: &mut Context<A>,
    conn: &Connection<A::ConnectionState>,
    request: RpcRequest,
) {
    let RpcRequest { id, method, args } = request;
    let sink = conn.clone();
    let stream = StreamingResponse::new(id.clone(), move |frame| sink.send(frame));
    let call = Call { method: method.clone(), args, stream: Some(stream.clone()) };
    let outcome = match AssertUnwindSafe(agent.call(ctx, call)).catch_unwind().await {
        Ok(outcome) => outcome,
        Err(panic) => CallOutcome::Error(format!("a hook panicked: {}", panic_message(&*panic))),
    };
    let frame = match outcome {
        CallOutcome::Value(result) => protocol::rpc_result(&id, result.as_ref(), true),
        CallOutcome::Streamed => return,
        CallOutcome::Error(error) => {
            tracing::error!(agent = A::NAME, name = ctx.name(), method, "RPC error: {error}");
            if stream.is_closed() {
                return;
            }
            protocol::rpc_error(&id, &error)
        }
        CallOutcome::NotFound => {
            protocol::rpc_error(&id, &format!("Method {method} does not exist"))
        }
        CallOutcome::NotCallable => {
            protocol::rpc_error(&id, &format!("Method {method} is not callable"))
        }
    };
    let _ = conn.send(frame);
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
