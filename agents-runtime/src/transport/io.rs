//! The socket as the link writes to it.

use std::io;
use std::task::{Context, Poll};

use rustix::net::{self, SendFlags};
use tokio::net::TcpStream;

use crate::wire::frame::Wire;

/// A peer that went away is an error, not a `SIGPIPE` (Apple's systems have no such flag; Rust
/// programs ignore `SIGPIPE` there as everywhere, unless they ask otherwise).
#[cfg(not(target_vendor = "apple"))]
const SEND_FLAGS: SendFlags = SendFlags::NOSIGNAL;
#[cfg(target_vendor = "apple")]
const SEND_FLAGS: SendFlags = SendFlags::empty();

impl Wire for TcpStream {
    fn try_write_vectored(&self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        // `sendmsg` rather than `writev`: a socket call skips the file layer's position lock;
        // and `send` for one slice (a socket's run of
        // frames in the cork log, the common case), which skips copying in a message header
        // and an iovec. Both go straight to the kernel (rustix), not through glibc's wrappers,
        // which mark every call as a thread-cancellation point, two more calls per send.
        let send = || {
            let sent = match bufs {
                [one] => net::send(self, one, SEND_FLAGS),
                _ => net::sendmsg(self, bufs, &mut Default::default(), SEND_FLAGS),
            };
            sent.map_err(io::Error::from)
        };
        // Almost every write finds room: it goes straight to
        // the socket, without reading tokio's readiness (another cache line per socket). A
        // full socket is tried again through tokio, which then clears the readiness it saw
        // before that try, so the wait for room (`poll_write_ready`) cannot miss an edge.
        match send() {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.try_io(tokio::io::Interest::WRITABLE, send)
            }
            done => done,
        }
    }

    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        TcpStream::poll_write_ready(self, cx)
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;
    use std::io::{self, IoSlice, Read};
    use std::task::{Context, Waker};

    use tokio::net::TcpListener;

    use crate::wire::frame::Wire;

    /// Writes skip tokio's readiness until one finds the socket full: the wait for room that
    /// follows must still hear the socket drain (no lost edge), and writing resumes.
    #[tokio::test]
    async fn a_full_socket_is_waited_for_and_written_again_once_the_client_reads() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().await.unwrap();
        socket2::SockRef::from(&server).set_send_buffer_size(4096).unwrap();
        let chunk = vec![7u8; 64 * 1024];
        let mut written = 0;
        loop {
            match server.try_write_vectored(&[IoSlice::new(&chunk)]) {
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("write failed: {e}"),
            }
        }
        assert!(written > 0);
        let mut cx = Context::from_waker(Waker::noop());
        assert!(
            Wire::poll_write_ready(&server, &mut cx).is_pending(),
            "the readiness a full socket showed was cleared"
        );
        let reader = std::thread::spawn(move || {
            let mut buf = vec![0; written];
            client.read_exact(&mut buf).map(|()| client)
        });
        let ready = poll_fn(|cx| Wire::poll_write_ready(&server, cx));
        tokio::time::timeout(std::time::Duration::from_secs(10), ready)
            .await
            .expect("woken once the client reads")
            .unwrap();
        assert!(server.try_write_vectored(&[IoSlice::new(b"more")]).is_ok_and(|n| n == 4));
        let _client = reader.join().unwrap().unwrap();
    }
}
