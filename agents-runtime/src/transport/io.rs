//! The socket as the link writes to it.

use std::io;
use std::task::{Context, Poll};

use tokio::net::TcpStream;

use crate::frames::Wire;

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
