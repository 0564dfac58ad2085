//! The live instances of the process: one mailbox per `(agent, name)`, and what an instance's
//! sockets share with it outside its turns.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use crate::auto_response::AutoResponse;
use crate::connection::lock;
use crate::corks::Corks;
use crate::host::Event;
use crate::registry::AgentClass;
use crate::server::Shared;
use crate::storage::InstanceKeys;
use crate::storage::durability::OutputGate;

/// What one instance shares with its connections and socket tasks. It lives as long as the
/// instance's host task, hibernation included, so the auto-response survives hibernation.
pub(crate) struct Instance {
    /// The instance name (`connection.server`).
    pub(crate) name: Arc<str>,
    /// Where the instance's data lives in the store.
    pub(crate) keys: InstanceKeys,
    /// The output gate: frames wait for the instance's writes to be durable.
    pub(crate) gate: OutputGate,
    /// Answered by socket tasks without waking the instance.
    pub(crate) auto_response: AutoResponse,
    /// The connections its turn sent to, written when its task yields.
    pub(crate) corks: Corks,
    /// The limits its connections check (here, not in each connection).
    pub(crate) max_connection_state_size: usize,
    pub(crate) max_outbox_bytes: usize,
}

/// A live instance as the table keeps it.
struct Entry {
    mailbox: mpsc::Sender<Event>,
    instance: Arc<Instance>,
}

/// The entries of one agent class's live instances, by name.
type Entries = HashMap<Arc<str>, Entry>;

#[derive(Default)]
pub(crate) struct Instances {
    by_class: Mutex<HashMap<&'static str, Entries>>,
    /// Set when the server shuts down: no new instance starts.
    closing: AtomicBool,
}

impl Instances {
    /// The mailbox of instance `name`, starting the instance if it is not live; `None` when
    /// it is not live and `max_instances` are.
    fn entry(
        &self,
        class: &AgentClass,
        name: &str,
        shared: &Arc<Shared>,
    ) -> Option<(mpsc::Sender<Event>, Arc<Instance>)> {
        let mut by_class = lock(&self.by_class);
        let live = by_class.get(class.name).and_then(|instances| instances.get(name));
        if let Some(entry) = live.filter(|entry| !entry.mailbox.is_closed()) {
            return Some((entry.mailbox.clone(), entry.instance.clone()));
        }
        if self.closing.load(Ordering::Acquire) {
            tracing::debug!(agent = class.name, name, "not starting an instance: shutting down");
            return None;
        }
        let live: usize = by_class.values().map(HashMap::len).sum();
        if live >= shared.limits.max_instances {
            tracing::warn!(
                agent = class.name,
                name,
                live,
                "refusing a new instance: max_instances reached"
            );
            return None;
        }
        let name: Arc<str> = name.into();
        let instance = Arc::new(Instance {
            keys: InstanceKeys::new(class.name, &name),
            name: name.clone(),
            gate: OutputGate::new(shared.commits.clone(), class.confirmed_writes),
            auto_response: AutoResponse::default(),
            corks: Corks::default(),
            max_connection_state_size: shared.limits.max_connection_state_size,
            max_outbox_bytes: shared.limits.max_outbox_bytes,
        });
        let mailbox = (class.spawn)(shared.clone(), name.clone(), instance.clone());
        let entry = Entry { mailbox: mailbox.clone(), instance: instance.clone() };
        by_class.entry(class.name).or_default().insert(name, entry);
        Some((mailbox, instance))
    }

    /// Delivers `event` to instance `name` and returns the mailbox that took it (for the
    /// sender's later events) and the instance. Waits while the mailbox is full (backpressure).
    pub(crate) async fn dispatch(
        &self,
        class: &AgentClass,
        name: &str,
        shared: &Arc<Shared>,
        mut event: Event,
    ) -> Option<(mpsc::Sender<Event>, Arc<Instance>)> {
        // A retry only happens when an instance left memory between lookup and send.
        for _ in 0..3 {
            let (mailbox, instance) = self.entry(class, name, shared)?;
            match mailbox.send(event).await {
                Ok(()) => return Some((mailbox, instance)),
                Err(mpsc::error::SendError(returned)) => event = returned,
            }
        }
        tracing::error!(agent = class.name, name, "instance did not accept the event");
        None
    }

    /// Removes an idle instance, only if the table's entry is this instance's, nothing but
    /// the table holds its mailbox and nothing is queued: no connection task or request can
    /// then reach the dropped instance. Without an entry (shutdown cleared the table) the
    /// instance stays to run what is queued, and ends when its last sender is gone.
    pub(crate) fn try_evict(
        &self,
        class: &'static str,
        name: &str,
        instance: &Arc<Instance>,
        mailbox: &mpsc::Receiver<Event>,
    ) -> bool {
        let mut by_class = lock(&self.by_class);
        let Some(instances) = by_class.get_mut(class) else { return false };
        let idle = instances.get(name).is_some_and(|entry| {
            Arc::ptr_eq(&entry.instance, instance)
                && entry.mailbox.strong_count() == 1
                && mailbox.is_empty()
        });
        if idle {
            instances.remove(name);
        }
        idle
    }

    /// From now on no instance starts (shutdown); live ones still get their events.
    pub(crate) fn close(&self) {
        self.closing.store(true, Ordering::Release);
    }

    /// Forgets every instance (shutdown): once their sockets are gone too, each host task
    /// runs what is queued and ends.
    pub(crate) fn clear(&self) {
        lock(&self.by_class).clear();
    }
}

#[cfg(any(test, feature = "bench"))]
impl Instance {
    /// Instance "room" on a memory store, outside any server, with the default limits (its
    /// flusher needs a tokio runtime).
    pub(crate) fn detached() -> Arc<Self> {
        use crate::storage::MemoryStore;
        use crate::storage::durability::GroupCommit;
        let commits = Arc::new(GroupCommit::start(Arc::new(MemoryStore::new())));
        let limits = crate::server::Limits::default();
        Arc::new(Self {
            keys: InstanceKeys::new("test", "room"),
            name: "room".into(),
            gate: OutputGate::new(commits, true),
            auto_response: AutoResponse::default(),
            corks: Corks::default(),
            max_connection_state_size: limits.max_connection_state_size,
            max_outbox_bytes: limits.max_outbox_bytes,
        })
    }
}
