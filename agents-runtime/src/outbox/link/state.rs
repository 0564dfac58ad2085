//! What a link's lock guards: its socket, queue and write buffer, and where the socket stands
//! with its task, the running turn's corks and the server's shutdown.

use std::sync::Arc;
use std::task::Waker;

use crate::outbox::queue::{Outgoing, Queue};
use crate::wire::CloseFrame;
use crate::wire::frame::{Frames, Wire};

#[derive(Default)]
pub(super) struct State {
    /// The socket, until the socket task ends (a `Connection` kept by the agent must not keep
    /// the socket open); `None` for a link without one (unit tests, micro-benchmarks), whose
    /// writes are dropped.
    pub(super) wire: Option<Arc<dyn Wire>>,
    pub(super) queue: Queue,
    /// Bytes on their way to the socket, ahead of the queue.
    pub(super) out: Frames,
    /// `out` holds the upgrade's 101, kept for the connect turn to write with its frames: the
    /// socket task does not write it on its own (see `response.rs`).
    pub(super) held: bool,
    /// The socket task, when it waits for a message, a forced close or shutdown.
    pub(super) waker: Option<Waker>,
    /// Whether the socket has a task, is parked, or stopped taking messages.
    pub(super) socket: Socket,
    /// Where the running turn's frames for this socket are.
    pub(super) cork: Cork,
    /// The agent side let go of the connection: nothing more will be queued.
    pub(super) abandoned: bool,
    /// Drop what is queued and close with this (first call wins). Boxed: rare, and every
    /// idle link holds the field.
    pub(super) forced: Option<Box<CloseFrame>>,
    /// The server's shutdown, as far as this socket has got with it.
    pub(super) drain: Drain,
    /// The instance hibernated: the socket task parks the socket once nothing waits (the
    /// instance's wish; whether the socket is parked is `socket`).
    pub(super) asked_to_park: bool,
}

/// The socket as the link knows it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) enum Socket {
    /// A socket task relays it (or is being set up to).
    #[default]
    Relaying,
    /// Parked: `wire` is `None` and `waker` resumes it.
    Parked,
    /// The socket task stopped taking messages; it writes what is encoded, then closes.
    Closed,
}

/// Where the running turn's frames for this socket are.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) enum Cork {
    /// Not listed in the instance's [`Corks`]: no turn wrote to it since its last uncork.
    #[default]
    Open,
    /// Listed, its frames in `out`: written when the turn yields; the queue waits until then.
    Buffered,
    /// Listed, its frames in the corks' log: a frame that does not join them there queues,
    /// so it cannot overtake them.
    Logged,
}

/// The server's shutdown, as one socket goes through it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) enum Drain {
    /// The server runs.
    #[default]
    No,
    /// The server shuts down, and the socket task has not heard yet.
    Asked,
    /// The socket task writes out what is queued, then closes with 1001.
    Draining,
    /// Draining, and waiting for the running turn's frames: the uncork wakes the task.
    WaitsForTurn,
}

impl State {
    pub(super) fn corked(&self) -> bool {
        self.cork != Cork::Open
    }

    /// The next item; a queue a burst left large gives its memory back once empty.
    pub(super) fn pop(&mut self) -> Option<Outgoing> {
        self.queue.pop_front()
    }
}
