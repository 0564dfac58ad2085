//! A connection's outbox: what the agent side queued for the socket task, bounded in messages
//! and bytes, plus the out-of-band close used when it is full.
//!
//! One lock-protected queue per connection instead of a channel: a push is one uncontended
//! lock, the socket task is woken only when the queue goes from empty to not empty, and an
//! idle connection's queue holds no allocation at all.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::connection::{CloseFrame, lock};
use crate::message::Message;
use crate::storage::durability::WriteSeq;

/// What the agent side queues for a connection's socket task.
#[derive(Debug)]
pub(crate) enum Outgoing {
    /// A message, released once write `WriteSeq` of its instance is durable (output gate).
    Message(Message, WriteSeq),
    /// A close frame, gated the same way.
    Close(CloseFrame, WriteSeq),
}

/// Why a push failed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum PushError {
    /// The queue holds its capacity in messages.
    Full,
    /// The socket task is gone.
    Closed,
}

/// A queue emptied back to this many slots keeps its allocation; a bigger one gives it back,
/// so a burst does not cost an idle connection memory for the rest of its life.
const KEEP_SLOTS: usize = 16;

/// Shared by a [`Connection`](crate::Connection) and its socket task.
#[derive(Debug)]
pub(crate) struct Link {
    state: Mutex<State>,
    capacity: usize,
    /// Bytes of messages queued and not yet handed to the socket.
    queued_bytes: AtomicUsize,
    /// When the auto-response last answered this connection, in ms since the Unix epoch; 0
    /// for never.
    auto_responded_at: AtomicU64,
}

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<Outgoing>,
    /// The socket task, when it waits for a message or a forced close.
    waker: Option<Waker>,
    /// The socket task stopped taking messages.
    closed: bool,
    /// The agent side let go of the connection: nothing more will be queued.
    abandoned: bool,
    /// Drop what is queued and close with this (first call wins).
    forced: Option<CloseFrame>,
}

impl Link {
    /// An outbox of at most `capacity` messages.
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            state: Mutex::default(),
            capacity,
            queued_bytes: AtomicUsize::new(0),
            auto_responded_at: AtomicU64::new(0),
        }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Queues `outgoing`, waking the socket task if the queue was empty; on failure, hands it
    /// back with the reason.
    pub(crate) fn push(&self, outgoing: Outgoing) -> Result<(), (PushError, Outgoing)> {
        let mut state = lock(&self.state);
        if state.closed {
            return Err((PushError::Closed, outgoing));
        }
        if state.queue.len() >= self.capacity {
            return Err((PushError::Full, outgoing));
        }
        state.queue.push_back(outgoing);
        let waker = if state.queue.len() == 1 { state.waker.take() } else { None };
        drop(state);
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }

    /// The next queued item, if any (socket side).
    pub(crate) fn try_pop(&self) -> Option<Outgoing> {
        lock(&self.state).pop()
    }

    /// The next queued item; `Ready(None)` once the agent side let go and nothing is left.
    pub(crate) fn poll_pop(&self, cx: &mut Context<'_>) -> Poll<Option<Outgoing>> {
        let mut state = lock(&self.state);
        if let Some(next) = state.pop() {
            return Poll::Ready(Some(next));
        }
        if state.abandoned {
            return Poll::Ready(None);
        }
        register(&mut state.waker, cx);
        Poll::Pending
    }

    /// Resolves to the next queued item (see [`poll_pop`](Self::poll_pop)).
    pub(crate) async fn pop(&self) -> Option<Outgoing> {
        std::future::poll_fn(|cx| self.poll_pop(cx)).await
    }

    /// The socket task takes no more messages: later pushes fail as closed.
    pub(crate) fn close(&self) {
        let mut state = lock(&self.state);
        state.closed = true;
        state.queue = VecDeque::new();
    }

    /// The agent side dropped the connection (its last handle).
    pub(crate) fn abandon(&self) {
        let waker = {
            let mut state = lock(&self.state);
            state.abandoned = true;
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Asks the socket task to drop whatever is queued and close with `frame` (first call wins).
    pub(crate) fn force_close(&self, frame: CloseFrame) {
        let waker = {
            let mut state = lock(&self.state);
            if state.forced.is_some() {
                return;
            }
            state.forced = Some(frame);
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Resolves once a forced close was asked for.
    pub(crate) async fn forced(&self) -> CloseFrame {
        std::future::poll_fn(|cx| {
            let mut state = lock(&self.state);
            match &state.forced {
                Some(frame) => Poll::Ready(frame.clone()),
                None => {
                    register(&mut state.waker, cx);
                    Poll::Pending
                }
            }
        })
        .await
    }

    /// Counts `len` more bytes queued, unless that goes over `budget` (a single message bigger
    /// than the budget still goes through an empty outbox). Returns whether it was counted.
    pub(crate) fn reserve_bytes(&self, len: usize, budget: usize) -> bool {
        let before = self.queued_bytes.fetch_add(len, Ordering::Relaxed);
        if before > 0 && before + len > budget {
            self.queued_bytes.fetch_sub(len, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// The socket task wrote a message of `len` bytes (or it was never queued): it no longer
    /// counts against the budget.
    pub(crate) fn written(&self, len: usize) {
        self.queued_bytes.fetch_sub(len, Ordering::Relaxed);
    }

    /// The socket task answered the auto-response request now.
    pub(crate) fn auto_responded(&self) {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let ms = u64::try_from(now.as_millis()).unwrap_or(u64::MAX).max(1);
        self.auto_responded_at.store(ms, Ordering::Relaxed);
    }

    pub(crate) fn auto_responded_at(&self) -> Option<SystemTime> {
        match self.auto_responded_at.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(UNIX_EPOCH + Duration::from_millis(ms)),
        }
    }
}

impl State {
    /// The next item; a queue a burst left large gives its memory back once empty.
    fn pop(&mut self) -> Option<Outgoing> {
        let next = self.queue.pop_front();
        if self.queue.is_empty() && self.queue.capacity() > KEEP_SLOTS {
            self.queue = VecDeque::new();
        }
        next
    }
}

/// Keeps the socket task's waker (one task waits on a link, for a message or a forced close).
fn register(slot: &mut Option<Waker>, cx: &Context<'_>) {
    match slot {
        Some(waker) if waker.will_wake(cx.waker()) => {}
        _ => *slot = Some(cx.waker().clone()),
    }
}

/// The agent side's hold on a link: dropping it (the connection's last handle) tells the
/// socket task nothing more will come.
#[derive(Debug)]
pub(crate) struct Sender(pub(crate) std::sync::Arc<Link>);

impl std::ops::Deref for Sender {
    type Target = Link;

    fn deref(&self) -> &Link {
        &self.0
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        self.0.abandon();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;
    use std::task::Wake;

    use super::*;

    struct Flag(AtomicBool);

    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    fn message(text: &str) -> Outgoing {
        Outgoing::Message(text.into(), 0)
    }

    #[test]
    fn bounded_in_order_and_wakes_on_the_first_push_only() {
        let link = Link::new(2);
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        let waker = Waker::from(flag.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(link.poll_pop(&mut cx).is_pending());
        link.push(message("a")).expect("room");
        assert!(flag.0.swap(false, Ordering::SeqCst), "the first push wakes the socket");
        link.push(message("b")).expect("room");
        assert!(!flag.0.load(Ordering::SeqCst), "no wake-up while the queue is not empty");
        assert!(matches!(link.push(message("c")), Err((PushError::Full, _))));
        for want in ["a", "b"] {
            match link.poll_pop(&mut cx) {
                Poll::Ready(Some(Outgoing::Message(m, _))) => assert_eq!(m.as_text(), Some(want)),
                other => panic!("expected {want}, got {other:?}"),
            }
        }
        assert!(link.try_pop().is_none());
        link.close();
        assert!(matches!(link.push(message("d")), Err((PushError::Closed, _))));
    }

    #[test]
    fn a_burst_gives_its_memory_back_once_drained() {
        let link = Link::new(1024);
        for _ in 0..500 {
            link.push(message("x")).expect("room");
        }
        while link.try_pop().is_some() {}
        assert_eq!(lock(&link.state).queue.capacity(), 0);
    }

    #[test]
    fn dropping_the_sender_ends_the_queue_after_what_is_left() {
        let link = Arc::new(Link::new(4));
        let sender = Sender(link.clone());
        link.push(message("last")).expect("room");
        drop(sender);
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        assert!(matches!(link.poll_pop(&mut cx), Poll::Ready(Some(_))));
        assert!(matches!(link.poll_pop(&mut cx), Poll::Ready(None)));
    }

    #[test]
    fn byte_budget() {
        let link = Link::new(8);
        assert!(link.reserve_bytes(100, 10), "one message bigger than the budget goes through");
        assert!(!link.reserve_bytes(1, 10));
        link.written(100);
        assert!(link.reserve_bytes(10, 10));
        assert!(!link.reserve_bytes(1, 10));
    }
}
