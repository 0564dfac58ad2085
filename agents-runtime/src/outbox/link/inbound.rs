//! The client's messages that wait in the instance's mailbox: a socket stops reading while
//! they hold `cap` bytes (the message size limit), so a client that pipelines large messages
//! faster than its agent takes them waits in its own TCP window instead of in memory.

use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use super::{Link, register, wake};
use crate::sync::lock;

impl Link {
    /// The socket task put a message of `len` bytes in the mailbox.
    pub(crate) fn queued_inbound(&self, len: usize) {
        self.inbound.fetch_add(len, Ordering::AcqRel);
    }

    /// Whether the client's messages in the mailbox hold `cap` bytes or more: the socket task
    /// reads no more until the instance takes some.
    pub(crate) fn inbound_over(&self, cap: usize) -> bool {
        self.inbound.load(Ordering::Acquire) >= cap
    }

    /// Ready once the client's messages in the mailbox hold less than `cap` bytes; until then
    /// the socket task is woken when they do.
    pub(crate) fn poll_inbound_room(&self, cx: &mut Context<'_>, cap: usize) -> Poll<()> {
        if self.inbound.load(Ordering::Acquire) < cap {
            return Poll::Ready(()); // the usual case: no lock
        }
        let mut state = lock(&self.state);
        // Looked at under the lock, after the waker is in place: `took_inbound` takes it
        // under the same lock, so a wake-up between the two is not lost.
        register(&mut state.waker, cx);
        if self.inbound.load(Ordering::Acquire) < cap { Poll::Ready(()) } else { Poll::Pending }
    }

    /// The instance took a message of `len` bytes from the mailbox; the socket task reads
    /// again if that brought the bytes under `cap`.
    pub(crate) fn took_inbound(&self, len: usize, cap: usize) {
        let before = self.inbound.fetch_sub(len, Ordering::AcqRel);
        if before >= cap && before - len < cap {
            let waker = lock(&self.state).waker.take();
            wake(waker);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::task::{Wake, Waker};

    use super::Link;

    struct Flag(AtomicBool);

    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::Release);
        }
    }

    #[test]
    fn reading_pauses_over_the_cap_and_resumes_under_it() {
        let link = Link::new(16, None);
        link.queued_inbound(600);
        assert!(!link.inbound_over(1000));
        link.queued_inbound(600);
        assert!(link.inbound_over(1000), "1200 bytes wait");
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        link.state.lock().expect("not poisoned").waker = Some(Waker::from(flag.clone()));
        link.took_inbound(100, 1000);
        assert!(!flag.0.load(Ordering::Acquire), "still over: no wake-up");
        link.took_inbound(600, 1000);
        assert!(flag.0.load(Ordering::Acquire), "under the cap again: the socket task wakes");
        assert!(!link.inbound_over(1000));
    }
}
