//! The byte stream under a WebSocket: reads straight from the TCP socket, writes through the
//! connection's [`Link`], so tungstenite's control frames and the link's data frames share one
//! ordered path to the socket.

use std::io;
use std::net::Shutdown;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::frames::Wire;
use crate::outbox::Link;

impl Wire for TcpStream {
    fn try_write_vectored(&self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        // `sendmsg` rather than `writev`: a socket call skips the file layer's position lock,
        // which showed in profiles of broadcasts. Readiness is tracked as tokio's own writes.
        self.try_io(tokio::io::Interest::WRITABLE, || {
            socket2::SockRef::from(self).send_vectored(bufs)
        })
    }

    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        TcpStream::poll_write_ready(self, cx)
    }
}

/// What tungstenite reads from and writes to.
pub(super) struct SocketIo {
    pub(super) tcp: Arc<TcpStream>,
    pub(super) link: Arc<Link>,
}

impl AsyncRead for SocketIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            ready!(self.tcp.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            // `recv` rather than `read`, for the same reason as `sendmsg` above.
            let received = self.tcp.try_io(tokio::io::Interest::READABLE, || {
                std::io::Read::read(&mut &*socket2::SockRef::from(&*self.tcp), unfilled)
            });
            match received {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                // The readiness was stale: wait for the next.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for SocketIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.link.poll_write_raw(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.link.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.link.poll_flush(cx))?;
        Poll::Ready(socket2::SockRef::from(&*self.tcp).shutdown(Shutdown::Write))
    }
}
