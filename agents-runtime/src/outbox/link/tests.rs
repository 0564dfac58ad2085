//! The link's tests: sends, queueing, the output gate, corking and closing.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::task::Wake;

use super::*;
use crate::storage::MemoryStore;
use crate::wire::frame::tests::{Trickle, decode};

pub(super) struct Flag(pub(super) AtomicBool);

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }
}

pub(super) const BUDGET: usize = 1 << 20;

/// Sends `message` through `link` as a connection with `mark` in `corks` would.
#[allow(clippy::too_many_arguments)]
pub(super) fn send_in(
    link: &Arc<Link>,
    message: Cow<'_, Message>,
    after: WriteSeq,
    released: bool,
    budget: usize,
    corks: &Corks,
    mark: &CorkMark,
) -> Result<(), PushError> {
    link.send(Outbound { message, after, released, budget, mark }, corks)
}

/// Sends `text`, released by the gate, outside any turn.
pub(super) fn send(link: &Arc<Link>, text: &str) -> Result<(), PushError> {
    let mark = CorkMark::default();
    let message = Cow::Owned(text.into());
    let out = Outbound { message, after: 0, released: true, budget: BUDGET, mark: &mark };
    link.send(out, &Corks::default())
}

pub(super) fn queued(link: &Link) -> usize {
    lock(&link.state).queue.len()
}

pub(super) fn commits() -> GroupCommit {
    GroupCommit::start(Arc::new(MemoryStore::new()), std::time::Duration::from_secs(5))
}

pub(super) fn texts(wire: &Trickle) -> Vec<String> {
    decode(&wire.taken()).into_iter().map(|m| m.into_text().unwrap().to_string()).collect()
}

#[tokio::test]
async fn without_a_socket_it_queues_bounded_in_order_and_wakes_on_the_first_only() {
    let commits = commits();
    let link = Arc::new(Link::new(2, None));
    let flag = Arc::new(Flag(AtomicBool::new(false)));
    let waker = Waker::from(flag.clone());
    let mut cx = Context::from_waker(&waker);
    assert!(link.poll_next(&mut cx, &commits, false, false).is_pending());
    send(&link, "a").expect("room");
    assert!(flag.0.swap(false, Ordering::SeqCst), "the first push wakes the socket");
    send(&link, "b").expect("room");
    assert!(!flag.0.load(Ordering::SeqCst), "no wake-up while the queue is not empty");
    assert_eq!(send(&link, "c"), Err(PushError::Full));
    for want in ["a", "b"] {
        match link.try_pop() {
            Some(Outgoing::Message(m, _)) => assert_eq!(m.as_text(), Some(want)),
            other => panic!("expected {want}, got {other:?}"),
        }
    }
    assert!(link.try_pop().is_none());
    link.close();
    assert_eq!(send(&link, "d"), Err(PushError::Closed));
    let frame = CloseFrame { code: 1000, reason: String::new() };
    assert!(matches!(link.push_close(frame, 0), Err((PushError::Closed, _))));
}

#[tokio::test]
async fn a_released_message_goes_straight_to_an_idle_socket() {
    let commits = commits();
    let wire = Arc::new(Trickle::new(usize::MAX, usize::MAX));
    let link = Arc::new(Link::new(4, Some(wire.clone())));
    send(&link, "hi").expect("sent");
    assert_eq!((texts(&wire), queued(&link)), (vec!["hi".to_owned()], 0));
    let waker = Waker::noop();
    let mut cx = Context::from_waker(waker);
    assert!(
        link.poll_next(&mut cx, &commits, false, false).is_pending(),
        "nothing for the socket task"
    );
}

#[tokio::test]
async fn nothing_overtakes_what_waits_for_the_gate_or_the_socket() {
    let commits = commits();
    let corks = Corks::default();
    let wire = Arc::new(Trickle::new(usize::MAX, usize::MAX));
    let link = Arc::new(Link::new(8, Some(wire.clone())));
    let waker = Waker::noop();
    let mut cx = Context::from_waker(waker);
    // Held by the output gate: queued, and what follows queues behind it.
    let mark = CorkMark::default();
    send_in(&link, Cow::Owned("gated".into()), 7, false, BUDGET, &corks, &mark).expect("queued");
    send(&link, "after").expect("queued");
    assert_eq!(queued(&link), 2);
    assert!(matches!(link.poll_next(&mut cx, &commits, false, false), Poll::Ready(Next::Wait(7))));
    assert!(wire.taken().is_empty());
    // A full socket: the rest of a half-written frame is ahead of everything.
    let wire = Arc::new(Trickle::new(usize::MAX, 3));
    let link = Arc::new(Link::new(8, Some(wire.clone())));
    send(&link, "first").expect("partly written");
    send(&link, "second").expect("queued");
    assert_eq!(queued(&link), 1);
    assert!(matches!(link.poll_next(&mut cx, &commits, false, false), Poll::Ready(Next::Write)));
    wire.open(usize::MAX);
    link.encode_batch(&commits);
    assert!(link.poll_flush(&mut cx).is_ready());
    assert_eq!(texts(&wire), ["first", "second"]);
}

#[tokio::test]
async fn the_byte_budget_bounds_what_is_queued_only() {
    let link = Arc::new(Link::new(100, None));
    let big = "x".repeat(600);
    let corks = Corks::default();
    let mark = CorkMark::default();
    let queue = |text: &str| send_in(&link, Cow::Owned(text.into()), 0, true, 1000, &corks, &mark);
    assert_eq!(queue(&big), Ok(()), "one message bigger than the budget goes through");
    assert_eq!(queue(&big), Err(PushError::Full));
    link.try_pop();
    link.written(600);
    assert_eq!(queue(&big), Ok(()));
    // Written straight to a socket, nothing counts.
    let wire = Arc::new(Trickle::new(usize::MAX, usize::MAX));
    let link = Arc::new(Link::new(100, Some(wire)));
    for _ in 0..10 {
        let sent = send_in(&link, Cow::Owned(big.as_str().into()), 0, true, 1000, &corks, &mark);
        sent.expect("written");
    }
    assert_eq!(link.queued_bytes.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn control_frames_never_split_a_frame() {
    let wire = Arc::new(Trickle::new(usize::MAX, 4));
    let link = Arc::new(Link::new(8, Some(wire.clone())));
    let waker = Waker::noop();
    let mut cx = Context::from_waker(waker);
    send(&link, "hello").expect("partly written");
    let pong = [0x8A, 0];
    assert!(link.encode_control(crate::wire::frame::OP_PONG, &[]));
    wire.open(usize::MAX);
    assert!(link.poll_flush(&mut cx).is_ready());
    let mut want = vec![0x81, 5];
    want.extend_from_slice(b"hello");
    want.extend_from_slice(&pong);
    assert_eq!(wire.taken(), want);
}

#[tokio::test]
async fn a_burst_gives_its_memory_back_once_drained() {
    let link = Arc::new(Link::new(1024, None));
    for _ in 0..500 {
        send(&link, "x").expect("room");
    }
    while link.try_pop().is_some() {}
    assert_eq!(lock(&link.state).queue.capacity(), 0);
}

#[tokio::test]
async fn dropping_the_sender_ends_the_queue_after_what_is_left() {
    let commits = commits();
    let link = Arc::new(Link::new(4, None));
    let sender = LinkHandle::new(link.clone());
    send(&link, "last").expect("room");
    drop(sender);
    let waker = Waker::noop();
    let mut cx = Context::from_waker(waker);
    assert!(matches!(link.poll_next(&mut cx, &commits, false, false), Poll::Ready(Next::Write)));
    link.encode_batch(&commits);
    assert!(link.poll_flush(&mut cx).is_ready());
    assert!(matches!(
        link.poll_next(&mut cx, &commits, false, false),
        Poll::Ready(Next::Abandoned)
    ));
}

#[tokio::test]
async fn a_turn_corks_its_sends_into_one_write_when_it_yields() {
    let wire = Arc::new(Trickle::new(usize::MAX, usize::MAX));
    let link = Arc::new(Link::new(8, Some(wire.clone())));
    let corks = Corks::default();
    let waker = Waker::noop();
    let mut cx = Context::from_waker(waker);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mark = CorkMark::default();
    let mut turn = Box::pin(std::future::poll_fn(|_| {
        for text in ["a", "b", "c"] {
            send_in(&link, Cow::Owned(text.into()), 0, true, BUDGET, &corks, &mark)
                .expect("corked");
        }
        let in_buffer = lock(&link.state).out.len();
        seen.lock().unwrap().push((wire.taken().len(), in_buffer));
        Poll::Ready(())
    }));
    assert!(corks.poll(turn.as_mut(), &mut cx).is_ready());
    assert_eq!(*seen.lock().unwrap(), [(0, 0)], "nothing written, all in the corks' log");
    assert_eq!(texts(&wire), ["a", "b", "c"], "all written when it ended");
    // Outside a turn, a send is written at once.
    send(&link, "d").expect("written");
    assert_eq!(texts(&wire), ["a", "b", "c", "d"]);
}

#[tokio::test]
async fn a_turn_writes_out_every_64_kib_it_corks() {
    let wire = Arc::new(Trickle::new(usize::MAX, usize::MAX));
    let link = Arc::new(Link::new(8, Some(wire.clone())));
    let corks = Corks::default();
    let waker = Waker::noop();
    let mut cx = Context::from_waker(waker);
    let chunk = Message::from(vec![1u8; 1000]);
    let mark = CorkMark::default();
    let mut turn = Box::pin(std::future::poll_fn(|_| {
        for _ in 0..200 {
            send_in(&link, Cow::Borrowed(&chunk), 0, true, BUDGET, &corks, &mark).expect("corked");
            assert!(lock(&link.state).out.len() <= CORK_LIMIT + 1004);
        }
        assert!(wire.taken().len() >= 2 * CORK_LIMIT, "written out during the turn");
        Poll::Ready(())
    }));
    assert!(corks.poll(turn.as_mut(), &mut cx).is_ready());
    assert_eq!(decode(&wire.taken()).len(), 200);
}

/// Runs `turn` as one poll of an instance's task: its sends are corked.
pub(super) fn in_turn(corks: &Corks, turn: impl FnOnce()) {
    let mut turn = Some(turn);
    let mut poll = Box::pin(std::future::poll_fn(|_| {
        (turn.take().expect("polled once"))();
        Poll::Ready(())
    }));
    let waker = Waker::noop();
    assert!(corks.poll(poll.as_mut(), &mut Context::from_waker(waker)).is_ready());
}

#[tokio::test]
async fn a_frame_the_gate_holds_in_a_turn_is_not_overtaken_by_the_next_ones() {
    let commits = commits();
    let wire = Arc::new(Trickle::new(usize::MAX, usize::MAX));
    let link = Arc::new(Link::new(8, Some(wire.clone())));
    let (corks, mark) = (Corks::default(), CorkMark::default());
    in_turn(&corks, || {
        let send = |text: &str, after, released| {
            send_in(&link, Cow::Owned(text.into()), after, released, BUDGET, &corks, &mark)
        };
        send("a", 0, true).expect("logged");
        send("gated", 7, false).expect("queued");
        send("b", 0, true).expect("queued behind it");
        assert!(
            matches!(
                link.poll_next(&mut Context::from_waker(Waker::noop()), &commits, false, false),
                Poll::Pending
            ),
            "the socket task waits for the turn's frames to go first"
        );
    });
    assert_eq!(texts(&wire), ["a"], "the turn wrote what it logged");
    assert_eq!(queued(&link), 2, "then the held frame, and the one after it");
}

/// A waker that raises a flag.
pub(super) fn flagged() -> (Arc<Flag>, Waker) {
    let flag = Arc::new(Flag(AtomicBool::new(false)));
    let waker = Waker::from(flag.clone());
    (flag, waker)
}

/// `n` sockets that take everything: their wires, links and marks in the cork log.
pub(super) fn sockets(n: usize) -> (Vec<Arc<Trickle>>, Vec<Arc<Link>>, Vec<CorkMark>) {
    let wires: Vec<_> = (0..n).map(|_| Arc::new(Trickle::new(usize::MAX, usize::MAX))).collect();
    let links = wires.iter().map(|wire| Arc::new(Link::new(8, Some(wire.clone())))).collect();
    (wires, links, (0..n).map(|_| CorkMark::default()).collect())
}

#[tokio::test]
async fn a_broadcast_logs_its_frame_once_and_each_socket_gets_it_in_order() {
    let (wires, links, marks) = sockets(3);
    let corks = Corks::default();
    let big = Message::from(vec![9u8; 5000]);
    in_turn(&corks, || {
        for text in ["one", "two"] {
            let message = Message::from(text);
            for (link, mark) in links.iter().zip(&marks) {
                let shared = Cow::Borrowed(&message);
                send_in(link, shared, 0, true, BUDGET, &corks, mark).expect("logged");
            }
        }
        let (bytes, slices) = corks.log_size();
        assert_eq!(bytes, 2 * (2 + 3), "each frame encoded once");
        assert_eq!(slices, 3, "one run per socket: its frames follow each other in the log");
        // A large payload moves that socket's frames to its own buffer, in order.
        let shared = Cow::Borrowed(&big);
        send_in(&links[1], shared, 0, true, BUDGET, &corks, &marks[1]).expect("buffered");
        send_in(&links[1], Cow::Owned("three".into()), 0, true, BUDGET, &corks, &marks[1])
            .expect("buffered");
    });
    assert_eq!(texts(&wires[0]), ["one", "two"]);
    assert_eq!(texts(&wires[2]), ["one", "two"]);
    let frames = decode(&wires[1].taken());
    assert_eq!(frames.len(), 3);
    assert_eq!(frames[1].clone().into_text().unwrap().as_str(), "two");
    assert_eq!(frames[2].len(), 5000);
    // Behind a large payload, as always, the next frame queues for the socket task.
    assert_eq!(queued(&links[1]), 1);
}

/// A busy room's turns list the same links: the corks keep each from one turn to the
/// next instead of cloning it again, let go of one the next turn did not list, and of all
/// once the instance hibernates (`trim`).
#[tokio::test]
async fn the_corks_keep_the_last_turns_links_until_the_next_turn_or_hibernation() {
    let (wires, links, marks) = sockets(2);
    let corks = Corks::default();
    let send = |i: usize, text: &str| {
        let message = Cow::Owned(text.into());
        send_in(&links[i], message, 0, true, BUDGET, &corks, &marks[i]).expect("logged");
    };
    in_turn(&corks, || {
        send(0, "a");
        send(1, "a");
    });
    assert_eq!(links.iter().map(Arc::strong_count).collect::<Vec<_>>(), [2, 2]);
    in_turn(&corks, || {
        send(0, "b");
        assert_eq!(Arc::strong_count(&links[0]), 2, "moved from the last turn, not cloned");
    });
    assert_eq!(links.iter().map(Arc::strong_count).collect::<Vec<_>>(), [2, 1]);
    in_turn(&corks, || {
        send(0, "c");
        corks.trim();
    });
    assert_eq!(links.iter().map(Arc::strong_count).collect::<Vec<_>>(), [1, 1]);
    assert_eq!(texts(&wires[0]), ["a", "b", "c"]);
    assert_eq!(texts(&wires[1]), ["a"]);
}

/// The corks keep their memory for the next turn while the instance is busy, and while it
/// waits for its next event only up to `KEPT_WHILE_IDLE`, and only after writing to a room
/// (two links or more); none once it hibernates.
#[tokio::test]
async fn the_corks_keep_their_memory_while_busy_and_little_of_it_while_idle() {
    let (wires, links, marks) = sockets(2);
    let corks = Corks::default();
    let send = |i: usize, text: String| {
        send_in(&links[i], Cow::Owned(text.into()), 0, true, BUDGET, &corks, &marks[i])
            .expect("ok");
    };
    let large = || {
        // 2 sockets x 20 frames of 2,000 bytes: an 80 KB log.
        for n in 0..40 {
            send(n % 2, format!("{n:02}").repeat(1000));
        }
    };
    in_turn(&corks, large);
    assert!(corks.kept_log() >= 80_000, "busy: kept");
    in_turn(&corks, || {
        send(0, "a".repeat(100));
        corks.idle();
    });
    assert_eq!(corks.kept_log(), 0, "idle, with more than KEPT_WHILE_IDLE: freed");
    in_turn(&corks, || {
        send(1, "b".repeat(100));
        corks.idle();
    });
    assert_eq!(corks.kept_log(), 0, "idle after writing to one socket: freed");
    assert_eq!(Arc::strong_count(&links[1]), 1, "and the link let go of");
    in_turn(&corks, || {
        send(0, "c".repeat(100));
        send(1, "c".repeat(100));
        corks.idle();
    });
    assert!(corks.kept_log() > 0, "idle after writing a little to a room: kept");
    assert_eq!(Arc::strong_count(&links[1]), 2, "and the links it listed");
    in_turn(&corks, || corks.trim());
    assert_eq!(corks.kept_log(), 0, "hibernating: freed");
    assert_eq!(Arc::strong_count(&links[1]), 1);
    assert_eq!(texts(&wires[0]).len(), 22);
    assert_eq!(texts(&wires[1]).len(), 22);
}

#[tokio::test]
async fn frames_that_skip_a_socket_or_repeat_split_its_run_and_keep_their_order() {
    let (wires, links, marks) = sockets(2);
    let corks = Corks::default();
    in_turn(&corks, || {
        let send = |to: &[usize], message: &Message| {
            for &i in to {
                let shared = Cow::Borrowed(message);
                send_in(&links[i], shared, 0, true, BUDGET, &corks, &marks[i]).expect("logged");
            }
        };
        send(&[0], &Message::from("a"));
        send(&[0, 1], &Message::from("b"));
        send(&[1], &Message::from("c"));
        send(&[0], &Message::from("d"));
        let twice = Message::from("e");
        send(&[1, 1], &twice);
        let (bytes, slices) = corks.log_size();
        assert_eq!(bytes, 5 * 3, "each frame encoded once, the repeated one too");
        // 0: a b | d; 1: b c | e | e.
        assert_eq!(slices, 5);
    });
    assert_eq!(texts(&wires[0]), ["a", "b", "d"]);
    assert_eq!(texts(&wires[1]), ["b", "c", "e", "e"]);
}

#[tokio::test]
async fn corked_frames_follow_a_large_auto_response_written_ahead_of_them_whole() {
    let commits = commits();
    let wire = Arc::new(Trickle::new(usize::MAX, 0)); // full until opened
    let link = Arc::new(Link::new(8, Some(wire.clone())));
    let (corks, mark) = (Corks::default(), CorkMark::default());
    let big = Message::from("ß".repeat(3000)); // 6000 bytes: written from its own bytes
    in_turn(&corks, || {
        send_in(&link, Cow::Owned("a".into()), 0, true, BUDGET, &corks, &mark).expect("logged");
        // The socket task answers the auto-response meanwhile, ahead of everything.
        assert!(link.encode_first(&big));
    });
    wire.open(usize::MAX);
    let mut cx = Context::from_waker(Waker::noop());
    assert!(matches!(link.poll_next(&mut cx, &commits, false, false), Poll::Ready(Next::Write)));
    assert!(matches!(link.poll_flush(&mut cx), Poll::Ready(Ok(()))));
    let frames = decode(&wire.taken());
    assert_eq!(frames.len(), 2, "two whole frames, the logged one not inside the other");
    assert_eq!(frames[0].clone().into_text().unwrap().as_str(), big.as_text().unwrap());
    assert_eq!(frames[1].clone().into_text().unwrap().as_str(), "a");
}

#[tokio::test]
async fn a_drain_waits_for_the_turns_frames_and_the_uncork_wakes_it() {
    let commits = commits();
    let (wires, links, marks) = sockets(1);
    let (wire, link, mark, corks) = (&wires[0], &links[0], &marks[0], Corks::default());
    let (flag, waker) = flagged();
    let mut cx = Context::from_waker(&waker);
    in_turn(&corks, || {
        send_in(link, Cow::Owned("a".into()), 0, true, BUDGET, &corks, mark).expect("logged");
        link.shut_down();
        assert!(matches!(
            link.poll_next(&mut cx, &commits, false, false),
            Poll::Ready(Next::Drain)
        ));
        assert!(link.poll_left(&mut cx, &commits).is_pending(), "the turn's frame waits");
    });
    assert!(flag.0.swap(false, Ordering::SeqCst), "the uncork wakes the draining task");
    assert_eq!(texts(wire), ["a"], "written before the close");
    assert!(matches!(link.poll_left(&mut cx, &commits), Poll::Ready(None)), "then done");
}

#[tokio::test]
async fn a_connection_let_go_of_during_a_turn_is_ended_after_it() {
    let commits = commits();
    let (wires, links, marks) = sockets(1);
    let (wire, link, mark, corks) = (&wires[0], &links[0], &marks[0], Corks::default());
    let (flag, waker) = flagged();
    let mut cx = Context::from_waker(&waker);
    in_turn(&corks, || {
        send_in(link, Cow::Owned("a".into()), 0, true, BUDGET, &corks, mark).expect("logged");
        assert!(link.poll_next(&mut cx, &commits, false, false).is_pending(), "corked");
        link.abandon();
        // Woken by it, the socket task finds the link corked and waits again.
        assert!(flag.0.swap(false, Ordering::SeqCst));
        assert!(link.poll_next(&mut cx, &commits, false, false).is_pending(), "corked");
    });
    assert!(flag.0.swap(false, Ordering::SeqCst), "the uncork wakes the socket task");
    assert!(matches!(
        link.poll_next(&mut cx, &commits, false, false),
        Poll::Ready(Next::Abandoned)
    ));
    assert_eq!(texts(wire), ["a"]);
}

#[tokio::test]
async fn a_mark_from_a_turn_whose_number_came_round_again_is_not_another_connections() {
    let (wires, links, marks) = sockets(2);
    let corks = Corks::default();
    let send = |i: usize, text: &str| {
        send_in(&links[i], Cow::Owned(text.into()), 0, true, BUDGET, &corks, &marks[i])
    };
    in_turn(&corks, || send(0, "a").expect("listed in slot 0"));
    // The turns' numbers come round: the next turn has the number of the last one.
    let last = corks.set_turn(0);
    corks.set_turn(last - 1);
    in_turn(&corks, || {
        send(1, "b").expect("listed in slot 0 now");
        send(0, "c").expect("its own listing, not 1's");
    });
    assert_eq!(texts(&wires[0]), ["a", "c"]);
    assert_eq!(texts(&wires[1]), ["b"]);
    // After the last number, 1 (0 marks no turn).
    corks.set_turn(crate::outbox::corks::TURN_MASK);
    in_turn(&corks, || {});
    assert_eq!(corks.set_turn(0), 1);
}

#[tokio::test]
async fn what_a_full_socket_does_not_take_at_the_turns_end_waits_in_order() {
    let commits = commits();
    // The socket takes 7 bytes: one whole 5-byte frame and 2 bytes of the next.
    let wire = Arc::new(Trickle::new(usize::MAX, 7));
    let link = Arc::new(Link::new(8, Some(wire.clone())));
    let (corks, mark) = (Corks::default(), CorkMark::default());
    in_turn(&corks, || {
        for text in ["abc", "def", "ghi"] {
            send_in(&link, Cow::Owned(text.into()), 0, true, BUDGET, &corks, &mark)
                .expect("logged");
        }
    });
    let mut cx = Context::from_waker(Waker::noop());
    assert!(matches!(link.poll_next(&mut cx, &commits, false, false), Poll::Ready(Next::Write)));
    wire.open(usize::MAX);
    assert!(link.poll_flush(&mut cx).is_ready());
    assert_eq!(texts(&wire), ["abc", "def", "ghi"]);
}

#[tokio::test]
async fn a_socket_that_closed_during_the_turn_gets_none_of_its_frames() {
    let wire = Arc::new(Trickle::new(usize::MAX, usize::MAX));
    let link = Arc::new(Link::new(8, Some(wire.clone())));
    let (corks, mark) = (Corks::default(), CorkMark::default());
    in_turn(&corks, || {
        send_in(&link, Cow::Owned("before".into()), 0, true, BUDGET, &corks, &mark)
            .expect("logged");
        link.close(); // the socket task: the client closed, its close frame is sent next
    });
    assert!(wire.taken().is_empty(), "nothing may follow the close frame");
}
