//! A connection's outbox and the write side of its socket: what the agent side sends, bounded
//! in messages and bytes, plus the out-of-band close used when it is full.
//!
//! A message sent while nothing is queued or half-written, and released by the output gate,
//! never wakes the socket task: during its instance's turn it is *corked* (see
//! [`corks`]: logged, and written when the instance's task yields, one
//! `sendmsg` for all the turn's frames to that socket), outside a turn it is written at once.
//! Everything else is queued for the socket task, which writes it when the socket has room
//! and the gate releases it (and not while frames of a turn wait to be written ahead of it).
//! Every byte written to the socket, control frames included, goes through the link's lock,
//! so frames never interleave.
//!
//! One lock-protected queue per connection instead of a channel: a push is one uncontended
//! lock, the socket task is woken only when the queue goes from empty to not empty, and an
//! idle connection's queue holds no allocation at all.

mod link;
mod open_sockets;
mod queue;
mod remote;

pub(crate) use link::{Link, LinkHandle, Next, Outbound, PushError, corks, seal_after};
pub(crate) use remote::{RemoteOutlet, Route};

/// Where a connection's frames go: its socket's link on this node, or (cluster mode) the
/// route to the node that holds its socket.
pub(crate) enum Outlet {
    Local(LinkHandle),
    /// Boxed: every connection carries an outlet, and most are local (one pointer).
    Remote(Box<RemoteOutlet>),
}

impl From<LinkHandle> for Outlet {
    fn from(link: LinkHandle) -> Self {
        Outlet::Local(link)
    }
}

impl Outlet {
    /// The socket's link, for a socket on this node.
    pub(crate) fn local(&self) -> Option<&LinkHandle> {
        match self {
            Outlet::Local(link) => Some(link),
            Outlet::Remote(_) => None,
        }
    }
}
pub(crate) use open_sockets::{OpenSockets, SocketSlot};
#[cfg(any(test, feature = "bench"))]
pub(crate) use queue::Outgoing;
