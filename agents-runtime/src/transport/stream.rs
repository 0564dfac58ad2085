//! The TCP stream as hyper serves it, which keeps the upgrade's 101 back: the connect turn
//! writes it with its first frames (the identity, the state, a join broadcast's echo), in one
//! packet, as uWebSockets corks its upgrade response with what the `open` handler sends.
//! On loopback and behind a local proxy, every packet also costs the receiving side's work on
//! the sender's core: the 101 on its own was the most expensive write of a reconnect storm.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// How every 101 hyper writes for us begins (upgrades are HTTP/1.1 only).
const SWITCHING: &[u8] = b"HTTP/1.1 101 ";

/// Set by the upgrade route when it answers 101 (in the request's extensions): the stream
/// then holds what hyper writes next. Only our route's 101 is held, never a response that
/// merely looks like one (an `on_request` answering 101, a body starting with those bytes).
#[derive(Clone, Default)]
pub(crate) struct Switching(Arc<AtomicBool>);

impl Switching {
    /// The route answers 101: hold it.
    pub(crate) fn hold(&self) {
        self.0.store(true, Ordering::Release);
    }
}

/// A connection's stream while hyper serves it.
pub(crate) struct HttpStream {
    io: TokioIo<TcpStream>,
    /// Whether the upgrade route answered 101 (shared with the requests' extensions).
    switching_asked: Switching,
    /// What was read from the socket before hyper (see `transport::direct`), read first.
    unread: Vec<u8>,
    /// From the 101 on, what hyper writes is kept here, not written: after a 101, hyper
    /// writes nothing more and hands the stream to the upgrade (`into_parts`).
    switching: Option<Vec<u8>>,
}

impl HttpStream {
    /// `stream`, of which `read` was read already.
    pub(crate) fn new(stream: TcpStream, read: Vec<u8>) -> Self {
        Self {
            io: TokioIo::new(stream),
            switching_asked: Switching::default(),
            unread: read,
            switching: None,
        }
    }

    /// The flag the upgrade route raises to have its 101 held (see [`Switching`]).
    pub(crate) fn switching(&self) -> Switching {
        self.switching_asked.clone()
    }

    /// The socket, the 101 response held back (empty if hyper wrote none), and what hyper
    /// did not read of the bytes read before it.
    pub(crate) fn into_parts(self) -> (TcpStream, Vec<u8>, Vec<u8>) {
        (self.io.into_inner(), self.switching.unwrap_or_default(), self.unread)
    }

    /// Keeps `bufs` if they are (or follow) the 101; returns how many bytes it kept.
    fn hold(&mut self, bufs: &[IoSlice<'_>]) -> Option<usize> {
        if self.switching.is_none() {
            if !self.switching_asked.0.load(Ordering::Acquire) {
                return None;
            }
            let first = bufs.iter().find(|buf| !buf.is_empty())?;
            if !first.starts_with(SWITCHING) {
                return None;
            }
        }
        let held = self.switching.get_or_insert_with(Vec::new);
        let before = held.len();
        for buf in bufs {
            held.extend_from_slice(buf);
        }
        Some(held.len() - before)
    }
}

impl Read for HttpStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.unread.is_empty() {
            let n = this.unread.len().min(buf.remaining());
            buf.put_slice(&this.unread[..n]);
            this.unread.drain(..n);
            if this.unread.is_empty() {
                this.unread = Vec::new();
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl Write for HttpStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match this.hold(&[IoSlice::new(buf)]) {
            Some(held) => Poll::Ready(Ok(held)),
            None => Pin::new(&mut this.io).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match this.hold(bufs) {
            Some(held) => Poll::Ready(Ok(held)),
            None => Pin::new(&mut this.io).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::io::IoSlice;

    use super::HttpStream;

    /// A served stream, and the client's end.
    async fn stream() -> (HttpStream, tokio::net::TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        (HttpStream::new(accepted.unwrap().0, Vec::new()), client.unwrap())
    }

    /// Other responses go to the socket; the 101 the route asked for and anything after it
    /// are kept.
    #[tokio::test]
    async fn only_the_101_and_what_follows_are_held() {
        let (mut stream, _client) = stream().await;
        let head = b"HTTP/1.1 101 Switching Protocols\r\n";
        assert_eq!(stream.hold(&[IoSlice::new(head)]), None, "not asked for: a user's 101");
        stream.switching().hold();
        assert_eq!(stream.hold(&[IoSlice::new(b"HTTP/1.1 200 OK\r\n\r\n")]), None);
        assert_eq!(stream.hold(&[IoSlice::new(b""), IoSlice::new(b"HTTP/1.1 400 ")]), None);
        assert_eq!(stream.hold(&[IoSlice::new(b""), IoSlice::new(head)]), Some(head.len()));
        assert_eq!(stream.hold(&[IoSlice::new(b"\r\n")]), Some(2));
        let (_, held, _) = stream.into_parts();
        assert_eq!(held, b"HTTP/1.1 101 Switching Protocols\r\n\r\n");
    }
}
