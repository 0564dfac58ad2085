//! Corking, as uWebSockets does it: what an instance's turn sends to its sockets is gathered
//! while its task is being polled and written when the poll ends, one `sendmsg` per socket.
//!
//! The frames wait in one log per instance rather than in each socket's buffer: a broadcast
//! encodes its frame once into the log, and each connection keeps where its frames are, as
//! runs of frames that follow each other there. A connection that gets every frame of the
//! turn (each broadcast, in a chat room) has a single run, and nothing per frame is stored for
//! it. Only the first send of a turn to a connection locks its link (to see that nothing is
//! queued or half-written ahead of it); the others touch nothing but the log and the mark in
//! the `Connection`, a cache line the send reads anyway. A send locks the corks before the
//! link, never the other way round, so a broadcast locks them once for all its connections
//! (a [`Batch`]); a link the last turn listed too is moved from it, not cloned. When the poll
//! ends, each listed link gathers its runs into one vectored write (one slice, for a single
//! run), and what the socket does not take is copied into the link's own buffer for the
//! socket task to finish.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::Bytes;

use super::Link;
use crate::message::Message;
use crate::sync::lock;
use crate::wire::frame::{COPY_LIMIT, Frames, Header, payload_bytes};

/// Bytes a turn corks for one socket before they go to the link's own buffer, which writes
/// them out at this size (a burst does not wait for the turn to end, nor grow without bound:
/// once the socket is full too, sends queue against the outbox's limits).
pub(crate) const CORK_LIMIT: usize = 64 * 1024;

/// Bits of a [`CorkMark`] that hold the slot; the rest number the turn.
const SLOT_BITS: u32 = 24;
const MAX_SLOTS: usize = 1 << SLOT_BITS;
/// Turns are numbered in the other 40 bits, from 1, and the numbers come round again (after a
/// trillion turns): a listing is recognized by the mark's address too, never by the number
/// alone (see [`CorkState::listed`]).
pub(crate) const TURN_MASK: u64 = u64::MAX >> SLOT_BITS;

/// No entry.
const NONE: u32 = u32::MAX;

/// Bytes of memory (the log, the list of links and the links kept) the corks hold on to while
/// their instance waits for its next event: a small room's next pass then allocates nothing and
/// moves its links rather than cloning them; a larger room's corks free theirs, so an idle
/// instance holds at most this much.
const KEPT_WHILE_IDLE: usize = 4 * 1024;

/// Links a pass must have written for its corks to keep their memory while the instance
/// waits: a room's. An instance that writes to one socket (one agent per user) frees it, and
/// an idle one holds nothing.
const KEPT_FROM_LINKS: usize = 2;

/// Which turn listed a connection, and in which slot (0: none). It lives in the `Connection`
/// and is read and written only under the corks' lock.
#[derive(Debug, Default)]
pub(crate) struct CorkMark(AtomicU64);

impl CorkMark {
    fn slot(&self, turn: u64) -> Option<usize> {
        let mark = self.0.load(Ordering::Relaxed);
        let slot = (mark & (MAX_SLOTS as u64 - 1)) as usize;
        (mark != 0 && mark >> SLOT_BITS == turn).then_some(slot)
    }

    fn set(&self, turn: u64, slot: usize) {
        self.0.store(turn << SLOT_BITS | slot as u64, Ordering::Relaxed);
    }

    /// Where this mark is: the `Listed` of its connection keeps it.
    fn address(&self) -> usize {
        std::ptr::from_ref(self) as usize
    }
}

/// What [`Corks::append`] did with a frame.
pub(crate) enum Append {
    /// Logged: the turn writes it.
    Logged,
    /// The link is not in the log this turn: send through the link.
    NotLogged,
    /// The link's frames must move to its own buffer first (a large payload, or over the
    /// cork limit): [`Corks::spill`] under the link's lock, then send through the link.
    Spill,
}

/// How [`Corks::list`] listed a link.
pub(crate) enum Listing {
    /// With the frame in the log.
    Logged,
    /// Its frames go to its own buffer (a large payload, written from its shared bytes).
    Buffered,
    /// Not at all: no turn is running.
    No,
}

/// The turn's corks of one instance (see the module doc).
#[derive(Default)]
pub(crate) struct Corks {
    state: Mutex<CorkState>,
    /// `state.open`, readable without the lock: a send outside any turn (a queued one, or
    /// one from a task the agent spawned) does not take it.
    open: AtomicBool,
}

#[derive(Default)]
struct CorkState {
    /// The instance's task is running: sends are corked.
    open: bool,
    /// The task yields to let other sockets' messages in, and stays corked until it is
    /// polled again (see [`hold`](Corks::hold)).
    holding: bool,
    /// Numbers the turns (from 1), so a mark left by an earlier turn is stale.
    turn: u64,
    /// What the uncork at the end of this poll keeps for the next turn.
    keep: Keep,
    /// The number of the turn whose links `scratch.kept` holds.
    kept_turn: u64,
    /// The turns' lists and log, allocated by a turn's first send (boxed: an instance that
    /// waits between turns, or hibernates, keeps no room for them).
    scratch: Option<Box<Scratch>>,
}

/// What a turn's sends fill in, and what the corks keep of it for the next turn.
#[derive(Default)]
struct Scratch {
    links: Vec<Listed>,
    log: Log,
    /// The links the last turn wrote, by slot (that turn is `kept_turn`): a link listed again
    /// in the next turn is moved from here rather than cloned, and the ones not listed again
    /// are let go of when that turn ends (or when the instance hibernates).
    kept: Vec<Option<Arc<Link>>>,
}

/// What the corks keep for the next turn when a poll ends.
#[derive(Clone, Copy, Default, PartialEq)]
enum Keep {
    /// Everything: the instance is busy.
    #[default]
    All,
    /// Up to [`KEPT_WHILE_IDLE`] bytes: the instance waits for its next event.
    Small,
    /// Nothing: the instance hibernates.
    Nothing,
}

/// A link the turn sends to.
struct Listed {
    link: Arc<Link>,
    /// The address of its connection's [`CorkMark`].
    mark: usize,
    /// Its frames are in the log (else in the link's buffer).
    logged: bool,
    /// A frame of the turn was queued behind them (the output gate held it): the ones after
    /// it queue too, so none overtakes it.
    sealed: bool,
    /// Its earlier runs of frames, a list through `Entry::next`.
    first: u32,
    last: u32,
    /// Its latest run: frames that follow each other in the log, `start..end` of its bytes. A
    /// connection that gets every frame of a turn (each broadcast) has this run only, written
    /// as one slice; a frame that does not follow it closes it into an entry.
    run: (u32, u32),
    bytes: usize,
}

impl Listed {
    /// Where its frames are in the log: its entries, then its run.
    fn frames(&self) -> (u32, (u32, u32)) {
        if self.logged { (self.first, self.run) } else { (NONE, (0, 0)) }
    }
}

/// The frames of a turn: their bytes once each, and each connection's runs of them.
#[derive(Default)]
pub(crate) struct Log {
    bytes: Vec<u8>,
    /// Runs of frames that a later frame to the same connection did not follow.
    entries: Vec<Entry>,
    /// The last frame encoded, for the next connection of a broadcast: its header, its
    /// payload (kept, so that no other payload can take its address) and where it is.
    last: Option<(Header, Bytes, u32, u32)>,
}

#[derive(Clone, Copy)]
struct Entry {
    start: u32,
    len: u32,
    next: u32,
}

impl Corks {
    /// The running turn's corks, locked, if a turn is running. A send takes this lock before
    /// its link's (never the other way round), and keeps it while it goes through the link.
    pub(crate) fn turn(&self) -> Option<Turn<'_>> {
        if !self.open.load(Ordering::Acquire) {
            return None;
        }
        let state = lock(&self.state);
        state.open.then_some(Turn(state))
    }

    /// The running turn's log: bytes encoded, and slices to write (runs of frames).
    #[cfg(test)]
    pub(crate) fn log_size(&self) -> (usize, usize) {
        let state = lock(&self.state);
        let Some(scratch) = state.scratch.as_deref() else { return (0, 0) };
        let runs = scratch.links.iter().filter(|listed| listed.run.0 < listed.run.1).count();
        (scratch.log.bytes.len(), scratch.log.entries.len() + runs)
    }

    /// Numbers the next turn `turn + 1` (tests of the numbers coming round), and says the
    /// number of the last one.
    #[cfg(test)]
    pub(crate) fn set_turn(&self, turn: u64) -> u64 {
        std::mem::replace(&mut lock(&self.state).turn, turn)
    }

    /// Keeps what is corked through the task's next yield, if anything is; returns whether it
    /// does. The instance's task calls this when its mailbox is empty, then yields once: the
    /// socket tasks read what their clients sent meanwhile, and the frames of those turns
    /// join the same writes (one pass of the event loop, as uWebSockets corks).
    pub(crate) fn hold(&self) -> bool {
        let mut state = lock(&self.state);
        state.holding = state.scratch.as_ref().is_some_and(|scratch| !scratch.links.is_empty());
        state.holding
    }

    /// Polls `future` (the instance's task) with sends corked, then writes what it corked.
    pub(crate) fn poll<F: Future + ?Sized>(
        &self,
        future: Pin<&mut F>,
        cx: &mut Context<'_>,
    ) -> Poll<F::Output> {
        /// Writes what was corked when the poll ends, even if it panics: corks left open
        /// would hold every later send.
        struct Uncork<'a>(&'a Corks);
        impl Drop for Uncork<'_> {
            fn drop(&mut self) {
                self.0.uncork();
            }
        }
        {
            let mut state = lock(&self.state);
            if !state.open {
                state.open = true;
                state.turn = match (state.turn + 1) & TURN_MASK {
                    0 => 1,
                    turn => turn,
                };
                self.open.store(true, Ordering::Release);
            }
        }
        let uncork = Uncork(self);
        let polled = future.poll(cx);
        if polled.is_pending() && std::mem::take(&mut lock(&self.state).holding) {
            std::mem::forget(uncork); // held: written on a later poll
        }
        polled
    }

    /// Closes the corks and writes every listed link.
    fn uncork(&self) {
        let (scratch, turn) = {
            let mut state = lock(&self.state);
            state.holding = false;
            state.open = false;
            self.open.store(false, Ordering::Release);
            (std::mem::take(&mut state.scratch), state.turn)
        };
        let Some(mut scratch) = scratch else { return };
        let Scratch { links, log, kept } = &mut *scratch;
        for listed in links.iter() {
            listed.link.uncork(log.frames(listed.frames()));
        }
        // The links the last turn kept and this one did not list again are let go of.
        kept.clear();
        kept.extend(links.drain(..).map(|listed| Some(listed.link)));
        log.clear();
        // Kept for the next turn, which then allocates nothing and moves the links it lists
        // again: while the instance is busy, and while it waits if that is little memory.
        let mut state = lock(&self.state);
        let held = || {
            links.capacity() * std::mem::size_of::<Listed>()
                + kept.capacity() * std::mem::size_of::<Option<Arc<Link>>>()
                + log.bytes.capacity()
                + log.entries.capacity() * std::mem::size_of::<Entry>()
        };
        match std::mem::take(&mut state.keep) {
            Keep::Nothing => return,
            Keep::Small if held() > KEPT_WHILE_IDLE || kept.len() < KEPT_FROM_LINKS => return,
            Keep::All | Keep::Small => {}
        }
        state.kept_turn = turn;
        if state.scratch.is_none() {
            state.scratch = Some(scratch);
        }
    }

    /// The instance's task is about to wait for its next event: what the corks keep for the
    /// next turn is freed when this poll ends, unless it is at most [`KEPT_WHILE_IDLE`] bytes.
    pub(crate) fn idle(&self) {
        let mut state = lock(&self.state);
        if state.keep == Keep::All {
            state.keep = Keep::Small;
        }
    }

    /// The instance hibernates: what the corks keep between turns (the log's memory, the
    /// list and the links the last turn wrote) is freed when this poll ends, so a hibernated
    /// instance holds none of it.
    pub(crate) fn trim(&self) {
        lock(&self.state).keep = Keep::Nothing;
    }

    /// Bytes of log memory kept for the next turn.
    #[cfg(test)]
    pub(crate) fn kept_log(&self) -> usize {
        lock(&self.state).scratch.as_deref().map_or(0, |scratch| scratch.log.bytes.capacity())
    }
}

/// The running turn's corks, locked (see [`Corks::turn`]): what a send to a connection asks
/// of them.
pub(crate) struct Turn<'a>(MutexGuard<'a, CorkState>);

impl Turn<'_> {
    /// Logs `message` for the connection marked `mark`, if this turn already listed it.
    pub(crate) fn append(&mut self, mark: &CorkMark, message: &Message) -> Append {
        self.0.append(mark, message)
    }

    /// Lists `link` (marked `mark`) in the turn with `message` as its first frame. Called
    /// under the link's lock, with nothing queued or waiting in its buffer.
    pub(crate) fn list(&mut self, link: &Arc<Link>, mark: &CorkMark, message: &Message) -> Listing {
        let Some((mut listed, scratch)) = self.enlist(link, mark) else { return Listing::No };
        let (header, payload) = Header::of(message);
        let log = &mut scratch.log;
        let logged = payload.len() <= COPY_LIMIT
            && log.frame(header, payload, message).is_some_and(|(start, len)| {
                log.add(&mut listed, start, len);
                true
            });
        let listing = if logged {
            Listing::Logged
        } else {
            listed.logged = false;
            Listing::Buffered
        };
        scratch.links.push(listed);
        listing
    }

    /// Lists `link` (marked `mark`) in the turn with its frames in its own buffer, where
    /// something waits for the turn to write it (the upgrade's 101); `false` if the turn
    /// lists as many links as it can. Called under the link's lock.
    pub(crate) fn list_buffered(&mut self, link: &Arc<Link>, mark: &CorkMark) -> bool {
        let Some((mut listed, scratch)) = self.enlist(link, mark) else { return false };
        listed.logged = false;
        scratch.links.push(listed);
        true
    }

    /// A new entry for `link` in the turn's list (its link moved from what the last turn
    /// kept, if it was listed there), and the scratch to push it to, in the slot its mark
    /// now names; `None` if the list is full.
    fn enlist(&mut self, link: &Arc<Link>, mark: &CorkMark) -> Option<(Listed, &mut Scratch)> {
        let state = &mut *self.0;
        let (turn, kept_turn) = (state.turn, state.kept_turn);
        let scratch = state.scratch.get_or_insert_with(Box::default);
        if scratch.links.len() >= MAX_SLOTS {
            return None;
        }
        // Listed in the last turn too (a busy room): its link is there already.
        let kept = mark.slot(kept_turn).and_then(|slot| scratch.kept.get_mut(slot));
        let moved = kept.and_then(|kept| kept.take_if(|kept| Arc::ptr_eq(kept, link)));
        let link = moved.unwrap_or_else(|| link.clone());
        mark.set(turn, scratch.links.len());
        let listed = Listed {
            link,
            mark: mark.address(),
            logged: true,
            sealed: false,
            first: NONE,
            last: NONE,
            run: (0, 0),
            bytes: 0,
        };
        Some((listed, scratch))
    }

    /// Moves the logged frames of the connection marked `mark` into its link's buffer `out`
    /// (the caller holds the link's lock), where its later frames go too; returns whether the
    /// turn listed it.
    pub(crate) fn spill(&mut self, mark: &CorkMark, out: &mut Frames) -> bool {
        let state = &mut *self.0;
        let Some(slot) = state.listed(mark) else { return false };
        let Some(Scratch { links, log, .. }) = state.scratch.as_deref_mut() else { return false };
        let listed = &mut links[slot];
        if listed.logged {
            for frame in log.frames(listed.frames()) {
                out.push_raw(frame);
            }
            listed.logged = false;
        }
        true
    }

    /// Stops logging frames for the connection marked `mark` this turn: one of its frames was
    /// queued behind the logged ones, and the later ones must queue behind it.
    pub(crate) fn seal(&mut self, mark: &CorkMark) {
        let state = &mut *self.0;
        if let Some(slot) = state.listed(mark)
            && let Some(scratch) = state.scratch.as_deref_mut()
        {
            scratch.links[slot].sealed = true;
        }
    }
}

impl CorkState {
    /// The slot of the connection marked `mark`, if the running turn listed it: the mark
    /// names this turn and a slot, and that slot holds this very mark (a mark from a turn whose
    /// number came round again names some other connection's slot, or none).
    fn listed(&self, mark: &CorkMark) -> Option<usize> {
        let slot = mark.slot(self.turn).filter(|_| self.open)?;
        let listed = self.scratch.as_deref()?.links.get(slot)?;
        (listed.mark == mark.address()).then_some(slot)
    }

    fn append(&mut self, mark: &CorkMark, message: &Message) -> Append {
        let Some(slot) = self.listed(mark) else { return Append::NotLogged };
        let Some(scratch) = self.scratch.as_deref() else { return Append::NotLogged };
        let listed = &scratch.links[slot];
        if !listed.logged || listed.sealed {
            return Append::NotLogged;
        }
        match self.frame(message) {
            Ok(frame) => self.append_frame(slot, frame),
            Err(append) => append,
        }
    }

    /// Where `message`'s frame is in the log (encoded now, unless it was the last one), or
    /// `Spill` if it cannot be logged (a large payload, or the log is full).
    fn frame(&mut self, message: &Message) -> Result<(u32, u32), Append> {
        let (header, payload) = Header::of(message);
        if payload.len() > COPY_LIMIT {
            return Err(Append::Spill);
        }
        let log = &mut self.scratch.get_or_insert_with(Box::default).log;
        log.frame(header, payload, message).ok_or(Append::Spill)
    }

    /// Gives the connection listed in `slot` the logged frame at `start`, `len` bytes long.
    fn append_frame(&mut self, slot: usize, (start, len): (u32, u32)) -> Append {
        let Some(Scratch { links, log, .. }) = self.scratch.as_deref_mut() else {
            return Append::NotLogged;
        };
        let listed = &mut links[slot];
        if !listed.logged || listed.sealed {
            return Append::NotLogged;
        }
        if listed.bytes + len as usize > CORK_LIMIT {
            return Append::Spill;
        }
        log.add(listed, start, len);
        Append::Logged
    }
}

/// A broadcast's hold on an instance's running turn: its corks are locked once, for every
/// connection, and each connection's link is locked after them if it has to be. A batch is
/// for one message: its frame is found in the log once, for every connection.
pub(crate) struct Batch<'a> {
    corks: &'a Corks,
    turn: Option<Turn<'a>>,
    /// The message's frame in the log, and the turn whose log it is in.
    frame: Option<(u64, (u32, u32))>,
}

impl<'a> Batch<'a> {
    pub(crate) fn new(corks: &'a Corks) -> Self {
        Self { corks, turn: None, frame: None }
    }

    /// Whether `corks` are the ones this batch holds.
    pub(crate) fn holds(&self, corks: &Corks) -> bool {
        std::ptr::eq(self.corks, corks)
    }

    /// The running turn, locked by the batch's first call.
    pub(crate) fn turn(&mut self) -> Option<&mut Turn<'a>> {
        if self.turn.is_none() {
            self.turn = self.corks.turn();
        }
        self.turn.as_mut()
    }

    /// Logs `message` (the batch's message) for the connection marked `mark` if this turn
    /// already listed it; anything but `Logged` goes through the link, with what this said.
    pub(crate) fn append(&mut self, mark: &CorkMark, message: &Message) -> Append {
        if self.turn.is_none() {
            self.turn = self.corks.turn();
        }
        let Some(Turn(state)) = &mut self.turn else { return Append::NotLogged };
        let Some(slot) = state.listed(mark) else { return Append::NotLogged };
        let frame = match self.frame {
            // The log keeps its frames until the turn ends.
            Some((turn, frame)) if turn == state.turn => frame,
            _ => {
                let Some(scratch) = state.scratch.as_deref() else { return Append::NotLogged };
                let listed = &scratch.links[slot];
                if !listed.logged || listed.sealed {
                    return Append::NotLogged;
                }
                match state.frame(message) {
                    Ok(frame) => self.frame.insert((state.turn, frame)).1,
                    Err(append) => return append,
                }
            }
        };
        state.append_frame(slot, frame)
    }
}

impl Log {
    /// Where the frame of `message` (`header` and `payload`) is in the log, as its start and
    /// length: encoded now, unless it is the frame encoded last (a broadcast). `None` if the
    /// log is full (4 GiB, or as many runs as entries can number).
    fn frame(&mut self, header: Header, payload: &[u8], message: &Message) -> Option<(u32, u32)> {
        if self.entries.len() >= NONE as usize - 1 {
            return None;
        }
        let same = |(last_header, last_payload, _, _): &(Header, Bytes, u32, u32)| {
            last_payload.as_ptr() == payload.as_ptr()
                && last_payload.len() == payload.len()
                && *last_header == header
        };
        match &self.last {
            Some(last) if same(last) => Some((last.2, last.3)),
            _ => {
                let len = header.as_bytes().len() + payload.len();
                let start = u32::try_from(self.bytes.len()).ok()?;
                u32::try_from(self.bytes.len() + len).ok()?;
                self.bytes.extend_from_slice(header.as_bytes());
                self.bytes.extend_from_slice(payload);
                let len = len as u32;
                self.last = Some((header, payload_bytes(message), start, len));
                Some((start, len))
            }
        }
    }

    /// Gives `listed` the frame at `start`, `len` bytes long: its run grows if the frame
    /// follows it in the log, else the run is closed into an entry and a new one starts.
    fn add(&mut self, listed: &mut Listed, start: u32, len: u32) {
        let (run_start, run_end) = listed.run;
        if run_start < run_end && run_end == start {
            listed.run.1 = start + len;
        } else {
            if run_start < run_end {
                // `frame` keeps the entries below `NONE`.
                let entry = self.entries.len() as u32;
                self.entries.push(Entry { start: run_start, len: run_end - run_start, next: NONE });
                if listed.first == NONE {
                    listed.first = entry;
                } else {
                    self.entries[listed.last as usize].next = entry;
                }
                listed.last = entry;
            }
            listed.run = (start, start + len);
        }
        listed.bytes += len as usize;
    }

    /// The bytes of a connection's frames, in order: its entries from `first` on, then its
    /// `run` (see [`Listed::frames`]). Each slice holds whole frames.
    fn frames(&self, (first, run): (u32, (u32, u32))) -> impl Iterator<Item = &[u8]> + '_ {
        let mut next = first;
        let mut run = (run.0 < run.1).then_some(run);
        std::iter::from_fn(move || match self.entries.get(next as usize) {
            Some(entry) => {
                next = entry.next;
                Some(&self.bytes[entry.start as usize..(entry.start + entry.len) as usize])
            }
            None => run.take().map(|(start, end)| &self.bytes[start as usize..end as usize]),
        })
    }

    /// Empties the log, keeping its memory for the next turn.
    fn clear(&mut self) {
        self.last = None;
        self.bytes.clear();
        self.entries.clear();
    }
}
