//! [`ParkingLot`]: where hibernated instances' idle sockets wait for their clients, one `epoll`
//! set watched by a thread of its own.

use std::io;
use std::sync::Weak;

use mio::{Events, Token};
use tokio::runtime::Handle;

use crate::outbox::OpenSockets;

/// The lot's own token: it is being dropped. Socket tokens are slot indexes, never this.
const STOP: Token = Token(usize::MAX);

/// Where parked sockets wait for the client: an `epoll` set of their own, watched by one
/// thread. (tokio's `AsyncFd` could watch the set from a task, but registering a raw file
/// descriptor with it is `unsafe`, which the workspace forbids; the thread sleeps in
/// `epoll_wait` and costs nothing while no client sends.)
pub(crate) struct ParkingLot {
    pub(super) registry: mio::Registry,
    /// The runtime sockets park from and resume into (a wake may come from any thread).
    pub(super) runtime: Handle,
    /// Ends the lot's thread when the server goes.
    stop: mio::Waker,
}

impl ParkingLot {
    /// Opens the lot and starts its thread.
    pub(super) fn start(sockets: Weak<OpenSockets>) -> io::Result<Self> {
        let poll = mio::Poll::new()?;
        let registry = poll.registry().try_clone()?;
        let stop = mio::Waker::new(&registry, STOP)?;
        std::thread::Builder::new()
            .name("agents-parking".into())
            .spawn(move || watch(poll, &sockets))?;
        Ok(Self { registry, runtime: Handle::current(), stop })
    }
}

impl Drop for ParkingLot {
    fn drop(&mut self) {
        let _ = self.stop.wake();
    }
}

/// The lot's thread: resumes each parked socket that becomes readable (or hangs up).
fn watch(mut poll: mio::Poll, sockets: &Weak<OpenSockets>) {
    let mut events = Events::with_capacity(256);
    loop {
        match poll.poll(&mut events, None) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::error!("parked sockets: epoll failed: {e}");
                return;
            }
        }
        let Some(sockets) = sockets.upgrade() else { return };
        for event in &events {
            if event.token() == STOP {
                return;
            }
            sockets.wake_parked(event.token().0);
        }
    }
}
