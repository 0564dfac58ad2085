//! The instance host: one task per live `(agent, name)` that owns the agent struct and its
//! connections and runs events one turn at a time, in mailbox order.

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use futures_util::FutureExt;
use tokio::sync::{mpsc, oneshot};

use crate::agent::Agent;
use crate::connection::{Connection, ConnectionKey, ConnectionParts, close_code};
use crate::connections::ConnectionTable;
use crate::context::Context;
use crate::error::Error;
use crate::instances::Instance;
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

/// Most yields an instance's task makes with its sends corked before it writes them.
const MAX_HOLDS: u8 = 2;

/// Yields once, to the back of the worker's run queue: the tasks already woken run first,
/// and the driver is not polled for more (a task woken while it runs is queued last).
async fn yield_to_woken() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if std::mem::replace(&mut yielded, true) {
            return std::task::Poll::Ready(());
        }
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    })
    .await;
}

/// Starts the host task of instance `name` and returns its mailbox.
pub(crate) fn spawn<A: Agent>(
    shared: Arc<Shared>,
    name: Arc<str>,
    instance: Arc<Instance>,
) -> mpsc::Sender<Event> {
    let (tx, rx) = mpsc::channel(shared.limits.mailbox_capacity);
    let hosted = shared.host_started();
    let corked = instance.clone();
    let mut run = Box::pin(async move {
        let _hosted = hosted; // counted until the task ends
        let host = Host::<A> {
            name,
            shared,
            instance,
            awake: None,
            asleep: Default::default(),
            hibernated: None,
            reply: None,
        };
        host.run(rx).await;
    });
    // Every poll of the instance's task ends by writing what its turns sent (corking), unless
    // the task yields to gather more (`Corks::hold`); then the next poll does.
    tokio::spawn(std::future::poll_fn(move |cx| corked.corks.poll(run.as_mut(), cx)));
    tx
}

struct Host<A: Agent> {
    name: Arc<str>,
    shared: Arc<Shared>,
    instance: Arc<Instance>,
    /// The agent and its context; `None` before the first event, while hibernated, and after
    /// a failed `on_start`.
    awake: Option<Awake<A>>,
    /// The connections while not awake; moved into the context on waking.
    asleep: ConnectionTable<A::ConnectionState>,
    /// Counts this instance as hibernated while it is.
    hibernated: Option<Tally>,
    /// The answer to the current HTTP request or in-process call, sent once the turn (its
    /// `on_state_changed` included) is over and its writes are durable.
    reply: Option<Box<dyn FnOnce() + Send>>,
}

/// A started instance: `on_start` succeeded.
struct Awake<A: Agent> {
    agent: A,
    ctx: Context<A>,
    _counted: Tally,
}

impl<A: Agent> Host<A> {
    async fn run(mut self, mut mailbox: mpsc::Receiver<Event>) {
        let idle_after = self.shared.limits.hibernate_after;
        // One timer for the instance's life: it fires at most once per `idle_after`, and only
        // then is it moved to the last event's deadline (no timer work per event).
        let idle = tokio::time::sleep(idle_after);
        tokio::pin!(idle);
        // When the instance last went idle, and whether it handled events since: the clock is
        // read when it goes idle, not per event.
        let mut last_event = Instant::now();
        let mut handled = false;
        // How often the task yielded with its sends corked since it last waited for an event,
        // and whether events came in since its last yield.
        let mut holds = 0u8;
        let mut busy = false;
        loop {
            if mailbox.is_empty() {
                // Yield so the other sockets' messages join this pass's writes: first behind
                // the socket tasks already woken (what the last look at the sockets found),
                // then, if that brought messages, once more behind a fresh look (tokio's
                // `yield_now` waits for the driver's next poll).
                if (holds == 0 || (holds < MAX_HOLDS && busy)) && self.instance.corks.hold() {
                    holds += 1;
                    busy = false;
                    if holds == 1 {
                        yield_to_woken().await;
                    } else {
                        tokio::task::yield_now().await;
                    }
                    continue;
                }
                holds = 0;
                if std::mem::take(&mut handled) {
                    last_event = Instant::now();
                }
                // About to wait: the corks keep little for the next turn.
                self.instance.corks.idle();
            }
            let event = tokio::select! {
                biased;
                event = mailbox.recv() => match event {
                    Some(event) => event,
                    None => break,
                },
                () = &mut idle, if self.may_leave_memory() => {
                    let deadline = last_event + idle_after;
                    if Instant::now() < deadline {
                        idle.as_mut().reset(deadline.into());
                        continue;
                    }
                    if self.connection_count() == 0 {
                        let evicted = self.shared.instances.try_evict(
                            A::NAME,
                            &self.name,
                            &self.instance,
                            &mailbox,
                        );
                        if evicted {
                            break;
                        }
                        last_event = Instant::now(); // a caller holds the mailbox: wait more
                    } else {
                        self.hibernate();
                    }
                    continue;
                }
            };
            handled = true;
            busy = true;
            if let Err(panic) = AssertUnwindSafe(self.handle(event)).catch_unwind().await {
                let error = Error::msg(format!("a hook panicked: {}", panic_message(&*panic)));
                tracing::error!(agent = A::NAME, name = %self.name, "{error}");
                if let Some(Awake { agent, ctx, .. }) = self.awake.as_mut() {
                    report(agent, ctx, None, error).await;
                }
            }
            if let Some(awake) = self.awake.as_mut() {
                awake.ctx.current = None;
                run_state_changes(awake).await;
            }
            if let Some(reply) = self.reply.take() {
                self.after_gate(reply);
            }
        }
        tracing::debug!(agent = A::NAME, name = %self.name, "instance left memory");
    }

    /// Whether the idle timer applies: an instance with no connections leaves memory, one with
    /// connections hibernates (unless the agent opted out).
    fn may_leave_memory(&self) -> bool {
        match &self.awake {
            Some(awake) => A::HIBERNATE || awake.ctx.connections.is_empty(),
            None => self.asleep.is_empty(),
        }
    }

    fn connection_count(&self) -> usize {
        match &self.awake {
            Some(awake) => awake.ctx.connections.len(),
            None => self.asleep.len(),
        }
    }

    fn has_connection(&self, key: ConnectionKey) -> bool {
        match &self.awake {
            Some(awake) => awake.ctx.connections.get(key).is_some(),
            None => self.asleep.get(key).is_some(),
        }
    }

    /// Drops the agent struct and its context; the connections stay open, with their id, uri,
    /// tags, state and flags, and the next event wakes the instance.
    fn hibernate(&mut self) {
        if let Some(Awake { agent, mut ctx, .. }) = self.awake.take() {
            self.asleep = std::mem::take(&mut ctx.connections);
            drop(agent);
            // The corks' log and the links they kept for the next turn go too.
            self.instance.corks.trim();
            // Their sockets park once idle: no task and no place in tokio's reactor each.
            for conn in self.asleep.every() {
                conn.link().ask_to_park();
            }
            self.hibernated = Some(Tally::new(&self.shared, |shared| &shared.hibernated_instances));
            tracing::debug!(
                agent = A::NAME,
                name = %self.name,
                connections = self.asleep.len(),
                "instance hibernated"
            );
        }
    }

    /// Builds the agent, loads its state and runs `on_start`, unless it is awake already.
    async fn wake(&mut self) -> Result<&mut Awake<A>, Error> {
        if self.awake.is_none() {
            // The parked sockets resume before any hook can send to them.
            for conn in self.asleep.every() {
                conn.link().stay_awake();
            }
            let state = crate::context::load_state::<A>(&self.instance, &self.name)?;
            // Built before the connections move, so a panicking `create` leaves them here.
            let mut agent = A::create();
            let mut ctx =
                Context::new(self.name.clone(), self.shared.clone(), self.instance.clone(), state);
            ctx.connections = std::mem::take(&mut self.asleep);
            let started = match AssertUnwindSafe(agent.on_start(&mut ctx)).catch_unwind().await {
                Ok(started) => started,
                Err(panic) => {
                    Err(Error::msg(format!("a hook panicked: {}", panic_message(&*panic))))
                }
            };
            if let Err(e) = started {
                let error = Error::msg(format!("on_start failed: {e}"));
                report(&mut agent, &mut ctx, None, error).await;
                self.asleep = std::mem::take(&mut ctx.connections);
                return Err(e);
            }
            let counted = Tally::new(&self.shared, |shared| &shared.awake_instances);
            self.awake = Some(Awake { agent, ctx, _counted: counted });
            self.hibernated = None;
        }
        Ok(self.awake.as_mut().expect("awake"))
    }

    async fn handle(&mut self, event: Event) {
        match event {
            Event::Connect(request) => {
                let ConnectRequest { parts, conn_ctx } = *request;
                let conn = Connection::new(parts, self.instance.clone());
                let awake = match self.wake().await {
                    Ok(awake) => awake,
                    Err(e) => return fail_setup(&conn, &e.to_string()),
                };
                awake.ctx.current = Some(conn.clone());
                let connect = AssertUnwindSafe(connect(awake, &conn, &conn_ctx)).catch_unwind();
                if let Err(panic) = connect.await {
                    let error = format!("a hook panicked: {}", panic_message(&*panic));
                    tracing::error!(agent = A::NAME, name = awake.ctx.name(), "{error}");
                    if awake.ctx.connections.get(conn.key()).is_some() {
                        // `on_connect` panicked: the connection stands, like after an error.
                        report(&mut awake.agent, &mut awake.ctx, Some(&conn), Error::msg(error))
                            .await;
                    } else {
                        // `connection_tags` or a predicate panicked: refuse the connection.
                        fail_setup(&conn, &error);
                    }
                }
            }
            Event::Message { key, message } => {
                if !self.has_connection(key) {
                    return;
                }
                let Ok(Awake { agent, ctx, .. }) = self.wake().await else { return };
                let Some(conn) = ctx.connections.get(key) else { return };
                // A connection the agent closed (say, refused in `on_connect`) is not heard:
                // what it sent before its close frame is dropped.
                if conn.is_closing() {
                    return;
                }
                let conn = conn.clone();
                ctx.current = Some(conn.clone());
                match message.as_text().and_then(ClientFrame::parse) {
                    Some(ClientFrame::State(next)) => {
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
            Event::Close { key, code, reason, was_clean } => {
                if !self.has_connection(key) {
                    return;
                }
                let woken = self.wake().await.is_ok();
                let table = match &mut self.awake {
                    Some(awake) => &mut awake.ctx.connections,
                    None => &mut self.asleep,
                };
                let Some(conn) = table.remove(key) else { return };
                conn.mark_closed();
                let (true, Some(Awake { agent, ctx, .. })) = (woken, &mut self.awake) else {
                    return;
                };
                ctx.current = Some(conn.clone());
                let result = agent.on_close(ctx, &conn, code, &reason, was_clean).await;
                if let Err(e) = result {
                    report(agent, ctx, Some(&conn), e).await;
                }
            }
            Event::Error { key, error } => {
                if !self.has_connection(key) {
                    return;
                }
                let Ok(Awake { agent, ctx, .. }) = self.wake().await else { return };
                let Some(conn) = ctx.connections.get(key).cloned() else { return };
                report(agent, ctx, Some(&conn), error).await;
            }
            Event::Call { call, reply } => {
                let outcome = match self.wake().await {
                    Ok(Awake { agent, ctx, .. }) => {
                        match AssertUnwindSafe(agent.call(ctx, call)).catch_unwind().await {
                            Ok(outcome) => outcome,
                            Err(panic) => CallOutcome::Error(format!(
                                "a hook panicked: {}",
                                panic_message(&*panic)
                            )),
                        }
                    }
                    Err(e) => CallOutcome::Error(format!("the agent could not start: {e}")),
                };
                self.reply = Some(Box::new(move || {
                    let _ = reply.send(outcome);
                }));
            }
            Event::Request { request, reply } => {
                let response = match self.wake().await {
                    Ok(Awake { agent, ctx, .. }) => match agent.on_request(ctx, *request).await {
                        Ok(response) => response,
                        Err(e) => {
                            report(agent, ctx, None, e).await;
                            internal_error()
                        }
                    },
                    Err(_) => internal_error(),
                };
                self.reply = Some(Box::new(move || {
                    let _ = reply.send(response);
                }));
            }
        }
    }

    /// Runs `answer` once every write made so far is durable: at once when it is, otherwise
    /// from a task, so the instance goes on with its next event meanwhile.
    fn after_gate(&self, answer: Box<dyn FnOnce() + Send>) {
        let seq = self.instance.gate.pending();
        if self.instance.gate.is_settled(seq) {
            return answer();
        }
        let instance = self.instance.clone();
        tokio::spawn(async move {
            instance.gate.settled(seq).await;
            answer();
        });
    }
}

/// Counts an instance in one of the server's gauges (awake, hibernated) while it lives.
struct Tally {
    shared: Arc<Shared>,
    gauge: fn(&Shared) -> &AtomicUsize,
}

impl Tally {
    fn new(shared: &Arc<Shared>, gauge: fn(&Shared) -> &AtomicUsize) -> Self {
        gauge(shared).fetch_add(1, Ordering::AcqRel);
        Self { shared: shared.clone(), gauge }
    }
}

impl Drop for Tally {
    fn drop(&mut self) {
        (self.gauge)(&self.shared).fetch_sub(1, Ordering::AcqRel);
    }
}

/// Sets a new connection up: tags, readonly and protocol flags, the table, the connect frames,
/// then `on_connect`.
async fn connect<A: Agent>(
    awake: &mut Awake<A>,
    conn: &Connection<A::ConnectionState>,
    conn_ctx: &ConnectionContext,
) {
    let Awake { agent, ctx, .. } = awake;
    let tags = match agent.connection_tags(ctx, conn, conn_ctx).await {
        Ok(user_tags) => crate::tags::prepare(conn.id_arc(), user_tags),
        Err(e) => Err(e.to_string()),
    };
    match tags {
        Ok(tags) => conn.set_tags(tags),
        Err(rule) => {
            tracing::warn!(
                agent = A::NAME,
                name = ctx.name(),
                connection = conn.id(),
                "refusing connection: {rule}"
            );
            return fail_setup(conn, &rule);
        }
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
        Err(e) => {
            tracing::warn!(
                agent = A::NAME,
                name = ctx.name(),
                connection = conn.id(),
                "refusing connection: {e}"
            );
            return fail_setup(conn, &e.to_string());
        }
    };
    conn.set_protocol_enabled(protocol);
    ctx.connections.insert(conn.clone());
    if protocol {
        send_connect_frames(ctx, conn);
    }
    if let Err(e) = agent.on_connect(ctx, conn, conn_ctx).await {
        report(agent, ctx, Some(conn), e).await;
    }
}

/// `on_state_changed` for every change the last event made (and the changes those make,
/// a bounded number of rounds).
async fn run_state_changes<A: Agent>(awake: &mut Awake<A>) {
    const ROUNDS: usize = 16;
    let Awake { agent, ctx, .. } = awake;
    for _ in 0..ROUNDS {
        if ctx.changes.is_empty() {
            return;
        }
        for change in std::mem::take(&mut ctx.changes) {
            let source = match &change.source {
                Some(conn) => StateSource::Connection(conn),
                None => StateSource::Server,
            };
            let hook = agent.on_state_changed(ctx, &change.state, source);
            let error = match AssertUnwindSafe(hook).catch_unwind().await {
                Ok(Ok(())) => continue,
                Ok(Err(e)) => e,
                Err(panic) => Error::msg(format!("a hook panicked: {}", panic_message(&*panic))),
            };
            report(agent, ctx, None, error).await;
        }
    }
    tracing::error!(
        agent = A::NAME,
        name = ctx.name(),
        "on_state_changed keeps changing the state; stopped after {ROUNDS} rounds"
    );
    ctx.changes.clear();
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
    let _ = conn.push(std::borrow::Cow::Owned(frame.into()));
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

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::yield_to_woken;

    /// The instance's first hold lets the socket tasks already woken run before it goes on.
    #[test]
    fn a_task_yielding_to_the_woken_runs_after_them() {
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(1).build().expect("runtime");
        let order = Arc::new(Mutex::new(Vec::new()));
        let log = order.clone();
        runtime.block_on(async move {
            tokio::spawn(async move {
                for name in ["socket 1", "socket 2"] {
                    let log = log.clone();
                    tokio::spawn(async move { log.lock().unwrap().push(name) });
                }
                yield_to_woken().await;
                log.lock().unwrap().push("instance");
            })
            .await
            .expect("ran");
        });
        let order = order.lock().unwrap();
        assert_eq!(order.len(), 3);
        assert_eq!(order[2], "instance", "{order:?}");
    }
}
