//! [`Instance`]: the part of a live instance that its connections and socket tasks share with
//! it, outside its turns.

use std::sync::Arc;

use crate::instance::auto_response::AutoResponse;
use crate::instance::event::Event;
use crate::instance::log_budget::LogBudget;
use crate::instance::mailbox::{Mailbox, Permit, Refused};
use crate::limits::Limits;
use crate::outbox::corks::Corks;
use crate::storage::durability::OutputGate;
use crate::storage::{AlarmSlot, InstanceKeys};

/// What one instance shares with its connections and socket tasks. It lives as long as the
/// instance's host task, hibernation included, so the auto-response survives hibernation.
pub(crate) struct Instance {
    /// The instance name (`connection.server`).
    pub(crate) name: Arc<str>,
    /// Where the instance's data lives in the store.
    pub(crate) keys: InstanceKeys,
    /// The output gate: frames wait for the instance's writes to be durable.
    pub(crate) gate: OutputGate,
    /// Its alarm: the server's index of due alarms, and the `on_alarm` run under way.
    pub(crate) alarm: AlarmSlot,
    /// Answered by socket tasks without waking the instance.
    pub(crate) auto_response: AutoResponse,
    /// The connections its turn sent to, written when its task yields.
    pub(crate) corks: Corks,
    /// The limits its connections check (here, not in each connection; `u32`, as every
    /// instance carries them, and more than 4 GiB would be no limit).
    max_connection_state_size: u32,
    max_outbox_bytes: u32,
    /// How many lines about client-caused errors it may still log this second.
    pub(crate) log_budget: LogBudget,
    /// Its events, and its task's record while it hibernates.
    pub(crate) mailbox: Mailbox<Instance>,
}

impl AsRef<Mailbox<Instance>> for Instance {
    fn as_ref(&self) -> &Mailbox<Instance> {
        &self.mailbox
    }
}

impl Instance {
    /// Instance `name` of agent `agent`, behind `gate`, with its alarm in `alarm`.
    pub(crate) fn new(
        agent: &str,
        name: Arc<str>,
        gate: OutputGate,
        alarm: AlarmSlot,
        limits: &Limits,
    ) -> Self {
        let clamp = |bytes: usize| u32::try_from(bytes).unwrap_or(u32::MAX);
        Self {
            keys: InstanceKeys::new(agent, &name),
            name,
            gate,
            alarm,
            auto_response: AutoResponse::default(),
            corks: Corks::default(),
            max_connection_state_size: clamp(limits.max_connection_state_size),
            max_outbox_bytes: clamp(limits.max_outbox_bytes),
            log_budget: LogBudget::default(),
            mailbox: Mailbox::new(limits.mailbox_capacity),
        }
    }

    /// The most bytes a connection's state may serialize to.
    pub(crate) fn max_connection_state_size(&self) -> usize {
        self.max_connection_state_size as usize
    }

    /// The most bytes a connection may have queued for its socket.
    pub(crate) fn max_outbox_bytes(&self) -> usize {
        self.max_outbox_bytes as usize
    }

    /// Puts `event` in the mailbox unless it is full or the instance is gone; a hibernated
    /// instance is started.
    pub(crate) fn try_send(self: &Arc<Self>, event: Event) -> Result<(), Refused> {
        self.mailbox.try_send(self, event)
    }

    /// Puts `event` in the mailbox, waiting for room; `Err` gives it back if the instance is
    /// gone.
    pub(crate) async fn send(self: &Arc<Self>, event: Event) -> Result<(), Event> {
        self.mailbox.send(self, event).await
    }

    /// Waits for room in the mailbox and holds a place; `None` if the instance is gone.
    pub(crate) async fn reserve(self: Arc<Self>) -> Option<Permit<Instance>> {
        Mailbox::reserve(self).await
    }
}

#[cfg(any(test, feature = "bench"))]
impl Instance {
    /// Instance "room" on a memory store, outside any server, with the default limits (its
    /// flusher needs a tokio runtime).
    pub(crate) fn detached() -> Arc<Self> {
        use crate::storage::MemoryStore;
        use crate::storage::durability::GroupCommit;
        let limits = crate::limits::Limits::default();
        let store = Arc::new(MemoryStore::new());
        let commits = Arc::new(GroupCommit::start(store, limits.storage_timeout));
        let gate = OutputGate::new(commits, true, 0);
        Arc::new(Self::new("test", "room".into(), gate, AlarmSlot::new(Arc::default()), &limits))
    }

    /// Sets `max_connection_state_size` (tests of the limit).
    #[cfg(test)]
    pub(crate) fn set_max_connection_state_size(&mut self, bytes: u32) {
        self.max_connection_state_size = bytes;
    }
}

#[cfg(test)]
mod tests {
    /// Every live instance carries one: hibernated, it is most of what the instance costs
    /// beyond its sockets. With its `Arc` counts it fits jemalloc's 384-byte size class, apart
    /// from the socket tasks' (512), which are freed when sockets park: sharing their pages
    /// would leave those half used.
    #[test]
    fn an_instance_fits_in_384_bytes() {
        let size = std::mem::size_of::<super::Instance>() + 2 * std::mem::size_of::<usize>();
        assert!(size <= 384, "an instance takes {size} bytes");
    }
}
