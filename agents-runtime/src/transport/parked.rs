//! Parked sockets: when an instance hibernates, each of its idle sockets gives up its task and
//! its registration in tokio's reactor and waits in the server's
//! parking lot, one `epoll` set watched by a thread of its own, as workerd holds a hibernated
//! Durable Object's WebSockets. What the socket needs to come back (its link, instance, slot)
//! waits in the link's waker, so whatever would have woken the socket task resumes it: the
//! client sending anything (a ping and the auto-response are answered without waking the
//! instance, and the socket parks again), the instance waking up, a message queued from
//! outside a turn, a close, shutdown.

use std::io;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::{Wake, Waker};

use mio::{Interest, Token};
use tokio::net::TcpStream;

use crate::instance::mailbox::Refused;
use crate::instance::{ConnectionKey, Event, Instance};
use crate::outbox::{Link, SocketSlot};
use crate::sync::lock;
use crate::transport::edge::Edge;
use crate::transport::socket::{self, Joined, Socket};
use crate::wire::close_code;

/// What a parked socket keeps: all a socket task has but the task, the reader (empty) and
/// tokio's registration.
struct Parked {
    tcp: mio::net::TcpStream,
    link: Arc<Link>,
    instance: Arc<Instance>,
    key: ConnectionKey,
    edge: Arc<Edge>,
    slot: SocketSlot,
}

/// The parked socket, as the link's waker: waking it resumes the socket (once).
struct Resume(Mutex<Option<Parked>>);

impl Wake for Resume {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let parked = lock(&self.0).take();
        if let Some(parked) = parked {
            parked.resume();
        }
    }
}

impl Socket {
    /// Parks the socket: its task ends, its registration in tokio's reactor goes, and the
    /// parking lot watches it. It hands the socket back if it cannot park now (its link is
    /// no longer idle, or the lot could not start): the task relays on.
    pub(super) fn park(self) -> Option<Socket> {
        if self.edge.parking_lot().is_none() {
            return Some(self);
        }
        let Some(wire) = self.link.unwire() else { return Some(self) };
        drop(wire);
        // Nothing else holds the socket now that the link let go; if something did, it stays
        // unparked.
        if Arc::strong_count(&self.tcp) != 1 {
            self.link.rewire(self.tcp.clone());
            return Some(self);
        }
        let Socket { tcp, reader, link, instance, key, pending, waiting, edge, slot } = self;
        debug_assert!(reader.is_idle() && pending.is_none() && waiting.is_none());
        let tcp = Arc::try_unwrap(tcp)
            .map_err(|_| io::Error::other("the socket is still shared"))
            .and_then(TcpStream::into_std);
        let tcp = match tcp {
            Ok(tcp) => mio::net::TcpStream::from_std(tcp),
            Err(e) => {
                tracing::debug!("websocket lost while parking: {e}");
                gone(&link, &instance, key);
                return None;
            }
        };
        let parked = Parked { tcp, link, instance, key, edge, slot };
        let resume = Arc::new(Resume(Mutex::new(None)));
        // Held until the socket is in the lot: a wake meanwhile waits, then resumes it.
        let mut waiting = lock(&resume.0);
        if !parked.link.park(Waker::from(resume.clone())) {
            drop(waiting);
            parked.resume();
            return None;
        }
        let mut parked = parked;
        let token = Token(parked.slot.index());
        let registered = match parked.edge.parking_lot() {
            Some(lot) => lot.registry.register(&mut parked.tcp, token, Interest::READABLE),
            None => Err(io::Error::other("no parking lot")),
        };
        if let Err(e) = registered {
            tracing::warn!("a socket could not park: {e}");
            drop(waiting);
            parked.resume();
            return None;
        }
        parked.edge.sockets.parked.fetch_add(1, Ordering::AcqRel);
        *waiting = Some(parked);
        None
    }
}

impl Parked {
    /// Back into tokio's reactor and a task of its own.
    fn resume(self) {
        let Parked { mut tcp, link, instance, key, edge, slot } = self;
        // A socket parks only once the lot started, so it is there.
        let Some(lot) = edge.parked_lot() else {
            return gone(&link, &instance, key);
        };
        if lot.registry.deregister(&mut tcp).is_ok() {
            edge.sockets.parked.fetch_sub(1, Ordering::AcqRel);
        }
        // Woken from any thread: the socket joins the runtime it parked from.
        let runtime = lot.runtime.clone();
        let _runtime = runtime.enter();
        let tcp = match TcpStream::from_std(tcp.into()) {
            Ok(tcp) => Arc::new(tcp),
            Err(e) => {
                tracing::debug!("a parked websocket could not resume: {e}");
                gone(&link, &instance, key);
                return;
            }
        };
        link.rewire(tcp.clone());
        let joined = Joined { tcp, link, instance, key, edge, slot };
        runtime.spawn(socket::serve(Socket::new(joined, &[])));
    }
}

/// The socket was lost on the way (the runtime is going away): the connection closes as a
/// transport failure would close it.
fn gone(link: &Link, instance: &Arc<Instance>, key: ConnectionKey) {
    link.close();
    link.release_socket();
    let code = close_code::ABNORMAL_CLOSURE;
    let close = Event::Close { key, code, reason: String::new(), was_clean: false };
    if let Err(Refused::Full(close)) = instance.try_send(close) {
        // Off the runtime (the lot's thread), with the runtime going away: nobody to tell.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let instance = instance.clone();
            runtime.spawn(async move { instance.send(close).await });
        }
    }
}
