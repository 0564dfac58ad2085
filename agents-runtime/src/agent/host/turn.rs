//! One turn of an instance: an event from its mailbox handled on `&mut A`, and the steps a
//! turn is made of (connection setup, RPC, `on_state_changed`, `on_error`).

use std::sync::Arc;

use super::panics::caught;
use super::{Awake, Host};
use crate::agent::Agent;
use crate::agent::context::Context;
use crate::error::Error;
use crate::instance::connection::{Connection, ConnectionKey};
use crate::instance::event::{ConnectRequest, Event};
use crate::instance::log_budget::clip;
use crate::instance::rpc::{Call, CallOutcome, StreamingResponse};
use crate::instance::state::StateSource;
use crate::message::Message;
use crate::request::{ConnectionContext, Request, Response};
use crate::wire::close_code;
use crate::wire::protocol::{self, ClientFrame, RpcRequest, RpcResponse, storage_failed};

/// The answer to an HTTP request whose turn's writes were lost.
fn storage_failed_response(why: &str) -> Response {
    let mut response = Response::new(storage_failed(why).into());
    *response.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
    let text = http::HeaderValue::from_static("text/plain;charset=UTF-8");
    response.headers_mut().insert(http::header::CONTENT_TYPE, text);
    response
}

impl<A: Agent> Host<A> {
    /// Handles one event; the caller catches a panic and sends the turn's reply.
    pub(super) async fn handle(&mut self, event: Event) {
        match event {
            Event::Connect(request) => self.on_connect(*request).await,
            Event::Message { key, message } => self.on_message(key, message).await,
            Event::Close { key, code, reason, was_clean } => {
                self.on_close(key, code, &reason, was_clean).await;
            }
            Event::Error { key, error } => self.on_error(key, error).await,
            Event::Call { call, reply } => {
                let outcome = self.call(call).await;
                self.reply = Some(Box::new(move |lost| {
                    let outcome = match lost {
                        Some(why) => CallOutcome::Error(storage_failed(&why)),
                        None => outcome,
                    };
                    let _ = reply.send(outcome);
                }));
            }
            Event::Request { request, reply } => {
                let response = self.request(*request).await;
                self.reply = Some(Box::new(move |lost| {
                    let response = match lost {
                        Some(why) => storage_failed_response(&why),
                        None => response,
                    };
                    let _ = reply.send(response);
                }));
            }
            Event::Alarm => self.run_alarms().await,
            // The turn's look at lost writes restarted the instance if it had to.
            Event::StorageLost => {}
            // The turn's end broadcasts what changed.
            Event::McpChanged => {}
            // `place_event` took it before the turn.
            Event::Cluster(_) => {}
        }
    }

    async fn on_connect(&mut self, request: ConnectRequest) {
        let ConnectRequest { parts, conn_ctx } = request;
        let conn = Connection::new(parts, self.instance.clone());
        // Before waking the agent: the 101 leaves when this poll ends, even if `on_start`
        // takes longer; usually the whole turn runs in it, and the 101 takes its frames along.
        conn.cork_response();
        let awake = match self.wake().await {
            Ok(awake) => awake,
            Err(e) => return fail_setup(&conn, &e.to_string()),
        };
        awake.ctx.begin_turn(Some(conn.clone()));
        if let Err(error) = caught(connect(awake, &conn, &conn_ctx)).await {
            tracing::error!(agent = A::NAME, name = awake.ctx.name(), "{error}");
            if awake.ctx.connections().get(conn.key()).is_some() {
                // `on_connect` panicked: the connection stands, like after an error.
                report(&mut awake.agent, &mut awake.ctx, Some(&conn), error).await;
            } else {
                // `connection_tags` or a predicate panicked: refuse the connection.
                fail_setup(&conn, &error.to_string());
            }
        }
    }

    async fn on_message(&mut self, key: ConnectionKey, message: Message) {
        let Some(conn) = self.connection(key) else { return };
        // Out of the mailbox: its socket may read more (see `Link::took_inbound`).
        if let Some(link) = conn.link() {
            link.took_inbound(message.len(), self.directory.limits.max_message_size);
        }
        let awake = match self.wake().await {
            Ok(awake) => awake,
            Err(e) => return self.unheard(key, &message, &e),
        };
        let Awake { agent, ctx, .. } = awake;
        let Some(conn) = ctx.connections().get(key) else { return };
        // A connection the agent closed (say, refused in `on_connect`) is not heard: what it
        // sent before its close frame is dropped.
        if conn.is_closing() {
            return;
        }
        let conn = conn.clone();
        ctx.begin_turn(Some(conn.clone()));
        match message.as_text().and_then(ClientFrame::parse) {
            Some(ClientFrame::State { state: next }) => {
                if let Err(error) = ctx.apply_client_state(&conn, next) {
                    let _ = conn.send(protocol::state_error(error));
                }
            }
            Some(ClientFrame::Rpc(request)) => rpc(agent, ctx, &conn, request).await,
            None => {
                if let Err(e) = agent.on_message(ctx, &conn, message).await {
                    report(agent, ctx, Some(&conn), e).await;
                }
            }
        }
    }

    /// A message the agent could not hear because it could not start (its `on_start`
    /// failed, or the store is down): an RPC call or a state update is answered with the
    /// reason; anything else is only logged, within the instance's log budget.
    pub(super) fn unheard(&self, key: ConnectionKey, message: &Message, error: &Error) {
        let Some(conn) = self.asleep.get(key) else { return };
        let why = format!("the agent could not start: {error}");
        match message.as_text().and_then(ClientFrame::parse) {
            Some(ClientFrame::Rpc(request)) => {
                let _ = conn.send(RpcResponse::error(request.id, why).to_message());
            }
            Some(ClientFrame::State { .. }) => {
                let _ = conn.send(protocol::state_error(&why));
            }
            None => {
                if let Some(dropped) = self.instance.log_budget.take() {
                    let why = clip(&why);
                    tracing::warn!(agent = A::NAME, name = %self.name, dropped, "message dropped: {why}");
                }
            }
        }
    }

    async fn on_close(&mut self, key: ConnectionKey, code: u16, reason: &str, was_clean: bool) {
        if !self.has_connection(key) {
            return;
        }
        let woken = self.wake().await.is_ok();
        let table = match &mut self.awake {
            Some(awake) => awake.ctx.connections_mut(),
            None => &mut self.asleep,
        };
        let Some(conn) = table.remove(key) else { return };
        conn.mark_closed();
        let (true, Some(Awake { agent, ctx, .. })) = (woken, &mut self.awake) else { return };
        ctx.begin_turn(Some(conn.clone()));
        if let Err(e) = agent.on_close(ctx, &conn, code, reason, was_clean).await {
            report(agent, ctx, Some(&conn), e).await;
        }
    }

    async fn on_error(&mut self, key: ConnectionKey, error: Error) {
        if !self.has_connection(key) {
            return;
        }
        let Ok(Awake { agent, ctx, .. }) = self.wake().await else { return };
        let Some(conn) = ctx.connections().get(key).cloned() else { return };
        report(agent, ctx, Some(&conn), error).await;
    }

    async fn call(&mut self, call: Call) -> CallOutcome {
        match self.wake().await {
            Ok(Awake { agent, ctx, .. }) => {
                let outcome = caught(agent.call(ctx, call))
                    .await
                    .unwrap_or_else(|panic| CallOutcome::Error(panic.to_string()));
                if let CallOutcome::Error(_) = outcome {
                    ctx.hook_failed(); // its SQL statements are rolled back
                }
                outcome
            }
            Err(e) => CallOutcome::Error(format!("the agent could not start: {e}")),
        }
    }

    async fn request(&mut self, request: Request) -> Response {
        let Ok(Awake { agent, ctx, .. }) = self.wake().await else { return internal_error() };
        match agent.on_request(ctx, request).await {
            Ok(response) => response,
            Err(e) => {
                report(agent, ctx, None, e).await;
                internal_error()
            }
        }
    }
}

/// Sets a new connection up: tags, readonly and protocol flags, the table, the connect frames,
/// then `on_connect`.
pub(super) async fn connect<A: Agent>(
    awake: &mut Awake<A>,
    conn: &Connection<A::ConnectionState>,
    conn_ctx: &ConnectionContext,
) {
    let Awake { agent, ctx, .. } = awake;
    let tags = match agent.connection_tags(ctx, conn, conn_ctx).await {
        Ok(user_tags) => crate::instance::tags::prepare(conn.id_arc(), user_tags),
        Err(e) => Err(e.to_string()),
    };
    match tags {
        Ok(tags) => conn.set_tags(tags),
        Err(rule) => return refuse(ctx, conn, &rule),
    }
    // Both flags are settled before the connection is listed, so no broadcast reaches it
    // before its identity. A predicate that fails refuses the connection: guessing
    // "writable" or "protocol on" could hand a client more than it should get.
    let readonly = agent.should_connection_be_readonly(ctx, conn, conn_ctx).await;
    let protocol = match readonly {
        Ok(readonly) => {
            conn.set_readonly(readonly);
            agent.should_send_protocol_messages(ctx, conn, conn_ctx).await
        }
        Err(e) => Err(e),
    };
    let protocol = match protocol {
        Ok(protocol) => protocol,
        Err(e) => return refuse(ctx, conn, &e.to_string()),
    };
    conn.set_protocol_enabled(protocol);
    ctx.connections_mut().insert(conn.clone());
    if protocol {
        send_connect_frames(ctx, conn);
    }
    if let Err(e) = agent.on_connect(ctx, conn, conn_ctx).await {
        report(agent, ctx, Some(conn), e).await;
    }
}

/// Ends a turn: `on_state_changed` for every change the last event made (and the changes
/// those make, a bounded number of rounds), then the commit of the turn's SQL statements.
pub(super) async fn run_state_changes<A: Agent>(awake: &mut Awake<A>) {
    const ROUNDS: usize = 16;
    let Awake { agent, ctx, .. } = awake;
    let mut changes = ctx.end_turn();
    for _ in 0..ROUNDS {
        if changes.is_empty() {
            break;
        }
        for change in changes {
            let source = match &change.source {
                Some(conn) => StateSource::Connection(conn),
                None => StateSource::Server,
            };
            ctx.hook_started();
            let hook = agent.on_state_changed(ctx, &change.state, source);
            if let Err(e) = caught(hook).await.and_then(|changed| changed) {
                report(agent, ctx, None, e).await;
            }
        }
        changes = ctx.take_changes();
    }
    if !changes.is_empty() {
        tracing::error!(
            agent = A::NAME,
            name = ctx.name(),
            "on_state_changed keeps changing the state; stopped after {ROUNDS} rounds"
        );
    }
    ctx.commit_turn();
}

/// Identity, state (when the agent has one) and MCP frames, in the order the official client
/// expects.
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
    let _ = conn.send(ctx.mcp_clients().frame());
}

/// Runs one RPC call and answers it (unless the method streams its own answer). The answer
/// is dropped if the connection closed meanwhile, as Cloudflare's `sendRpcResponseIfOpen`.
pub(super) async fn rpc<A: Agent>(
    agent: &mut A,
    ctx: &mut Context<A>,
    conn: &Connection<A::ConnectionState>,
    request: RpcRequest,
) {
    let RpcRequest { id, method, args } = request;
    let sink = conn.clone();
    let stream = StreamingResponse::new(id.clone(), move |answer| sink.send(answer.to_message()));
    let call = Call { method: method.clone(), args, stream: Some(stream.clone()) };
    let outcome = caught(agent.call(ctx, call))
        .await
        .unwrap_or_else(|panic| CallOutcome::Error(panic.to_string()));
    let frame = match outcome {
        CallOutcome::Value(result) => RpcResponse::result(id, result, true),
        CallOutcome::Streamed => return,
        CallOutcome::Error(error) => {
            // The method failed: its SQL statements are rolled back.
            ctx.hook_failed();
            // Answered to the client; logged within the instance's allowance, clipped.
            if let Some(dropped) = ctx.log_budget().take() {
                let (name, method) = (ctx.name(), clip(&method));
                tracing::warn!(agent = A::NAME, name, %method, dropped, "RPC error: {}", clip(&error));
            }
            if stream.is_closed() {
                return;
            }
            RpcResponse::error(id, error)
        }
        CallOutcome::NotFound => RpcResponse::error(id, format!("Method {method} does not exist")),
        CallOutcome::NotCallable => {
            RpcResponse::error(id, format!("Method {method} is not callable"))
        }
    };
    let _ = conn.send(frame.to_message());
}

/// Hands an error to `on_error`, once the SQL statements of the hook that failed are rolled
/// back; an error or a panic in `on_error` itself is logged (and its statements rolled back).
pub(super) async fn report<A: Agent>(
    agent: &mut A,
    ctx: &mut Context<A>,
    conn: Option<&Connection<A::ConnectionState>>,
    error: Error,
) {
    let name: Arc<str> = ctx.name_arc().clone();
    ctx.hook_failed();
    ctx.hook_started();
    if let Err(e) = caught(agent.on_error(ctx, conn, &error)).await.and_then(|done| done) {
        ctx.hook_failed();
        tracing::error!(agent = A::NAME, name = %name, "on_error failed: {e} (handling: {error})");
    }
}

/// Refuses a connection its setup failed for (`why`), and logs it.
fn refuse<A: Agent>(ctx: &Context<A>, conn: &Connection<A::ConnectionState>, why: &str) {
    tracing::warn!(
        agent = A::NAME,
        name = ctx.name(),
        connection = conn.id(),
        "refusing connection: {why}"
    );
    fail_setup(conn, why);
}

/// Refuses a connection as Cloudflare does: an `{"error":…}` frame, then close 1011.
pub(super) fn fail_setup<S>(conn: &Connection<S>, message: &str) {
    let _ = conn.push(std::borrow::Cow::Owned(protocol::setup_error(message)));
    let _ = conn.close(close_code::SESSION_SETUP_FAILED, "Uncaught exception during session setup");
}

pub(super) fn internal_error() -> Response {
    let mut response = Response::new(bytes::Bytes::from_static(b"Internal Server Error"));
    *response.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
    response
}
