//! The upgrade's 101, as the link sees it: held in the link's buffer until the connect turn
//! lists the link, so that the 101 and the turn's first frames to the socket leave in one
//! write (see `transport::stream`). Anything written to the socket before that (a pong, a
//! close) goes after the 101 in the same buffer, so the 101 is always first on the wire.

use std::sync::Arc;

use super::{Cork, Link, Socket, wake};
use crate::outbox::corks::{CorkMark, Corks};
use crate::sync::lock;

impl Link {
    /// Puts the upgrade's `response` (the 101 hyper would have written) first in the buffer,
    /// held for [`cork_response`](Self::cork_response). Nothing if `response` is empty.
    pub(crate) fn hold_response(&self, response: &[u8]) {
        if response.is_empty() {
            return;
        }
        let mut state = lock(&self.state);
        state.out.push_raw(response);
        state.held = true;
    }

    /// The connect turn begins: the running turn (`corks`) lists the link, so the held 101
    /// is written when the turn's poll ends, with whatever the turn sends to this socket
    /// (`mark`) meanwhile. Without a turn to list it in, the socket task writes it now.
    pub(crate) fn cork_response(self: &Arc<Self>, corks: &Corks, mark: &CorkMark) {
        // The corks' lock before the link's, as a send takes them.
        let mut turn = corks.turn();
        let mut state = lock(&self.state);
        if !state.held {
            return;
        }
        let listed = state.cork == Cork::Open
            && state.socket == Socket::Relaying
            && turn.as_mut().is_some_and(|turn| turn.list_buffered(self, mark));
        if listed {
            state.held = false;
            state.cork = Cork::Buffered;
            return;
        }
        drop(state);
        self.release_response();
    }

    /// The connect turn is not coming soon (the instance's turn ahead of it waits for
    /// something): the socket task writes the held 101 now.
    pub(crate) fn release_response(&self) {
        let mut state = lock(&self.state);
        if !std::mem::take(&mut state.held) {
            return;
        }
        let waker = state.waker.take();
        drop(state);
        wake(waker);
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;
    use std::io::{self, IoSlice};
    use std::sync::{Arc, Mutex};
    use std::task::{Context, Poll, Waker};

    use crate::message::Message;
    use crate::outbox::corks::{CorkMark, Corks};
    use crate::outbox::link::Link;
    use crate::outbox::link::tests::{BUDGET, commits, in_turn, send_in};
    use crate::wire::frame::Wire;

    const SWITCHING: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\n\r\n";

    /// A socket that takes everything and keeps each write apart.
    #[derive(Default)]
    struct Writes(Mutex<Vec<Vec<u8>>>);

    impl Wire for Writes {
        fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            let write: Vec<u8> = bufs.iter().flat_map(|buf| buf.iter().copied()).collect();
            let n = write.len();
            self.0.lock().unwrap().push(write);
            Ok(n)
        }

        fn poll_write_ready(&self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    impl Writes {
        fn taken(&self) -> Vec<Vec<u8>> {
            std::mem::take(&mut *self.0.lock().unwrap())
        }
    }

    /// The socket task does not write the held 101 on its own; the connect turn writes it
    /// with its first frames, in one write.
    #[tokio::test]
    async fn the_101_leaves_with_the_connect_turns_frames() {
        let wire = Arc::new(Writes::default());
        let link = Arc::new(Link::new(8, Some(wire.clone())));
        link.hold_response(SWITCHING);
        let commits = commits();
        let mut cx = Context::from_waker(Waker::noop());
        assert!(link.poll_next(&mut cx, &commits, false, true).is_pending(), "held");
        assert!(wire.taken().is_empty());

        let (corks, mark) = (Corks::default(), CorkMark::default());
        in_turn(&corks, || {
            link.cork_response(&corks, &mark);
            for text in ["one", "two"] {
                let message = Cow::Owned(Message::from(text));
                send_in(&link, message, 0, true, BUDGET, &corks, &mark).expect("corked");
            }
        });
        let mut expected = SWITCHING.to_vec();
        expected.extend_from_slice(b"\x81\x03one\x81\x03two");
        assert_eq!(wire.taken(), [expected]);
        assert!(link.poll_next(&mut cx, &commits, false, true).is_pending(), "all written");
    }

    /// A turn that sends nothing to the socket still writes the 101 when its poll ends.
    #[tokio::test]
    async fn a_connect_turn_that_sends_nothing_writes_the_101() {
        let wire = Arc::new(Writes::default());
        let link = Arc::new(Link::new(8, Some(wire.clone())));
        link.hold_response(SWITCHING);
        let (corks, mark) = (Corks::default(), CorkMark::default());
        in_turn(&corks, || link.cork_response(&corks, &mark));
        assert_eq!(wire.taken(), [SWITCHING.to_vec()]);
    }

    /// Outside a turn, the 101 is the socket task's to write, at once.
    #[tokio::test]
    async fn without_a_turn_the_socket_task_writes_the_101() {
        let wire = Arc::new(Writes::default());
        let link = Arc::new(Link::new(8, Some(wire.clone())));
        link.hold_response(SWITCHING);
        link.cork_response(&Corks::default(), &CorkMark::default());
        let mut cx = Context::from_waker(Waker::noop());
        let next = link.poll_next(&mut cx, &commits(), false, true);
        assert!(matches!(next, Poll::Ready(crate::outbox::link::Next::Write)));
        assert!(matches!(link.poll_flush(&mut cx), Poll::Ready(Ok(()))));
        assert_eq!(wire.taken(), [SWITCHING.to_vec()]);
    }

    /// A pong (any write of the socket task) before the connect turn goes right after the 101.
    #[tokio::test]
    async fn a_write_before_the_connect_turn_follows_the_101() {
        let wire = Arc::new(Writes::default());
        let link = Link::new(8, Some(wire.clone()));
        link.hold_response(SWITCHING);
        assert!(link.encode_control(0xA, b"p"));
        assert!(matches!(
            link.poll_flush(&mut Context::from_waker(Waker::noop())),
            Poll::Ready(Ok(()))
        ));
        let mut expected = SWITCHING.to_vec();
        expected.extend_from_slice(b"\x8a\x01p");
        assert_eq!(wire.taken(), [expected]);
    }
}
