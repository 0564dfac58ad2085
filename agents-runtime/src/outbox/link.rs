//! [`Link`]: one connection's outbox and the write side of its socket.

use std::borrow::Cow;
use std::io::{self, IoSlice};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker, ready};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::sync::lock;

use crate::message::Message;
use crate::storage::durability::{GroupCommit, Settled, WriteSeq};
use crate::wire::CloseFrame;
use crate::wire::frame::{Frames, Header, Wire, payload_bytes};
use corks::{Append, CORK_LIMIT, CorkMark, Corks, Listing, Turn};

use super::queue::{Outgoing, Queue};

pub(crate) mod corks;
mod inbound;
mod lost;
mod parking;
mod response;
mod state;

use state::{Cork, Drain, Socket, State};

/// What the socket task does next (see [`Link::poll_next`]).
#[derive(Debug)]
pub(crate) enum Next {
    /// Write: bytes wait, or the first queued message is released.
    Write,
    /// The first queued message waits for write `WriteSeq` to be durable.
    Wait(WriteSeq),
    /// Close with this frame once write `WriteSeq` is durable (taken off the queue).
    Close(CloseFrame, WriteSeq),
    /// The agent side let go of the connection and nothing is left to write.
    Abandoned,
    /// Drop what is queued and close with this frame (a forced close: the outbox overflowed,
    /// or a close could not be queued).
    Forced(CloseFrame),
    /// The server shuts down: write what is queued, then close with 1001 (said once).
    Drain,
    /// The instance hibernated and nothing waits: the socket task may park the socket (see
    /// [`Link::ask_to_park`]).
    Park,
}

/// Why a push failed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum PushError {
    /// The queue holds its capacity in messages.
    Full,
    /// The socket task is gone.
    Closed,
}

/// Most queued messages encoded for one write.
const WRITE_BATCH: usize = 64;

/// Bytes waiting in a link's buffer past which control frames (pongs, the close frame) wait
/// for room like any writer, so a client that pings without reading cannot grow the buffer.
const CONTROL_LIMIT: usize = 64 * 1024;

/// Shared by a [`Connection`](crate::Connection) and its socket task.
pub(crate) struct Link {
    state: Mutex<State>,
    capacity: usize,
    /// Bytes of messages queued and not yet handed to the socket.
    queued_bytes: AtomicUsize,
    /// When the auto-response last answered this connection, in ms since the Unix epoch; 0
    /// for never.
    auto_responded_at: AtomicU64,
    /// Bytes of the client's messages in the instance's mailbox (see `inbound.rs`).
    inbound: AtomicUsize,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = lock(&self.state);
        f.debug_struct("Link")
            .field("capacity", &self.capacity)
            .field("queued", &state.queue.len())
            .field("unwritten", &state.out.len())
            .field("socket", &state.socket)
            .finish_non_exhaustive()
    }
}

/// A message handed to a link, with what decides its way: the write the output gate holds
/// it behind, whether that write is durable already, the connection's byte budget for
/// queued messages, and the connection's mark in the corks' log.
pub(crate) struct Outbound<'a> {
    pub(crate) message: Cow<'a, Message>,
    pub(crate) after: WriteSeq,
    pub(crate) released: bool,
    pub(crate) budget: usize,
    pub(crate) mark: &'a CorkMark,
}

/// Where a released message with nothing ahead of it went (see [`Link::deliver`]).
enum Delivered {
    /// Into the turn's corks, or all of it to the socket.
    Done,
    /// The socket took part of it: the socket task writes the rest, first.
    Partly,
    /// Nowhere yet: it queues.
    No,
}

impl Link {
    /// An outbox of at most `capacity` messages, writing to `wire`.
    pub(crate) fn new(capacity: usize, wire: Option<Arc<dyn Wire>>) -> Self {
        Self {
            state: Mutex::new(State { wire, ..State::default() }),
            capacity,
            queued_bytes: AtomicUsize::new(0),
            auto_responded_at: AtomicU64::new(0),
            inbound: AtomicUsize::new(0),
        }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Sends `out.message`, to be released once write `out.after` is durable
    /// (`out.released`: it is). Released, with nothing queued ahead of it, it is corked while
    /// `corks` are open (the instance's turn), or else written at once if nothing is
    /// half-written and the socket has room (if it takes part of it, the rest waits for the
    /// socket task, ahead of anything else). Anything else is queued, waking the socket task
    /// if the queue was empty, within the outbox's capacity and `out.budget` bytes (a single
    /// message bigger than the budget still goes into an empty queue).
    pub(crate) fn send(
        self: &Arc<Self>,
        out: Outbound<'_>,
        corks: &Corks,
    ) -> Result<(), PushError> {
        // The turn already listed this link: the frame joins the log, the link is not touched.
        let mut turn = corks.turn();
        let append = match &mut turn {
            Some(turn) if out.released => turn.append(out.mark, &out.message),
            _ => Append::NotLogged,
        };
        if let Append::Logged = append {
            return Ok(());
        }
        let mark = out.mark;
        let unsealed = self.send_unlogged(out, turn.as_mut(), append)?;
        if unsealed {
            drop(turn); // `None`: nothing is locked
            seal_after(corks, mark);
        }
        Ok(())
    }

    /// [`send`](Self::send) once the running turn's corks (`turn`, locked, if a turn runs)
    /// said what they do with the frame (`append`, not `Logged`): a broadcast asks them
    /// itself, under its hold on their lock.
    ///
    /// `Ok(true)`: the frame queued behind frames a turn logged for this link, and the caller
    /// did not hold that turn (it began between the caller's look at the corks and this
    /// link's lock), so it could not be sealed here: the caller seals it with [`seal_after`]
    /// before it sends again, or its next frame could join the log ahead of this one.
    pub(crate) fn send_unlogged(
        self: &Arc<Self>,
        out: Outbound<'_>,
        mut turn: Option<&mut Turn<'_>>,
        append: Append,
    ) -> Result<bool, PushError> {
        let mut guard = lock(&self.state);
        let state = &mut *guard;
        if state.socket == Socket::Closed {
            return Err(PushError::Closed);
        }
        if let (Append::Spill, Some(turn)) = (append, turn.as_deref_mut())
            && turn.spill(out.mark, &mut state.out)
        {
            state.cork = Cork::Buffered;
        }
        let ready = out.released
            && state.queue.is_empty()
            && state.forced.is_none()
            && !state.out.is_full()
            && state.cork != Cork::Logged;
        if ready {
            match self.deliver(state, &out.message, turn.as_deref_mut(), out.mark) {
                Delivered::Done => return Ok(false),
                Delivered::Partly => {
                    let waker = state.waker.take();
                    drop(guard);
                    wake(waker);
                    return Ok(false);
                }
                Delivered::No => {}
            }
        }
        let len = out.message.len();
        if state.queue.len() >= self.capacity || !self.reserve_bytes(len, out.budget) {
            return Err(PushError::Full);
        }
        let unsealed = state.cork == Cork::Logged && turn.is_none();
        if let (Cork::Logged, Some(turn)) = (state.cork, turn) {
            turn.seal(out.mark); // what this turn sends next queues behind this one
        }
        self.enqueue(guard, Outgoing::Message(out.message.into_owned(), out.after));
        Ok(unsealed)
    }

    /// A released message with nothing ahead of it: into the turn's corks (the turn's first
    /// frame to this socket lists it), or straight to the socket.
    fn deliver(
        self: &Arc<Self>,
        state: &mut State,
        message: &Message,
        turn: Option<&mut Turn<'_>>,
        mark: &CorkMark,
    ) -> Delivered {
        let Some(wire) = state.wire.as_deref() else { return Delivered::No };
        if state.cork != Cork::Open && state.out.len() >= CORK_LIMIT {
            // What the socket does not take stays, and what follows queues behind it.
            let _ = state.out.write_to(wire);
        }
        if state.out.len() < CORK_LIMIT {
            if state.cork != Cork::Open {
                state.out.push(message);
                return Delivered::Done;
            }
            if state.out.is_empty() {
                match turn.map_or(Listing::No, |turn| turn.list(self, mark, message)) {
                    Listing::Logged => {
                        state.cork = Cork::Logged;
                        return Delivered::Done;
                    }
                    Listing::Buffered => {
                        state.cork = Cork::Buffered;
                        state.out.push(message);
                        return Delivered::Done;
                    }
                    Listing::No => {}
                }
            }
        }
        if !state.out.is_empty() {
            return Delivered::No;
        }
        let (header, payload) = Header::of(message);
        let total = header.as_bytes().len() + payload.len();
        match wire.try_write_vectored(&[IoSlice::new(header.as_bytes()), IoSlice::new(payload)]) {
            Ok(n) if n == total => Delivered::Done,
            Ok(n) => {
                state.out.push_rest(header.as_bytes(), payload_bytes(message), n);
                Delivered::Partly
            }
            // Full, or broken: the socket task waits for room, or finds the error.
            Err(_) => Delivered::No,
        }
    }

    /// Queues a close frame, sent once write `after` is durable; hands it back if the queue is
    /// full or the socket task gone.
    pub(crate) fn push_close(
        &self,
        frame: CloseFrame,
        after: WriteSeq,
    ) -> Result<(), (PushError, CloseFrame)> {
        let state = lock(&self.state);
        if state.socket == Socket::Closed {
            return Err((PushError::Closed, frame));
        }
        if state.queue.len() >= self.capacity {
            return Err((PushError::Full, frame));
        }
        self.enqueue(state, Outgoing::Close(frame, after));
        Ok(())
    }

    /// Queues `outgoing`, waking the socket task if the queue was empty.
    fn enqueue(&self, mut state: std::sync::MutexGuard<'_, State>, outgoing: Outgoing) {
        state.queue.push_back(outgoing);
        let waker = if state.queue.len() == 1 { state.waker.take() } else { None };
        drop(state);
        wake(waker);
    }

    /// What the socket task does next; `Pending` (and a wake-up later) while there is nothing
    /// to write and the agent side holds on. While the socket task `waiting`s for the output
    /// gate, only bytes already encoded (a pong, the rest of a frame) are worth a write. A
    /// socket task that `may_park` (nothing half-read, nothing held back) hears
    /// [`Next::Park`] once its instance hibernates.
    pub(crate) fn poll_next(
        &self,
        cx: &mut Context<'_>,
        commits: &GroupCommit,
        waiting: bool,
        may_park: bool,
    ) -> Poll<Next> {
        let mut state = lock(&self.state);
        if let Some(frame) = &state.forced {
            return Poll::Ready(Next::Forced(CloseFrame::clone(frame)));
        }
        if state.drain == Drain::Asked {
            state.drain = Drain::Draining;
            return Poll::Ready(Next::Drain);
        }
        if !state.out.is_empty() && !state.held {
            return Poll::Ready(Next::Write);
        }
        // While corked, the turn's frames go ahead of the queue: the uncork wakes the task.
        if waiting || state.corked() {
            register(&mut state.waker, cx);
            return Poll::Pending;
        }
        let front = match state.queue.front() {
            Some(Outgoing::Message(_, after)) => Some(commits.settled(*after)),
            _ => None,
        };
        if let Some(Settled::Lost(why)) = &front {
            self.answer_lost(&mut state, commits, why);
        }
        match state.queue.front() {
            Some(Outgoing::Message(_, after)) if commits.is_durable(*after) => {
                return Poll::Ready(Next::Write);
            }
            Some(Outgoing::Message(_, after)) => return Poll::Ready(Next::Wait(*after)),
            Some(Outgoing::Close(..)) => {
                if let Some(Outgoing::Close(frame, after)) = state.pop() {
                    return Poll::Ready(Next::Close(frame, after));
                }
            }
            None => {}
        }
        if state.abandoned {
            return Poll::Ready(Next::Abandoned);
        }
        if may_park && state.asked_to_park {
            return Poll::Ready(Next::Park);
        }
        register(&mut state.waker, cx);
        Poll::Pending
    }

    /// What is left to write while the server shuts down ([`poll_next`](Self::poll_next)),
    /// `None` once nothing is. Frames a running turn corked for this socket are waited for:
    /// they go out before the close.
    pub(crate) fn poll_left(
        &self,
        cx: &mut Context<'_>,
        commits: &GroupCommit,
    ) -> Poll<Option<Next>> {
        {
            let mut state = lock(&self.state);
            if state.corked() && state.forced.is_none() && state.out.is_empty() {
                state.drain = Drain::WaitsForTurn;
                register(&mut state.waker, cx);
                return Poll::Pending;
            }
        }
        match self.poll_next(cx, commits, false, false) {
            Poll::Ready(next) => Poll::Ready(Some(next)),
            Poll::Pending => Poll::Ready(None),
        }
    }

    /// Encodes the queued messages the gate released, from the front, for
    /// [`poll_flush`](Self::poll_flush) to write (a batch at most).
    pub(crate) fn encode_batch(&self, commits: &GroupCommit) {
        let mut state = lock(&self.state);
        if state.corked() {
            return; // the turn's frames go first: the uncork wakes the socket task
        }
        for _ in 0..WRITE_BATCH {
            if state.out.is_full() {
                break;
            }
            match state.queue.front() {
                Some(Outgoing::Message(_, after)) if commits.is_durable(*after) => {}
                _ => break,
            }
            if let Some(Outgoing::Message(message, _)) = state.pop() {
                self.written(message.len());
                state.out.push(&message);
            }
        }
    }

    /// Puts `message` ahead of the queue (the auto-response); `false` while a large payload
    /// is half-written (flush, then try again).
    pub(crate) fn encode_first(&self, message: &Message) -> bool {
        let mut state = lock(&self.state);
        if state.out.is_full() {
            return false;
        }
        state.out.push(message);
        true
    }

    /// Writes the encoded bytes; `Ready(Ok)` once all are out, `Pending` until the socket has
    /// room.
    pub(crate) fn poll_flush(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            let mut guard = lock(&self.state);
            let state = &mut *guard;
            state.held = false;
            let Some(wire) = &state.wire else {
                state.out = Frames::default();
                return Poll::Ready(Ok(()));
            };
            match state.out.write_to(&**wire) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let wire = wire.clone();
                    drop(guard);
                    ready!(wire.poll_write_ready(cx))?;
                }
                done => return Poll::Ready(done),
            }
        }
    }

    /// Puts a control frame (a pong, a close) after what waits, for
    /// [`poll_flush`](Self::poll_flush) to write; `false` while too much waits (flush, then
    /// try again), so a client that pings without reading cannot grow the buffer.
    pub(crate) fn encode_control(&self, opcode: u8, payload: &[u8]) -> bool {
        let mut state = lock(&self.state);
        if state.out.is_full() || state.out.len() >= CONTROL_LIMIT {
            return false;
        }
        state.out.push_control(opcode, payload);
        true
    }

    /// Writes what the turn corked for this socket: `frames` from the corks' log, then what
    /// waits in its buffer. If the socket is full, the socket task writes the rest.
    pub(crate) fn uncork<'a>(&self, frames: impl Iterator<Item = &'a [u8]>) {
        let mut guard = lock(&self.state);
        let state = &mut *guard;
        state.cork = Cork::Open;
        let mut frames = frames.peekable();
        // Frames for a socket that closed or was force-closed meanwhile are dropped: nothing
        // may follow its close frame, and a forced close drops what waits.
        let writable = state.socket != Socket::Closed && state.forced.is_none();
        let written = match &state.wire {
            Some(wire) if writable => {
                if frames.peek().is_some() {
                    if state.out.is_empty() {
                        write_gathered(&**wire, &mut frames, &mut state.out);
                    }
                    for frame in frames {
                        state.out.push_raw(frame);
                    }
                }
                state.out.write_to(&**wire)
            }
            _ => Ok(()),
        };
        // The socket task writes what is left and what queued behind the turn, ends a
        // connection the agent let go of during the turn, or drains (it waited for this).
        let wake_task = written.is_err()
            || !state.queue.is_empty()
            || state.abandoned
            || state.drain == Drain::WaitsForTurn;
        if state.drain == Drain::WaitsForTurn {
            state.drain = Drain::Draining;
        }
        let waker = if wake_task { state.waker.take() } else { None };
        drop(guard);
        wake(waker);
    }

    /// The next queued item, if any (micro-benchmarks and tests: no socket task).
    #[cfg(any(test, feature = "bench"))]
    pub(crate) fn try_pop(&self) -> Option<Outgoing> {
        lock(&self.state).pop()
    }

    /// The socket task takes no more messages: later pushes fail as closed. Bytes already
    /// encoded stay, to be written before the close frame.
    pub(crate) fn close(&self) {
        let mut state = lock(&self.state);
        state.socket = Socket::Closed;
        state.queue = Queue::default();
    }

    /// The socket task ended: the link lets go of the socket (and of what it could not write),
    /// so the connection closes now even if the agent keeps a `Connection`.
    pub(crate) fn release_socket(&self) {
        let mut state = lock(&self.state);
        state.wire = None;
        state.out = Frames::default();
    }

    /// The agent side dropped the connection (its last handle).
    pub(crate) fn abandon(&self) {
        let waker = {
            let mut state = lock(&self.state);
            state.abandoned = true;
            state.waker.take()
        };
        wake(waker);
    }

    /// Asks the socket task to drop whatever is queued and close with `frame` (first call wins).
    pub(crate) fn force_close(&self, frame: CloseFrame) {
        let waker = {
            let mut state = lock(&self.state);
            if state.forced.is_some() {
                return;
            }
            state.forced = Some(Box::new(frame));
            state.waker.take()
        };
        wake(waker);
    }

    /// `Ready` once a forced close was asked for (the socket task waits on this while a
    /// write stalls or a close waits for durability; otherwise
    /// [`poll_next`](Self::poll_next) says so).
    pub(crate) fn poll_forced(&self, cx: &mut Context<'_>) -> Poll<CloseFrame> {
        let mut state = lock(&self.state);
        match &state.forced {
            Some(frame) => Poll::Ready(CloseFrame::clone(frame)),
            None => {
                register(&mut state.waker, cx);
                Poll::Pending
            }
        }
    }

    /// `Ready` while the server shuts down and the socket task has not heard yet (the socket
    /// task waits on this while a write stalls; otherwise `poll_next` says so).
    pub(crate) fn poll_draining(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = lock(&self.state);
        if state.drain == Drain::Asked {
            return Poll::Ready(());
        }
        register(&mut state.waker, cx);
        Poll::Pending
    }

    /// The server shuts down: the socket task writes what is queued, then closes with 1001.
    pub(crate) fn shut_down(&self) {
        let waker = {
            let mut state = lock(&self.state);
            if state.drain == Drain::No {
                state.drain = Drain::Asked;
            }
            state.waker.take()
        };
        wake(waker);
    }

    /// Whether the socket task has yet to hear of a shutdown.
    #[cfg(test)]
    pub(crate) fn is_draining(&self) -> bool {
        lock(&self.state).drain == Drain::Asked
    }

    /// Counts `len` more bytes queued, unless that goes over `budget` (a single message bigger
    /// than the budget still goes through an empty outbox). Returns whether it was counted.
    pub(crate) fn reserve_bytes(&self, len: usize, budget: usize) -> bool {
        let before = self.queued_bytes.fetch_add(len, Ordering::Relaxed);
        if before > 0 && before + len > budget {
            self.queued_bytes.fetch_sub(len, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// The socket task wrote a message of `len` bytes (or it was never queued): it no longer
    /// counts against the budget.
    pub(crate) fn written(&self, len: usize) {
        self.queued_bytes.fetch_sub(len, Ordering::Relaxed);
    }

    /// The socket task answered the auto-response request now.
    pub(crate) fn auto_responded(&self) {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let ms = u64::try_from(now.as_millis()).unwrap_or(u64::MAX).max(1);
        self.auto_responded_at.store(ms, Ordering::Relaxed);
    }

    pub(crate) fn auto_responded_at(&self) -> Option<SystemTime> {
        match self.auto_responded_at.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(UNIX_EPOCH + Duration::from_millis(ms)),
        }
    }
}

/// Seals the connection marked `mark` in the turn now running, if it lists it: a frame of
/// this sender queued behind the turn's logged frames, and what it sends next must queue
/// behind that one (see [`Link::send_unlogged`]). Takes the corks' lock: call it holding no
/// link's lock and no turn.
pub(crate) fn seal_after(corks: &Corks, mark: &CorkMark) {
    if let Some(mut turn) = corks.turn() {
        turn.seal(mark);
    }
}

/// Writes `frames` with as few `sendmsg` calls as the socket allows (up to 64 frames each);
/// the first frame the socket does not take whole goes to `out`, from where it stopped, and
/// the caller adds the rest after it.
fn write_gathered<'a>(
    wire: &dyn Wire,
    frames: &mut std::iter::Peekable<impl Iterator<Item = &'a [u8]>>,
    out: &mut Frames,
) {
    const GATHER: usize = 64;
    let Some(first) = frames.next() else { return };
    // One slice (a socket that got every frame of the turn has a single run of them): the
    // common case, written without setting up the gather list.
    if frames.peek().is_none() {
        let written = wire.try_write_vectored(&[IoSlice::new(first)]).unwrap_or(0);
        if written < first.len() {
            out.push_raw(&first[written..]);
        }
        return;
    }
    let mut slices = [IoSlice::new(&[]); GATHER];
    let mut next = Some(first);
    loop {
        let mut count = 0;
        let mut total = 0;
        while count < GATHER {
            let Some(frame) = next.take().or_else(|| frames.next()) else { break };
            slices[count] = IoSlice::new(frame);
            total += frame.len();
            count += 1;
        }
        if count == 0 {
            return;
        }
        let mut written = wire.try_write_vectored(&slices[..count]).unwrap_or(0);
        if written == total {
            continue;
        }
        // Short: keep what is left of these frames, in order, and stop writing.
        for slice in &slices[..count] {
            if written >= slice.len() {
                written -= slice.len();
            } else {
                out.push_raw(&slice[written..]);
                written = 0;
            }
        }
        return;
    }
}

fn wake(waker: Option<Waker>) {
    if let Some(waker) = waker {
        waker.wake();
    }
}

/// Keeps the socket task's waker (one task waits on a link, for a message, a forced close or
/// shutdown).
fn register(slot: &mut Option<Waker>, cx: &Context<'_>) {
    match slot {
        Some(waker) if waker.will_wake(cx.waker()) => {}
        _ => *slot = Some(cx.waker().clone()),
    }
}

/// The agent side's hold on a link: dropping it (the connection's last handle) tells the
/// socket task nothing more will come.
#[derive(Debug)]
pub(crate) struct LinkHandle(Arc<Link>);

impl LinkHandle {
    pub(crate) fn new(link: Arc<Link>) -> Self {
        Self(link)
    }
}

impl std::ops::Deref for LinkHandle {
    type Target = Arc<Link>;

    fn deref(&self) -> &Arc<Link> {
        &self.0
    }
}

impl Drop for LinkHandle {
    fn drop(&mut self) {
        self.0.abandon();
    }
}

#[cfg(test)]
mod tests;
