//! Parking, as the link sees it: once its instance hibernates, an idle socket gives up its
//! task and its place in tokio's reactor (see `transport::parked`). While parked, the link has
//! no socket to write to and its waker is the parked socket's: whatever would have woken the
//! socket task (a message queued from outside a turn, a forced close, shutdown, the agent
//! letting go) resumes the socket instead, and so does the instance waking up.

use std::sync::Arc;
use std::task::Waker;

use super::{Cork, Drain, Link, Socket, State, wake};
use crate::sync::lock;
use crate::wire::frame::Wire;

impl Link {
    /// The instance hibernated: the socket task parks the socket once nothing waits
    /// ([`Next::Park`](super::Next::Park)).
    pub(crate) fn ask_to_park(&self) {
        let waker = {
            let mut state = lock(&self.state);
            state.asked_to_park = true;
            if state.socket == Socket::Parked { None } else { state.waker.take() }
        };
        wake(waker);
    }

    /// The instance woke up: a parked socket resumes now, and a socket about to park does not.
    pub(crate) fn stay_awake(&self) {
        let waker = {
            let mut state = lock(&self.state);
            state.asked_to_park = false;
            if state.socket == Socket::Parked { state.waker.take() } else { None }
        };
        wake(waker);
    }

    /// Parking, first step: the link lets go of the socket, if it may park now.
    pub(crate) fn unwire(&self) -> Option<Arc<dyn Wire>> {
        let mut state = lock(&self.state);
        if !state.may_park() {
            return None;
        }
        state.wire.take()
    }

    /// Parking, last step: from now on `resume` is woken by whatever needs the socket.
    /// `false` if something came up since [`unwire`](Self::unwire) (a message queued, a
    /// close, shutdown, the instance woke up): the caller resumes the socket at once.
    pub(crate) fn park(&self, resume: Waker) -> bool {
        let mut state = lock(&self.state);
        if !state.may_park() || state.wire.is_some() {
            return false;
        }
        state.waker = Some(resume);
        state.socket = Socket::Parked;
        true
    }

    /// The socket is back (resumed, or its parking fell through).
    pub(crate) fn rewire(&self, wire: Arc<dyn Wire>) {
        let mut state = lock(&self.state);
        state.wire = Some(wire);
        state.socket = Socket::Relaying;
    }

    /// The parked socket has something to read: it resumes.
    pub(crate) fn wake_parked(&self) {
        let waker = {
            let mut state = lock(&self.state);
            if state.socket == Socket::Parked { state.waker.take() } else { None }
        };
        wake(waker);
    }
}

impl State {
    /// Asked to park, and nothing to write, queued, held or said.
    fn may_park(&self) -> bool {
        self.asked_to_park
            && self.socket == Socket::Relaying
            && self.queue.is_empty()
            && self.out.is_empty()
            && self.cork == Cork::Open
            && self.forced.is_none()
            && self.drain == Drain::No
            && !self.abandoned
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::Ordering;
    use std::task::{Context, Poll};

    use crate::outbox::link::tests::{Flag, commits, flagged, queued, send, sockets, texts};
    use crate::outbox::link::{Link, LinkHandle, Next};
    use crate::wire::CloseFrame;
    use crate::wire::frame::Wire;

    /// Parks the link the way the socket task does: the flag is raised when the socket must
    /// resume; the wire is what the link let go of.
    fn parked(link: &Arc<Link>) -> (Arc<Flag>, Arc<dyn Wire>) {
        let wire = link.unwire().expect("idle: the socket may park");
        let (flag, waker) = flagged();
        assert!(link.park(waker));
        (flag, wire)
    }

    #[tokio::test]
    async fn an_idle_socket_hears_park_once_asked_and_only_if_it_may() {
        let commits = commits();
        let (_, links, _) = sockets(1);
        let link = &links[0];
        let (woken, waker) = flagged();
        let mut cx = Context::from_waker(&waker);
        assert!(link.poll_next(&mut cx, &commits, false, true).is_pending(), "not asked yet");
        link.ask_to_park();
        assert!(woken.0.load(Ordering::SeqCst), "asking wakes the socket task");
        assert!(matches!(link.poll_next(&mut cx, &commits, false, true), Poll::Ready(Next::Park)));
        assert!(
            link.poll_next(&mut cx, &commits, false, false).is_pending(),
            "a socket task with a frame half-read does not park"
        );
        link.stay_awake();
        assert!(link.poll_next(&mut cx, &commits, false, true).is_pending(), "woken up again");
    }

    #[tokio::test]
    async fn a_parked_link_queues_what_is_sent_and_resumes_its_socket() {
        let (wires, links, _) = sockets(1);
        let link = &links[0];
        link.ask_to_park();
        let (resume, wire) = parked(link);
        send(link, "while parked").expect("queued");
        assert!(resume.0.load(Ordering::SeqCst), "a queued message resumes the socket");
        assert!(texts(&wires[0]).is_empty(), "nothing is written without the socket");
        link.rewire(wire);
        assert_eq!(queued(link), 1, "the resumed task writes it");
    }

    #[tokio::test]
    async fn waking_the_instance_a_close_shutdown_or_letting_go_resume_a_parked_socket() {
        type Poke = fn(&Arc<Link>);
        let pokes: [(&str, Poke); 4] = [
            ("the instance wakes", |link| link.stay_awake()),
            ("a forced close", |link| {
                link.force_close(CloseFrame { code: 1013, reason: String::new() })
            }),
            ("shutdown", |link| link.shut_down()),
            ("the agent lets go", |link| drop(LinkHandle::new(link.clone()))),
        ];
        for (what, poke) in pokes {
            let (_, links, _) = sockets(1);
            let link = &links[0];
            link.ask_to_park();
            let (resume, _wire) = parked(link);
            link.ask_to_park(); // asking again does not resume it
            assert!(!resume.0.load(Ordering::SeqCst), "{what}: still parked");
            poke(link);
            assert!(resume.0.load(Ordering::SeqCst), "{what} resumes the socket");
        }
    }

    #[tokio::test]
    async fn parking_falls_through_when_something_comes_up_between_its_steps() {
        let (_, links, _) = sockets(2);
        for link in &links {
            link.ask_to_park();
        }
        let wire = links[0].unwire().expect("idle");
        send(&links[0], "meanwhile").expect("queued");
        assert!(!links[0].park(flagged().1), "a message queued meanwhile: resume at once");
        links[0].rewire(wire);

        let wire = links[1].unwire().expect("idle");
        links[1].stay_awake();
        assert!(!links[1].park(flagged().1), "the instance woke meanwhile");
        links[1].rewire(wire);

        send(&links[1], "busy").expect("written");
        links[1].ask_to_park();
        assert!(links[1].unwire().is_some(), "written at once: nothing waits, it may park");
    }

    #[tokio::test]
    async fn only_a_parked_socket_is_resumed_by_its_readiness() {
        let commits = commits();
        let (_, links, _) = sockets(1);
        let link = &links[0];
        let (task, waker) = flagged();
        let mut cx = Context::from_waker(&waker);
        assert!(link.poll_next(&mut cx, &commits, false, true).is_pending());
        link.wake_parked();
        assert!(!task.0.load(Ordering::SeqCst), "a running socket task is not woken");
        link.ask_to_park();
        let (resume, _wire) = parked(link);
        link.wake_parked();
        assert!(resume.0.load(Ordering::SeqCst), "readable: the parked socket resumes");
    }
}
