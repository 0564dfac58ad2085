//! [`Directory`]: the live instances of the process, one mailbox per `(agent, name)`, and what
//! every instance's host shares (classes, env, limits, the store's group commit, counts);
//! [`AgentClass`]: an agent type with its type erased, as the directory starts instances of it.

use std::any::TypeId;
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::Notify;

use crate::cluster::Cluster;
use crate::env::Env;
use crate::instance::connection::ConnectionKey;
use crate::instance::event::Event;
use crate::instance::shared::Instance;
use crate::limits::Limits;
use crate::sql::Databases;
use crate::storage::AlarmSlot;
use crate::storage::durability::{GroupCommit, OutputGate, Settled, WriteSeq};
use crate::storage::wakeups::Wakeups;
use crate::sync::lock;

/// A type-erased agent class: its route name and how to start an instance of it.
#[derive(Clone, Copy)]
pub(crate) struct AgentClass {
    pub(crate) name: &'static str,
    pub(crate) type_name: &'static str,
    pub(crate) type_id: fn() -> TypeId,
    /// Starts the host task of a new instance (a hibernated one is started by its mailbox).
    pub(crate) spawn: fn(Arc<Directory>, Arc<Instance>),
    /// Whether frames wait for the agent's writes (`Durability::Confirmed`).
    pub(crate) confirmed_writes: bool,
}

impl fmt::Debug for AgentClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentClass")
            .field("name", &self.name)
            .field("type", &self.type_name)
            .finish()
    }
}
/// The instances of one server: found by `(class, name)`, started on their first event, and
/// what their hosts share. Everything below the server reaches the rest of the process
/// through it.
pub(crate) struct Directory {
    /// The hosted agent classes, by route name.
    pub(crate) classes: HashMap<&'static str, AgentClass>,
    pub(crate) env: Env,
    pub(crate) limits: Limits,
    /// The store, its group commit and the output gate's clock.
    pub(crate) commits: Arc<GroupCommit>,
    /// When each instance next has an alarm due.
    pub(crate) wakeups: Arc<Wakeups>,
    /// Every instance's SQL database.
    pub(crate) databases: Arc<Databases>,
    /// The runtime the instances' tasks run on (a hibernated one may be woken from any
    /// thread: the parking lot's).
    pub(crate) runtime: tokio::runtime::Handle,
    /// Instances whose struct is in memory (not hibernated).
    pub(crate) awake_instances: AtomicUsize,
    /// Instances asleep with open connections.
    pub(crate) hibernated_instances: AtomicUsize,
    /// Cluster mode: the node's part of the cluster (PostgreSQL, its lease, its links).
    pub(crate) cluster: Option<Arc<Cluster>>,
    /// The HTTP client of agents' MCP connections, made on first use (`mcp::http`).
    pub(crate) mcp_http: OnceLock<Result<reqwest::Client, String>>,
    live: Mutex<HashMap<&'static str, Entries>>,
    /// Set when the server shuts down: no new instance starts.
    closing: AtomicBool,
    /// Instances running or hibernated: their host tasks, and the records hibernated ones
    /// left in their mailboxes.
    hosts: AtomicUsize,
    host_ended: Notify,
    next_key: AtomicU64,
    /// The last write of instances that left memory before it was durable: a new instance
    /// of the same name holds its frames behind it, since it may read what it wrote.
    departed: Mutex<HashMap<(&'static str, Arc<str>), WriteSeq>>,
}

/// Departed writes kept before the settled ones are swept out.
const DEPARTED_SWEEP: usize = 1024;

/// The live instances of one agent class, by name.
type Entries = HashMap<Arc<str>, Arc<Instance>>;

impl Directory {
    pub(crate) fn new(
        classes: HashMap<&'static str, AgentClass>,
        env: Env,
        limits: Limits,
        commits: Arc<GroupCommit>,
        databases: Arc<Databases>,
        cluster: Option<Arc<Cluster>>,
    ) -> Self {
        Self {
            classes,
            env,
            limits,
            commits,
            databases,
            cluster,
            runtime: tokio::runtime::Handle::current(),
            wakeups: Arc::default(),
            awake_instances: AtomicUsize::new(0),
            hibernated_instances: AtomicUsize::new(0),
            mcp_http: OnceLock::new(),
            live: Mutex::default(),
            closing: AtomicBool::new(false),
            hosts: AtomicUsize::new(0),
            host_ended: Notify::new(),
            next_key: AtomicU64::new(1),
            departed: Mutex::default(),
        }
    }

    /// A new key for a connection, unique within the process.
    pub(crate) fn next_connection_key(&self) -> ConnectionKey {
        self.next_key.fetch_add(1, Ordering::Relaxed)
    }

    /// Counts a running or hibernated instance until the returned guard drops.
    pub(crate) fn host_started(self: &Arc<Self>) -> HostCount {
        self.hosts.fetch_add(1, Ordering::AcqRel);
        HostCount { directory: self.clone() }
    }

    /// Instance `name`, started if it is not live; `None` when it is not live and
    /// `max_instances` are.
    fn entry(self: &Arc<Self>, class: &AgentClass, name: &str) -> Option<Arc<Instance>> {
        let mut live = lock(&self.live);
        let entry = live.get(class.name).and_then(|instances| instances.get(name));
        if let Some(instance) = entry.filter(|instance| !instance.mailbox.is_closed()) {
            return Some(instance.clone());
        }
        if self.closing.load(Ordering::Acquire) {
            tracing::debug!(agent = class.name, name, "not starting an instance: shutting down");
            return None;
        }
        let count: usize = live.values().map(HashMap::len).sum();
        if count >= self.limits.max_instances {
            tracing::warn!(
                agent = class.name,
                name,
                live = count,
                "refusing a new instance: max_instances reached"
            );
            return None;
        }
        let name: Arc<str> = name.into();
        // Its last unflushed write, if still pending (one lost since holds nothing back).
        let departed = lock(&self.departed).remove(&(class.name, name.clone()));
        let after = departed.filter(|&seq| self.commits.settled(seq) == Settled::Pending);
        let after = after.unwrap_or(0);
        let gate = OutputGate::new(self.commits.clone(), class.confirmed_writes, after);
        let alarm = AlarmSlot::new(self.wakeups.clone());
        let instance = Arc::new(Instance::new(class.name, name.clone(), gate, alarm, &self.limits));
        (class.spawn)(self.clone(), instance.clone());
        live.entry(class.name).or_default().insert(name, instance.clone());
        Some(instance)
    }

    /// Delivers `event` to instance `name` and returns the instance that took it (for the
    /// sender's later events). Waits while its mailbox is full (backpressure).
    pub(crate) async fn dispatch(
        self: &Arc<Self>,
        class: &AgentClass,
        name: &str,
        mut event: Event,
    ) -> Option<Arc<Instance>> {
        // A retry only happens when an instance left memory between lookup and send.
        for _ in 0..3 {
            let instance = self.entry(class, name)?;
            match instance.send(event).await {
                Ok(()) => return Some(instance),
                Err(returned) => event = returned,
            }
        }
        tracing::error!(agent = class.name, name, "instance did not accept the event");
        None
    }

    /// Delivers `event` to instance `name` if it is live here; never starts one. Returns
    /// whether it was delivered.
    pub(crate) async fn dispatch_live(
        &self,
        class: &'static str,
        name: &str,
        event: Event,
    ) -> bool {
        let instance =
            lock(&self.live).get(class).and_then(|instances| instances.get(name)).cloned();
        match instance {
            Some(instance) => instance.send(event).await.is_ok(),
            None => false,
        }
    }

    /// Sends every live instance the event `make` builds, without waiting (a full mailbox
    /// has events coming, whose turns look for themselves).
    pub(crate) fn tell_all(&self, make: impl Fn() -> Event) {
        let live: Vec<_> = lock(&self.live).values().flat_map(HashMap::values).cloned().collect();
        for instance in live {
            let _ = instance.try_send(make());
        }
    }

    /// Removes an idle instance, only if the table's entry is this instance and nothing is
    /// queued: its mailbox closes, so whoever still holds the instance is refused and comes
    /// back to the table for a new one. Without an entry (shutdown cleared the table) the
    /// instance stays to run what is queued.
    pub(crate) fn try_evict(
        &self,
        class: &'static str,
        name: &str,
        instance: &Arc<Instance>,
    ) -> bool {
        let mut live = lock(&self.live);
        let Some(instances) = live.get_mut(class) else { return false };
        let idle = instances
            .get(name)
            .is_some_and(|entry| Arc::ptr_eq(entry, instance) && instance.mailbox.close_if_empty());
        if idle && let Some((name, _)) = instances.remove_entry(name) {
            // A table that emptied gives its room back (a quarter full, halved: each
            // shrink follows as many removals as it moves entries).
            if instances.capacity() > 64 && instances.len() < instances.capacity() / 4 {
                instances.shrink_to(instances.len() * 2);
            }
            let last = instance.gate.last_write();
            let pending = |seq: WriteSeq| self.commits.settled(seq) == Settled::Pending;
            if pending(last) {
                let mut departed = lock(&self.departed);
                if departed.len() >= DEPARTED_SWEEP {
                    departed.retain(|_, last| pending(*last));
                }
                departed.insert((class, name), last);
            }
        }
        idle
    }

    /// Runs for the server's life: when the store gives up on writes, wakes every live
    /// instance that made some of them (or may have: relaxed durability), so it restarts from
    /// what is durable even with no event of its own coming.
    pub(crate) async fn restart_after_losses(self: Arc<Self>) {
        let mut seen = self.commits.loss_count();
        loop {
            let now = self.commits.next_loss(seen).await;
            let runs = self.commits.lost_runs(seen);
            seen = now;
            let affected: Vec<_> = lock(&self.live)
                .values()
                .flat_map(HashMap::values)
                .filter(|instance| {
                    let gate = &instance.gate;
                    let pending = gate.last_write();
                    runs.iter().any(|(after, ..)| !gate.is_confirmed() || pending > *after)
                })
                .cloned()
                .collect();
            for instance in affected {
                // A full mailbox has events coming: their turn looks at the losses itself.
                let _ = instance.try_send(Event::StorageLost);
            }
        }
    }

    /// From now on no instance starts (shutdown); live ones still get their events.
    pub(crate) fn close(&self) {
        self.closing.store(true, Ordering::Release);
    }

    /// Forgets every instance (shutdown), then waits up to `wait` for them to end: once their
    /// sockets are gone too, each runs what is queued and ends. Returns whether they all did.
    pub(crate) async fn clear(&self, wait: Duration) -> bool {
        let forgotten = std::mem::take(&mut *lock(&self.live));
        for instance in forgotten.values().flat_map(HashMap::values) {
            instance.mailbox.forget();
        }
        drop(forgotten);
        let ended = tokio::time::timeout(wait, async {
            loop {
                let ended = self.host_ended.notified();
                tokio::pin!(ended);
                ended.as_mut().enable();
                if self.hosts.load(Ordering::Acquire) == 0 {
                    return;
                }
                ended.await;
            }
        });
        if ended.await.is_err() {
            tracing::warn!(
                hosts = self.hosts.load(Ordering::Acquire),
                "shutdown: instances still busy after {wait:?}"
            );
            return false;
        }
        true
    }
}

/// One running host task; dropping it counts the task out.
pub(crate) struct HostCount {
    directory: Arc<Directory>,
}

impl HostCount {
    pub(crate) fn directory(&self) -> &Arc<Directory> {
        &self.directory
    }
}

impl Drop for HostCount {
    fn drop(&mut self) {
        self.directory.hosts.fetch_sub(1, Ordering::AcqRel);
        self.directory.host_ended.notify_waiters();
    }
}
