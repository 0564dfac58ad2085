//! The socket as the link writes to it.

use std::io;
use std::task::{Context, Poll};

use tokio::net::TcpStream;

use crate::frames::Wire;

impl Wire for TcpStream {
    fn try_write_vectored(&self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        // `sendmsg` rather than `writev`: a socket call skips the file layer's position lock,
        // which showed in profiles of broadcasts; and `send` for one slice (a socket's run of
        // frames in the cork log, the common case), which skips copying in a message header
        // and an iovec. Readiness is tracked as tokio's own writes.
        self.try_io(tokio::io::Interest::WRITABLE, || {
            let socket = socket2::SockRef::from(self);
            match bufs {
                [one] => socket.send(one),
                _ => socket.send_vectored(bufs),
            }
        })
    }

    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        TcpStream::poll_write_ready(self, cx)
    }
}
