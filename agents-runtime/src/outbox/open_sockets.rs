//! The server's open WebSockets: how many there are (against `max_connections`), and a weak
//! handle on each one's link, so shutdown reaches every socket without each socket task
//! waiting on a signal of its own (a waiter in every socket's task would grow each
//! connection's memory).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use crate::outbox::link::Link;
use crate::sync::lock;

#[derive(Default)]
pub(crate) struct OpenSockets {
    /// Admitted sockets, from the upgrade until their task ends.
    open: AtomicUsize,
    /// Sockets parked (their instance hibernated): counted by the parking code.
    pub(crate) parked: AtomicUsize,
    links: Mutex<Links>,
}

/// A slab of weak links: a socket's slot is reused once it closes.
#[derive(Default)]
struct Links {
    /// Set once the server shuts down: every link listed, or listed later, drains and closes.
    closing: bool,
    slots: Vec<Option<Weak<Link>>>,
    free: Vec<usize>,
}

impl OpenSockets {
    /// Counts one more socket; `None` (and nothing counted) when `max` are open.
    pub(crate) fn admit(self: &Arc<Self>, max: usize) -> Option<SocketSlot> {
        let open = self.open.fetch_add(1, Ordering::AcqRel);
        let slot = SocketSlot { sockets: self.clone(), index: UNLISTED };
        (open < max).then_some(slot)
    }

    /// How many sockets are open.
    pub(crate) fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// The parked socket in slot `index` has something to read: it resumes.
    pub(crate) fn wake_parked(&self, index: usize) {
        let link = lock(&self.links).slots.get(index).and_then(|slot| slot.as_ref()?.upgrade());
        if let Some(link) = link {
            link.wake_parked();
        }
    }

    /// Shutdown: every open socket writes what it has queued, then closes with 1001; sockets
    /// listed from now on do so at once.
    pub(crate) fn shut_down(&self) {
        let links: Vec<Arc<Link>> = {
            let mut links = lock(&self.links);
            links.closing = true;
            links.slots.iter().flatten().filter_map(Weak::upgrade).collect()
        };
        for link in links {
            link.shut_down();
        }
    }
}

/// One admitted socket: counted against `max_connections`, and its link listed for shutdown,
/// until the slot drops with the socket's task.
pub(crate) struct SocketSlot {
    sockets: Arc<OpenSockets>,
    /// The link's slot, or [`UNLISTED`] (a sentinel, not an `Option`: this lives in every
    /// socket's task).
    index: usize,
}

const UNLISTED: usize = usize::MAX;

impl SocketSlot {
    /// The link's slot: a token for the socket that no other open socket has.
    pub(crate) fn index(&self) -> usize {
        self.index
    }

    /// Lists the socket's link, so shutdown reaches it (if shutdown began, it drains now).
    pub(crate) fn list(&mut self, link: &Arc<Link>) {
        debug_assert_eq!(self.index, UNLISTED, "a socket's link is listed once");
        let mut links = lock(&self.sockets.links);
        if links.closing {
            link.shut_down();
        }
        let weak = Some(Arc::downgrade(link));
        let index = match links.free.pop() {
            Some(index) => {
                links.slots[index] = weak;
                index
            }
            None => {
                links.slots.push(weak);
                links.slots.len() - 1
            }
        };
        self.index = index;
    }
}

impl Drop for SocketSlot {
    fn drop(&mut self) {
        if self.index != UNLISTED {
            let index = self.index;
            let mut links = lock(&self.sockets.links);
            links.slots[index] = None;
            links.free.push(index);
        }
        self.sockets.open.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_counted_against_the_limit_and_reused() {
        let sockets = Arc::new(OpenSockets::default());
        let mut first = sockets.admit(2).expect("room");
        let second = sockets.admit(2).expect("room");
        assert!(sockets.admit(2).is_none(), "a third is over the limit");
        assert_eq!(sockets.open(), 2, "the refused one is not counted");
        let link = Arc::new(Link::new(4, None));
        first.list(&link);
        drop(first);
        let mut third = sockets.admit(2).expect("room again");
        third.list(&Arc::new(Link::new(4, None)));
        assert_eq!(third.index, 0, "the closed socket's slot is reused");
        assert_eq!(lock(&sockets.links).slots.len(), 1);
        drop((second, third));
        assert_eq!(sockets.open(), 0);
    }

    #[test]
    fn shutdown_reaches_listed_links_and_later_ones() {
        let sockets = Arc::new(OpenSockets::default());
        let before = Arc::new(Link::new(4, None));
        let mut slot = sockets.admit(8).expect("room");
        slot.list(&before);
        sockets.shut_down();
        assert!(before.is_draining());
        let after = Arc::new(Link::new(4, None));
        let mut late = sockets.admit(8).expect("room");
        late.list(&after);
        assert!(after.is_draining(), "a socket listed after shutdown began drains at once");
    }
}
