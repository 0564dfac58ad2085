//! The instance host: one task per live `(agent, name)` that owns the agent struct and its
//! connections and runs events one turn at a time, in mailbox order.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use crate::agent::Agent;
use crate::agent::context::{Context, Kept};
use crate::error::Error;
use crate::instance::connection::{Connection, ConnectionKey};
use crate::instance::connections::ConnectionTable;
use crate::instance::directory::{Directory, HostCount};
use crate::instance::event::Event;
use crate::instance::mailbox::Sleeper;
use crate::instance::shared::Instance;
use crate::mcp::McpClients;
use crate::storage::durability::Settled;
use crate::wire::protocol;
use cluster::ClusterSide;

mod alarms;
mod cluster;
mod panics;
mod turn;

use panics::caught;
use turn::{report, run_state_changes};

/// A turn's answer to an HTTP request or in-process call, told why if its writes were lost.
type Reply = Box<dyn FnOnce(Option<Arc<str>>) + Send>;

/// Most restarts in a row after a turn whose SQL writes failed.
const MAX_RESTARTS: usize = 3;

/// The places of a mailbox queue an instance frees each time it goes idle (larger ones, grown
/// by bursts, stay until it is idle for `hibernate_after`).
const SMALL_QUEUE: usize = 16;

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

/// Starts the host task of a new instance.
pub(crate) fn spawn<A: Agent>(directory: Arc<Directory>, instance: Arc<Instance>) {
    let hosted = directory.host_started();
    // Writes lost before the instance started are none of its business.
    let seen_losses = directory.commits.loss_count();
    let host = Host::<A> {
        name: instance.name.clone(),
        directory,
        instance,
        awake: None,
        asleep: ConnectionTable::default(),
        mcp: McpClients::default(),
        hibernated: None,
        reply: None,
        seen_losses,
        cluster: None,
    };
    start(host, hosted);
}

/// Runs `host` in a task of its own, counted by `hosted` until it ends.
fn start<A: Agent>(mut host: Host<A>, hosted: HostCount) {
    let corked = host.instance.clone();
    let runtime = host.directory.runtime.clone();
    // The block holds the host once: `run` borrows it (a method taking it by value would
    // keep a second copy in the task).
    let mut run = Box::pin(async move {
        host.run().await;
        drop(hosted); // counted until the task ends
    });
    // Every poll of the instance's task ends by writing what its turns sent (corking), unless
    // the task yields to gather more (`Corks::hold`); then the next poll does. Spawned through
    // the server's runtime: a hibernated instance may be woken from any thread.
    runtime.spawn(std::future::poll_fn(move |cx| corked.corks.poll(run.as_mut(), cx)));
}

/// A hibernated instance as its task leaves it in the mailbox: its connections and what the
/// host must remember. The next event starts a task from it ([`Sleeper::wake`]).
/// (It stays counted as hibernated: its tally was kept, not dropped, and the woken task
/// takes it on.)
struct Sleeping<A: Agent> {
    /// Counts the instance as live (shutdown waits for it) while it has no task.
    hosted: HostCount,
    connections: ConnectionTable<A::ConnectionState>,
    /// Its MCP servers: their connections stay while it hibernates.
    mcp: McpClients,
    seen_losses: usize,
    cluster: Option<Box<ClusterSide>>,
}

impl<A: Agent> Sleeper<Instance> for Sleeping<A> {
    fn wake(self: Box<Self>, instance: Arc<Instance>) {
        let Sleeping { hosted, connections, mcp, seen_losses, cluster } = *self;
        let directory = hosted.directory().clone();
        let hibernated = Some(Tally::kept(&directory, |directory| &directory.hibernated_instances));
        let host = Host::<A> {
            name: instance.name.clone(),
            directory,
            instance,
            awake: None,
            asleep: connections,
            mcp,
            hibernated,
            reply: None,
            seen_losses,
            cluster,
        };
        start(host, hosted);
    }
}

struct Host<A: Agent> {
    name: Arc<str>,
    directory: Arc<Directory>,
    instance: Arc<Instance>,
    /// The agent and its context; `None` before the first event, while hibernated, and after
    /// a failed `on_start`.
    awake: Option<Awake<A>>,
    /// The connections while not awake; moved into the context on waking.
    asleep: ConnectionTable<A::ConnectionState>,
    /// The MCP servers while not awake; moved into the context on waking.
    mcp: McpClients,
    /// Counts this instance as hibernated while it is.
    hibernated: Option<Tally>,
    /// The answer to the current HTTP request or in-process call, sent once the turn (its
    /// `on_state_changed` included) is over and its writes are durable; told why, if they
    /// were lost instead.
    reply: Option<Reply>,
    /// How many runs of lost writes this instance has looked at.
    seen_losses: usize,
    /// Cluster mode: whether this node owns the instance, or relays to the node that does.
    cluster: Option<Box<ClusterSide>>,
}

/// How often the task yielded with its sends corked since it last waited for an event, and
/// whether events came in since its last yield.
#[derive(Default)]
struct Holds {
    count: u8,
    busy: bool,
}

/// A started instance: `on_start` succeeded.
struct Awake<A: Agent> {
    agent: A,
    ctx: Context<A>,
    _counted: Tally,
}

impl<A: Agent> Host<A> {
    async fn run(&mut self) {
        let instance = self.instance.clone();
        let mailbox = &instance.mailbox;
        let idle_after = self.directory.limits.hibernate_after;
        // One timer for the task's life: it fires at most once per `idle_after`, and only then
        // is it moved to the last event's deadline (no timer work per event).
        let idle = tokio::time::sleep(idle_after);
        tokio::pin!(idle);
        // When the instance last went idle, and whether it handled events since: the clock is
        // read when it goes idle, not per event.
        let mut last_event = Instant::now();
        let mut handled = false;
        let mut holds = Holds::default();
        loop {
            if mailbox.is_empty() {
                if self.hold_sends(&mut holds).await {
                    continue;
                }
                if std::mem::take(&mut handled) {
                    last_event = Instant::now();
                }
                // About to wait: the corks keep little for the next turn, the mailbox a large
                // queue only.
                self.instance.corks.idle();
                mailbox.shrink(SMALL_QUEUE);
                // Hibernated and idle: the task ends, the mailbox keeps the connections.
                if self.hibernated.is_some() && self.sleep() {
                    return;
                }
                // Forgotten by the server (shutdown): it ends with its last connection.
                if mailbox.is_forgotten()
                    && self.connection_count() == 0
                    && mailbox.close_if_empty()
                {
                    break;
                }
            }
            let event = tokio::select! {
                biased;
                event = mailbox.recv() => match event {
                    Some(event) => event,
                    None => continue, // forgotten: looked at above
                },
                () = &mut idle, if self.may_leave_memory() => {
                    let deadline = last_event + idle_after;
                    if Instant::now() < deadline {
                        mailbox.shrink(usize::MAX);
                        idle.as_mut().reset(deadline.into());
                    } else if self.connection_count() > 0 {
                        self.hibernate();
                    } else if self.directory.try_evict(A::NAME, &self.name, &self.instance) {
                        break;
                    } else {
                        last_event = Instant::now(); // events came meanwhile
                    }
                    continue;
                }
            };
            handled = true;
            holds.busy = true;
            // Boxed: a turn's future holds the largest hook's, which an idle instance's task
            // would otherwise carry for its whole life.
            mailbox.turn(Box::pin(self.turn(event))).await;
        }
        self.leave_cluster().await;
        tracing::debug!(agent = A::NAME, name = %self.name, "instance left memory");
    }

    /// Hands the hibernated instance's connections to its mailbox, for its next event to
    /// start a task from, and returns `true`: this task ends. `false` if events came meanwhile.
    fn sleep(&mut self) -> bool {
        self.asleep.shrink_to_fit();
        let record = Box::new(Sleeping::<A> {
            hosted: self.directory.host_started(),
            connections: std::mem::take(&mut self.asleep),
            mcp: std::mem::take(&mut self.mcp),
            seen_losses: self.seen_losses,
            cluster: self.cluster.take(),
        });
        match self.instance.mailbox.sleep(record) {
            Ok(()) => {
                // Still hibernated: the record's next task counts it from here.
                if let Some(tally) = self.hibernated.take() {
                    tally.keep();
                }
                true
            }
            Err(record) => {
                let Sleeping { connections, mcp, cluster, .. } = *record;
                self.asleep = connections;
                self.mcp = mcp;
                self.cluster = cluster;
                false
            }
        }
    }

    /// Yields with the turns' sends still corked, so the other sockets' messages join this
    /// pass's writes: first behind the socket tasks already woken (what the last look at the
    /// sockets found), then, if that brought messages, once more behind a fresh look (tokio's
    /// `yield_now` waits for the driver's next poll). Returns whether it yielded.
    async fn hold_sends(&mut self, holds: &mut Holds) -> bool {
        let again = holds.count == 0 || (holds.count < MAX_HOLDS && holds.busy);
        if !again || !self.instance.corks.hold() {
            holds.count = 0;
            return false;
        }
        holds.count += 1;
        holds.busy = false;
        if holds.count == 1 {
            yield_to_woken().await;
        } else {
            tokio::task::yield_now().await;
        }
        true
    }

    /// One event as a turn: its hook (a panic goes to `on_error`), the `on_state_changed`
    /// rounds it caused, then its reply once its writes are durable.
    async fn turn(&mut self, event: Event) {
        // Cluster mode: the turn runs only where the instance is owned.
        let event = match self.directory.cluster.is_some() {
            true => match self.place_event(event).await {
                Some(event) => event,
                None => return self.broadcast_mcp(),
            },
            false => event,
        };
        if self.directory.commits.loss_count() != self.seen_losses {
            // A restart may come first (its `on_start` may take a while): a connect does not
            // hold its 101 back for it.
            event.heard_late();
        }
        self.restart_if_lost().await;
        if let Some(awake) = &self.awake {
            // Its SQL statements are its own: a failure rolls back no earlier turn's.
            awake.ctx.hook_started();
        }
        if let Err(error) = caught(self.handle(event)).await {
            tracing::error!(agent = A::NAME, name = %self.name, "{error}");
            if let Some(Awake { agent, ctx, .. }) = self.awake.as_mut() {
                report(agent, ctx, None, error).await;
            }
        }
        match self.awake.as_mut() {
            Some(awake) => run_state_changes(awake).await,
            // It could not start: no SQL statement of its may hold its frames.
            None => self.instance.gate.release(),
        }
        self.broadcast_mcp();
        // The turn's SQL writes could not be kept: its answer is an error, and the instance
        // restarts from what is durable (its `on_start` committed as a turn of its own; a few
        // times at most, if that fails too).
        for _ in 0..MAX_RESTARTS {
            let Some(why) = self.instance.gate.take_failure() else { break };
            if let Some(reply) = self.reply.take() {
                reply(Some(why.clone()));
            }
            self.restart(why).await;
            match self.awake.as_mut() {
                Some(awake) => run_state_changes(awake).await,
                None => self.instance.gate.release(),
            }
        }
        if let Some(reply) = self.reply.take() {
            self.after_gate(reply);
        }
    }

    /// Whether the idle timer applies: an instance with no connections leaves memory, one with
    /// connections hibernates (unless the agent opted out).
    fn may_leave_memory(&self) -> bool {
        match &self.awake {
            Some(awake) => A::HIBERNATE || awake.ctx.connections().is_empty(),
            None => self.asleep.is_empty(),
        }
    }

    /// Sends the MCP frame to every protocol-enabled connection if the servers changed
    /// (asleep ones too: a parked socket resumes to write it).
    fn broadcast_mcp(&self) {
        let (mcp, table) = match &self.awake {
            Some(awake) => (awake.ctx.mcp_clients(), awake.ctx.connections()),
            None => (&self.mcp, &self.asleep),
        };
        if let Some(frame) = mcp.take_broadcast() {
            table.broadcast_protocol(&frame, None);
        }
    }

    fn connection_count(&self) -> usize {
        match &self.awake {
            Some(awake) => awake.ctx.connections().len(),
            None => self.asleep.len(),
        }
    }

    fn has_connection(&self, key: ConnectionKey) -> bool {
        self.connection(key).is_some()
    }

    fn connection(&self, key: ConnectionKey) -> Option<&Connection<A::ConnectionState>> {
        match &self.awake {
            Some(awake) => awake.ctx.connections().get(key),
            None => self.asleep.get(key),
        }
    }

    /// Drops the agent struct and its context; the connections stay open, with their id, uri,
    /// tags, state and flags, and the next event wakes the instance.
    fn hibernate(&mut self) {
        if let Some(Awake { agent, ctx, .. }) = self.awake.take() {
            // Nothing is left uncommitted between turns; if it were, it is committed now.
            ctx.commit_turn();
            Kept { connections: self.asleep, mcp: self.mcp } = ctx.into_kept();
            drop(agent);
            // The corks' log and the links they kept for the next turn go too.
            self.instance.corks.trim();
            // Their sockets park once idle: no task and no place in tokio's reactor each.
            for conn in self.asleep.every() {
                if let Some(link) = conn.link() {
                    link.ask_to_park();
                }
            }
            self.hibernated =
                Some(Tally::new(&self.directory, |directory| &directory.hibernated_instances));
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
                if let Some(link) = conn.link() {
                    link.stay_awake();
                }
            }
            let state = crate::agent::context::load_state::<A>(&self.instance, &self.name)?;
            // Built before the connections move, so a panicking `create` leaves them here.
            let mut agent = A::create();
            let connections = std::mem::take(&mut self.asleep);
            let mut mcp = std::mem::take(&mut self.mcp);
            // Before `on_start`, as the SDK restores them: connect to the servers on the list.
            mcp.start(&self.directory, &self.instance);
            let kept = Kept { connections, mcp };
            let mut ctx = Context::new(self.directory.clone(), self.instance.clone(), state, kept);
            let started = caught(agent.on_start(&mut ctx)).await.and_then(|started| started);
            if let Err(e) = started {
                let error = Error::msg(format!("on_start failed: {e}"));
                report(&mut agent, &mut ctx, None, error).await;
                Kept { connections: self.asleep, mcp: self.mcp } = ctx.into_kept();
                return Err(e);
            }
            // The statements of the turn's hooks after `on_start` are their own.
            ctx.hook_started();
            let counted = Tally::new(&self.directory, |directory| &directory.awake_instances);
            self.awake = Some(Awake { agent, ctx, _counted: counted });
            self.hibernated = None;
        }
        Ok(self.awake.as_mut().expect("awake"))
    }

    /// Runs `answer` once every write made so far is durable (or lost, telling it why): at
    /// once when it is, otherwise from a task, so the instance goes on with its next event
    /// meanwhile.
    fn after_gate(&self, answer: Reply) {
        let seq = self.instance.gate.pending();
        match self.instance.gate.settled_now(seq) {
            Settled::Durable => return answer(None),
            Settled::Lost(why) => return answer(Some(why)),
            Settled::Pending => {}
        }
        let instance = self.instance.clone();
        tokio::spawn(async move {
            match instance.gate.settled(seq).await {
                Settled::Lost(why) => answer(Some(why)),
                _ => answer(None),
            }
        });
    }

    /// Restarts the instance from what is durable if the store gave up on writes it made
    /// (or may have made: an agent with relaxed durability does not number its writes), as a
    /// Durable Object resets when a write fails: the agent struct is dropped and built again,
    /// its state loaded and `on_start` run, and every protocol connection is told
    /// (`cf_agent_state_error`) and sent the state as it is now. The connections stay open.
    async fn restart_if_lost(&mut self) {
        let commits = &self.directory.commits;
        let count = commits.loss_count();
        if count == self.seen_losses {
            return;
        }
        let runs = commits.lost_runs(std::mem::replace(&mut self.seen_losses, count));
        let gate = &self.instance.gate;
        let pending = gate.last_write();
        let lost = runs.into_iter().find(|(after, ..)| !gate.is_confirmed() || pending > *after);
        let Some((.., why)) = lost else { return };
        self.restart(why).await;
    }

    /// Restarts the instance from what is durable (`why`: what was lost); see
    /// [`restart_if_lost`](Self::restart_if_lost).
    async fn restart(&mut self, why: Arc<str>) {
        // Asleep or awake, its frames no longer wait for what was lost, and what it knew of
        // its alarms may be gone.
        self.instance.gate.forget_lost();
        self.instance.alarm.forget();
        let Some(Awake { agent, ctx, .. }) = self.awake.take() else {
            // Asleep: its MCP servers are read again from what is durable.
            self.mcp.reset();
            self.mcp.start(&self.directory, &self.instance);
            return;
        };
        tracing::warn!(agent = A::NAME, name = %self.name, "restarting from durable state: {why}");
        Kept { connections: self.asleep, mcp: self.mcp } = ctx.into_kept();
        // The MCP servers as stored: an add or a removal may have been lost with the writes.
        self.mcp.reset();
        drop(agent);
        self.instance.corks.trim();
        let awake = match self.wake().await {
            Ok(awake) => awake,
            Err(e) => {
                // The next event tries again; its hook is not run on the lost state meanwhile.
                tracing::error!(agent = A::NAME, name = %self.name, "restart failed: {e}");
                return;
            }
        };
        if A::HAS_STATE {
            let told = protocol::state_error(&protocol::storage_failed(&why));
            let state = match awake.ctx.state_frame() {
                Ok(state) => state,
                Err(e) => {
                    let name = &self.name;
                    tracing::error!(agent = A::NAME, %name, "after the restart, the state cannot be serialized: {e}");
                    return;
                }
            };
            for conn in awake.ctx.connections().iter(None) {
                if conn.is_protocol_enabled() {
                    let _ = conn.send(told.clone());
                    let _ = conn.send(state.clone());
                }
            }
        }
    }
}

/// Counts an instance in one of the server's gauges (awake, hibernated) while it lives.
struct Tally {
    directory: Arc<Directory>,
    gauge: fn(&Directory) -> &AtomicUsize,
}

impl Tally {
    fn new(directory: &Arc<Directory>, gauge: fn(&Directory) -> &AtomicUsize) -> Self {
        gauge(directory).fetch_add(1, Ordering::AcqRel);
        Self { directory: directory.clone(), gauge }
    }
}

impl Tally {
    /// Leaves the instance counted: a later [`kept`](Self::kept) tally takes it on.
    fn keep(self) {
        std::mem::forget(self);
    }

    /// Takes on an instance a [`keep`](Self::keep) left counted.
    fn kept(directory: &Arc<Directory>, gauge: fn(&Directory) -> &AtomicUsize) -> Self {
        Self { directory: directory.clone(), gauge }
    }
}

impl Drop for Tally {
    fn drop(&mut self) {
        (self.gauge)(&self.directory).fetch_sub(1, Ordering::AcqRel);
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
