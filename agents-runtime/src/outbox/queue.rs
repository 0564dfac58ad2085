//! The outbox's queue of messages waiting for the socket or the output gate. Most links never
//! queue anything (their messages go straight to the socket or into the turn's cork log), so
//! the queue lives behind a pointer: 8 bytes in every link instead of a `VecDeque`'s 32.

use std::collections::VecDeque;

use crate::message::Message;
use crate::storage::durability::WriteSeq;
use crate::wire::CloseFrame;

/// What the agent side queues for a connection's socket task.
#[derive(Debug)]
pub(crate) enum Outgoing {
    /// A message, released once write `WriteSeq` of its instance is durable (output gate).
    Message(Message, WriteSeq),
    /// A close frame, gated the same way.
    Close(CloseFrame, WriteSeq),
}

/// A queue emptied back to this many slots keeps its allocation; a bigger one gives it back,
/// so a burst does not cost an idle connection memory for the rest of its life.
const KEEP_SLOTS: usize = 16;

// The box is the point: 8 bytes in the link, the `VecDeque` only once something queues.
#[allow(clippy::box_collection)]
#[derive(Default)]
pub(super) struct Queue(Option<Box<VecDeque<Outgoing>>>);

impl Queue {
    pub(super) fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |queue| queue.len())
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(super) fn front(&self) -> Option<&Outgoing> {
        self.0.as_ref()?.front()
    }

    pub(super) fn push_back(&mut self, outgoing: Outgoing) {
        self.0.get_or_insert_default().push_back(outgoing);
    }

    /// The next item; a queue a burst left large gives its memory back once empty.
    pub(super) fn pop_front(&mut self) -> Option<Outgoing> {
        let queue = self.0.as_mut()?;
        let next = queue.pop_front();
        if queue.is_empty() && queue.capacity() > KEEP_SLOTS {
            self.0 = None;
        }
        next
    }

    /// Slots allocated (tests: memory given back).
    #[cfg(test)]
    pub(super) fn capacity(&self) -> usize {
        self.0.as_ref().map_or(0, |queue| queue.capacity())
    }
}
