//! The live instances of the process: one mailbox per `(agent, name)`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use crate::connection::lock;
use crate::host::Event;
use crate::registry::AgentClass;
use crate::server::Shared;

/// The mailboxes of one agent class's live instances, by name.
type Mailboxes = HashMap<Arc<str>, mpsc::Sender<Event>>;

#[derive(Default)]
pub(crate) struct Instances {
    by_class: Mutex<HashMap<&'static str, Mailboxes>>,
}

impl Instances {
    /// The mailbox of instance `name`, starting the instance if it is not live; `None` when
    /// it is not live and `max_instances` are.
    fn mailbox(
        &self,
        class: &AgentClass,
        name: &str,
        shared: &Arc<Shared>,
    ) -> Option<mpsc::Sender<Event>> {
        let mut by_class = lock(&self.by_class);
        let live = by_class.get(class.name).and_then(|instances| instances.get(name));
        if let Some(mailbox) = live.filter(|mailbox| !mailbox.is_closed()) {
            return Some(mailbox.clone());
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
        let mailbox = (class.spawn)(shared.clone(), name.clone());
        by_class.entry(class.name).or_default().insert(name, mailbox.clone());
        Some(mailbox)
    }

    /// Delivers `event` to instance `name` and returns the mailbox that took it, for the
    /// sender's later events. Waits while the mailbox is full (backpressure).
    pub(crate) async fn dispatch(
        &self,
        class: &AgentClass,
        name: &str,
        shared: &Arc<Shared>,
        mut event: Event,
    ) -> Option<mpsc::Sender<Event>> {
        // A retry only happens when an instance left memory between lookup and send.
        for _ in 0..3 {
            let mailbox = self.mailbox(class, name, shared)?;
            match mailbox.send(event).await {
                Ok(()) => return Some(mailbox),
                Err(mpsc::error::SendError(returned)) => event = returned,
            }
        }
        tracing::error!(agent = class.name, name, "instance did not accept the event");
        None
    }

    /// Removes an idle instance, only if nothing but this table holds its mailbox and nothing
    /// is queued: no connection task or request can then reach the dropped instance.
    pub(crate) fn try_evict(
        &self,
        class: &'static str,
        name: &str,
        mailbox: &mpsc::Receiver<Event>,
    ) -> bool {
        let mut by_class = lock(&self.by_class);
        let Some(instances) = by_class.get_mut(class) else { return true };
        let idle = instances
            .get(name)
            .is_none_or(|sender| sender.strong_count() == 1 && mailbox.is_empty());
        if idle {
            instances.remove(name);
        }
        idle
    }

    /// How many instances are live (in memory).
    pub(crate) fn live(&self) -> usize {
        lock(&self.by_class).values().map(HashMap::len).sum()
    }
}
