//! [`InputBudget`]: the bytes every connection's unfinished input may hold together, and how
//! long one message may take to arrive.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// What unfinished WebSocket messages (a frame or fragments not fully arrived) may hold,
/// server-wide, and the time one may take to arrive. A reader that would go over the budget
/// fails with [`ReadError::Overloaded`](super::read::ReadError::Overloaded) (close 1013); one
/// whose message is unfinished past the timeout with
/// [`ReadError::Slow`](super::read::ReadError::Slow) (close 1008).
///
/// It also holds what every reader of the server reads by, shared instead of kept in each
/// connection: the largest message and how much one read takes.
#[derive(Debug)]
pub(crate) struct InputBudget {
    limit: usize,
    held: AtomicUsize,
    /// How long a message may stay unfinished.
    pub(crate) timeout: Duration,
    /// The largest frame and message a reader accepts.
    pub(crate) max_message_size: usize,
    /// The most bytes one read takes.
    pub(crate) read_size: usize,
}

impl InputBudget {
    /// A budget of `limit` bytes and `timeout` per message, for readers of messages of at
    /// most `max_message_size` bytes reading `read_size` bytes at a time.
    pub(crate) fn new(
        limit: usize,
        timeout: Duration,
        max_message_size: usize,
        read_size: usize,
    ) -> Self {
        let read_size = read_size.max(1);
        Self { limit, held: AtomicUsize::new(0), timeout, max_message_size, read_size }
    }

    /// Counts `bytes` more, unless that goes over the limit; returns whether it did.
    pub(crate) fn try_grow(&self, bytes: usize) -> bool {
        let before = self.held.fetch_add(bytes, Ordering::AcqRel);
        if before.saturating_add(bytes) > self.limit {
            self.held.fetch_sub(bytes, Ordering::AcqRel);
            return false;
        }
        true
    }

    /// Counts `bytes` more, over the limit or not (a message that just became whole).
    pub(crate) fn grow(&self, bytes: usize) {
        self.held.fetch_add(bytes, Ordering::AcqRel);
    }

    /// Counts `bytes` fewer.
    pub(crate) fn shrink(&self, bytes: usize) {
        self.held.fetch_sub(bytes, Ordering::AcqRel);
    }

    /// The bytes counted now.
    pub(crate) fn held(&self) -> usize {
        self.held.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_refuses_what_goes_over_and_counts_what_is_given_back() {
        let budget = InputBudget::new(100, Duration::from_secs(1), 10, 10);
        assert!(budget.try_grow(60));
        assert!(!budget.try_grow(41), "61 + 41 is over 100");
        assert_eq!(budget.held(), 60, "a refused growth counts nothing");
        assert!(budget.try_grow(40));
        budget.shrink(100);
        assert_eq!(budget.held(), 0);
        budget.grow(150);
        assert!(!budget.try_grow(1));
    }
}
