//! The output gate's clock: writes get increasing sequence numbers, and one flusher task makes
//! them durable in groups (group commit), so many writes share one fsync.
//!
//! A frame sent after a write carries that write's number and is released to the socket only
//! once the number is durable; see `Connection::send` and the socket task.
//!
//! Writes made outside the store (each instance's SQLite log) are listed in [`FileSyncs`]; the
//! flusher syncs them with the store, so one group commit covers both. A turn that wrote SQL
//! commits at its end, so the frames it sends before then wait on a *hold* (a number with
//! [`HELD`] set) that the commit resolves to the write's number.
//!
//! When flushes keep failing (a full disk) for the storage timeout, the flusher gives up on the
//! writes it could not make durable: it asks the store to [`recover`](Store::recover) (sled
//! reopens, dropping them), and declares them lost. What waited for a lost write learns it
//! ([`Settled::Lost`]): held RPC answers become errors, and the instances that made the writes
//! restart from what is durable, as a Durable Object resets when a write fails.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, mpsc};

use super::Store;
use super::file_syncs::FileSyncs;

/// A write's place in the store's history; `0` is "no write", always durable.
pub(crate) type WriteSeq = u64;

/// Set in a [`WriteSeq`] that is a hold: writes a turn has not committed yet.
pub(crate) const HELD: WriteSeq = 1 << 63;

/// Shared by writers, waiters and the flusher.
#[derive(Default)]
struct Progress {
    /// The last write handed out a number.
    written: AtomicU64,
    /// Every write up to this number is durable.
    durable: AtomicU64,
    /// `durable` moved.
    advanced: Notify,
    /// Flushes that made writes durable, and the most writes one of them covered.
    flushes: AtomicU64,
    largest_batch: AtomicU64,
    /// The highest write ever lost (0: none), so a write above it needs no look at `lost`.
    lost_to: AtomicU64,
    /// The first write ever lost (0: none), so a write below it needs no look either.
    first_lost_from: AtomicU64,
    /// Every run of writes given up on, oldest first (one per storage failure: a short list).
    lost: std::sync::Mutex<Vec<LostWrites>>,
    /// Writes were lost (the watchdog restarts their instances).
    losses: Notify,
    /// A write failed since the flusher last looked: it flushes even with nothing to make
    /// durable, to learn whether the store fails.
    suspect: std::sync::atomic::AtomicBool,
    /// How many runs `lost` holds, readable without its lock (every turn looks).
    loss_count: std::sync::atomic::AtomicUsize,
    /// Open holds and what the ended ones became, until that is durable.
    holds: std::sync::Mutex<std::collections::HashMap<WriteSeq, Hold>>,
    next_hold: AtomicU64,
}

/// Writes `from + 1 ..= to`, given up on for `why`.
struct LostWrites {
    from: WriteSeq,
    to: WriteSeq,
    why: Arc<str>,
}

/// What a hold is: open (its turn goes on), the write it became, or writes that failed.
#[derive(Clone, Debug)]
enum Hold {
    Open,
    Became(WriteSeq),
    Failed(Arc<str>),
}

/// What became of a write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Settled {
    /// It is on disk.
    Durable,
    /// It is not yet.
    Pending,
    /// It never will be: the store failed (the reason), and the runtime gave up on it.
    Lost(Arc<str>),
}

/// How writes have shared flushes so far (group commit): see
/// [`ServerHandle::storage_stats`](crate::ServerHandle::storage_stats).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StorageStats {
    /// Writes made durable.
    pub durable_writes: u64,
    /// Successful flushes that made at least one write durable.
    pub flushes: u64,
    /// The most writes a single flush made durable.
    pub largest_batch: u64,
}

/// Numbers writes, wakes the flusher, and lets frames wait for durability.
pub(crate) struct GroupCommit {
    store: Arc<dyn Store>,
    files: Arc<FileSyncs>,
    progress: Arc<Progress>,
    /// A one-slot doorbell: a pending ring covers any number of writes.
    wake: mpsc::Sender<()>,
    /// Tells the flusher to end (shutdown), so it lets go of the store.
    stop: Arc<Notify>,
    flusher: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl GroupCommit {
    /// Starts the flusher; it ends when this is dropped or [`stop`](Self::stop)ped. Writes
    /// that flushes have failed to make durable for `give_up_after` are lost.
    pub(crate) fn start(store: Arc<dyn Store>, give_up_after: Duration) -> Self {
        let progress = Arc::new(Progress::default());
        let (wake, doorbell) = mpsc::channel(1);
        let stop = Arc::new(Notify::new());
        let files = Arc::new(FileSyncs::default());
        let flusher = Flusher {
            store: store.clone(),
            files: files.clone(),
            progress: progress.clone(),
            stop: stop.clone(),
            give_up_after,
            failing: None,
        };
        let flusher = tokio::spawn(flusher.run(doorbell));
        Self { store, files, progress, wake, stop, flusher: std::sync::Mutex::new(Some(flusher)) }
    }

    /// Ends the flusher (after the flush it is running, if any, or at once while it backs off
    /// from a failed one) and waits, at most `limit`, until it has let go of the store. Writes
    /// made afterwards are never confirmed: for shutdown only.
    pub(crate) async fn stop(&self, limit: Duration) {
        self.stop.notify_one();
        let flusher = crate::sync::lock(&self.flusher).take();
        if let Some(mut flusher) = flusher
            && tokio::time::timeout(limit, &mut flusher).await.is_err()
        {
            tracing::warn!("shutdown: the storage flusher did not stop within {limit:?}");
            flusher.abort();
        }
    }

    pub(crate) fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The files written outside the store that the next flush syncs.
    pub(crate) fn files(&self) -> &FileSyncs {
        &self.files
    }

    /// Opens a hold: frames queued behind it wait until [`release`](Self::release) says what
    /// it became.
    pub(crate) fn hold(&self) -> WriteSeq {
        let hold = HELD | (self.progress.next_hold.fetch_add(1, Ordering::Relaxed) + 1);
        crate::sync::lock(&self.progress.holds).insert(hold, Hold::Open);
        hold
    }

    /// Ends `hold`: what waited behind it now waits for write `seq` (`0`: nothing).
    pub(crate) fn release(&self, hold: WriteSeq, seq: WriteSeq) {
        self.end_hold(hold, Hold::Became(seq));
    }

    /// Ends `hold` with its writes failed (`why`): what waited behind it is lost, as after a
    /// failed flush, but for its instance only.
    pub(crate) fn fail(&self, hold: WriteSeq, why: Arc<str>) {
        self.end_hold(hold, Hold::Failed(why));
    }

    fn end_hold(&self, hold: WriteSeq, became: Hold) {
        {
            let mut holds = crate::sync::lock(&self.progress.holds);
            // Holds whose write is durable are forgotten: one not found reads as durable.
            holds.retain(|_, to| !matches!(to, Hold::Became(to) if self.is_durable(*to)));
            holds.insert(hold, became);
        }
        self.progress.advanced.notify_waiters();
    }

    /// What write `seq` stands for: itself, or what its hold became.
    fn resolve(&self, seq: WriteSeq) -> Hold {
        if seq & HELD == 0 {
            return Hold::Became(seq);
        }
        match crate::sync::lock(&self.progress.holds).get(&seq) {
            Some(hold) => hold.clone(),
            None => Hold::Became(0),
        }
    }

    /// Numbers a write that has returned, and asks for a flush that covers it.
    pub(crate) fn wrote(&self) -> WriteSeq {
        let seq = self.progress.written.fetch_add(1, Ordering::AcqRel) + 1;
        let _ = self.wake.try_send(());
        seq
    }

    /// A write failed: the flusher tries a flush, to learn whether the store fails.
    pub(crate) fn write_failed(&self) {
        self.progress.suspect.store(true, Ordering::Release);
        let _ = self.wake.try_send(());
    }

    /// Writes made durable and the flushes that did it, so far.
    pub(crate) fn stats(&self) -> StorageStats {
        let progress = &self.progress;
        StorageStats {
            durable_writes: progress.durable.load(Ordering::Acquire),
            flushes: progress.flushes.load(Ordering::Acquire),
            largest_batch: progress.largest_batch.load(Ordering::Acquire),
        }
    }

    /// Whether write `seq` is on disk (not pending, not lost).
    pub(crate) fn is_durable(&self, seq: WriteSeq) -> bool {
        if seq & HELD != 0 {
            return matches!(self.resolve(seq), Hold::Became(seq) if self.is_durable(seq));
        }
        let progress = &self.progress;
        progress.durable.load(Ordering::Acquire) >= seq
            && (seq > progress.lost_to.load(Ordering::Acquire) || self.lost(seq).is_none())
    }

    /// What became of write `seq` so far.
    pub(crate) fn settled(&self, seq: WriteSeq) -> Settled {
        let seq = match self.resolve(seq) {
            Hold::Became(seq) => seq,
            Hold::Open => return Settled::Pending,
            Hold::Failed(why) => return Settled::Lost(why),
        };
        if self.progress.durable.load(Ordering::Acquire) < seq {
            return Settled::Pending;
        }
        if seq <= self.progress.lost_to.load(Ordering::Acquire)
            && let Some(why) = self.lost(seq)
        {
            return Settled::Lost(why);
        }
        Settled::Durable
    }

    /// Why write `seq` was lost, if it was.
    fn lost(&self, seq: WriteSeq) -> Option<Arc<str>> {
        // Below the first lost write (the "no write" 0 included) there is nothing to look up:
        // frames after a restart, and a relaxed agent's, take no lock.
        let first = self.progress.first_lost_from.load(Ordering::Acquire);
        if first == 0 || seq < first {
            return None;
        }
        let lost = crate::sync::lock(&self.progress.lost);
        let run = lost.iter().find(|run| run.from < seq && seq <= run.to)?;
        Some(run.why.clone())
    }

    /// Resolves once write `seq` is durable or lost.
    pub(crate) async fn durable(&self, seq: WriteSeq) -> Settled {
        loop {
            let advanced = self.progress.advanced.notified();
            tokio::pin!(advanced);
            advanced.as_mut().enable();
            match self.settled(seq) {
                Settled::Pending => advanced.await,
                settled => return settled,
            }
        }
    }

    /// Resolves once writes are lost after the first `seen` runs of them; returns how many
    /// runs are lost now (see [`lost_runs`](Self::lost_runs)).
    pub(crate) async fn next_loss(&self, seen: usize) -> usize {
        loop {
            let lost = self.progress.losses.notified();
            tokio::pin!(lost);
            lost.as_mut().enable();
            let runs = self.loss_count();
            if runs > seen {
                return runs;
            }
            lost.await;
        }
    }

    /// How many runs of writes were lost so far.
    pub(crate) fn loss_count(&self) -> usize {
        self.progress.loss_count.load(Ordering::Acquire)
    }

    /// The runs of lost writes from the `from`th on, as `(after, up_to, why)`.
    pub(crate) fn lost_runs(&self, from: usize) -> Vec<(WriteSeq, WriteSeq, Arc<str>)> {
        let lost = crate::sync::lock(&self.progress.lost);
        lost.iter().skip(from).map(|run| (run.from, run.to, run.why.clone())).collect()
    }

    /// Flushes everything written so far, now (shutdown).
    pub(crate) async fn flush_now(&self) -> Result<(), super::StoreError> {
        let (store, files) = (self.store.clone(), self.files.clone());
        match tokio::task::spawn_blocking(move || flush(&*store, &files)).await {
            Ok(flushed) => flushed,
            Err(e) => Err(super::StoreError::msg(format!("the flush thread failed: {e}"))),
        }
    }
}

/// Records writes `from + 1 ..= to`, which the flusher gave up on, as lost for `why`, and
/// tells who waits.
fn lost_run(progress: &Progress, from: WriteSeq, to: WriteSeq, why: Arc<str>) {
    let runs = {
        let mut lost = crate::sync::lock(&progress.lost);
        lost.push(LostWrites { from, to, why });
        let first = progress.first_lost_from.load(Ordering::Acquire);
        if first == 0 || from + 1 < first {
            progress.first_lost_from.store(from + 1, Ordering::Release);
        }
        lost.len()
    };
    // In this order: whoever sees `durable` past a lost write sees `lost_to` (so no lost write
    // reads as durable), and whoever sees the new count sees both.
    progress.lost_to.fetch_max(to, Ordering::AcqRel);
    progress.durable.fetch_max(to, Ordering::AcqRel);
    progress.loss_count.store(runs, Ordering::Release);
    progress.advanced.notify_waiters();
    progress.losses.notify_waiters();
}

/// Makes every write that returned before the call durable: the store's, and the files
/// written outside it (the SQL logs).
fn flush(store: &dyn Store, files: &FileSyncs) -> Result<(), super::StoreError> {
    store.flush()?;
    files.sync().map_err(|e| super::StoreError::backend("syncing the SQL logs", e))
}

/// One instance's side of the output gate: the number of its last write that frames must wait
/// for. An agent with relaxed durability never sets it, so its frames never wait.
pub(crate) struct OutputGate {
    commits: Arc<GroupCommit>,
    confirmed: bool,
    last_write: AtomicU64,
    /// The hold of the current turn's uncommitted SQL writes (`0`: none).
    hold: AtomicU64,
    /// Why the turn's SQL writes failed, for the host to restart the instance.
    failed: std::sync::Mutex<Option<Arc<str>>>,
}

impl OutputGate {
    /// A gate that starts behind write `after`: a new instance can read data an earlier one
    /// of the same name wrote, and must not repeat it to a client before it is durable.
    pub(crate) fn new(commits: Arc<GroupCommit>, confirmed: bool, after: WriteSeq) -> Self {
        let after = if confirmed { after } else { 0 };
        Self {
            commits,
            confirmed,
            last_write: AtomicU64::new(after),
            hold: AtomicU64::new(0),
            failed: std::sync::Mutex::default(),
        }
    }

    /// The turn is about to write SQL, which it commits when it ends: frames sent from now on
    /// wait for that commit too (nothing changes for an agent with relaxed durability).
    pub(crate) fn hold(&self) {
        if self.confirmed && self.hold.load(Ordering::Acquire) == 0 {
            self.hold.store(self.commits.hold(), Ordering::Release);
        }
    }

    /// A write made outside the store (an SQL commit) returned: the flusher makes it durable
    /// with the store's, and later frames wait for it.
    pub(crate) fn wrote_outside(&self) {
        let seq = self.commits.wrote();
        if self.confirmed {
            self.last_write.fetch_max(seq, Ordering::AcqRel);
        }
    }

    /// The turn's SQL writes were committed (after [`wrote_outside`](Self::wrote_outside)) or
    /// rolled back: frames held behind them wait for the instance's last write instead.
    pub(crate) fn release(&self) {
        let hold = self.hold.swap(0, Ordering::AcqRel);
        if hold != 0 {
            self.commits.release(hold, self.last_write.load(Ordering::Acquire));
        }
    }

    /// The turn's SQL writes cannot be kept (`why`: the commit failed, say): the frames held
    /// behind them are lost (RPC answers become errors), and the host restarts the instance
    /// once the turn is over. Other instances are not concerned.
    pub(crate) fn fail(&self, why: &str) {
        let why: Arc<str> = why.into();
        tracing::error!("the turn's SQL writes failed ({why}); the instance restarts");
        let hold = self.hold.swap(0, Ordering::AcqRel);
        if hold != 0 {
            self.commits.fail(hold, why.clone());
        }
        *crate::sync::lock(&self.failed) = Some(why);
    }

    /// Why the turn's SQL writes failed, if they did (once).
    pub(crate) fn take_failure(&self) -> Option<Arc<str>> {
        crate::sync::lock(&self.failed).take()
    }

    /// Whether the turn's SQL writes failed and the instance has not restarted yet.
    pub(crate) fn failure_pending(&self) -> bool {
        crate::sync::lock(&self.failed).is_some()
    }

    /// Whether the store ever gave up on writes (a database opened since may hold commits
    /// that were never synced).
    pub(crate) fn losses_seen(&self) -> bool {
        self.commits.loss_count() > 0
    }

    /// The files written outside the store that the next flush syncs.
    pub(crate) fn files(&self) -> &FileSyncs {
        self.commits.files()
    }

    pub(crate) fn store(&self) -> &dyn Store {
        &**self.commits.store()
    }

    /// A write to the store returned `written`: if it succeeded, later frames wait until it
    /// is durable; if it failed, the flusher checks the store (a store that fails writes may
    /// need to [`recover`](Store::recover), even with nothing to flush).
    pub(crate) fn wrote<T>(
        &self,
        written: Result<T, super::StoreError>,
    ) -> Result<T, super::StoreError> {
        match &written {
            Ok(_) if self.confirmed => {
                let seq = self.commits.wrote();
                self.last_write.fetch_max(seq, Ordering::AcqRel);
            }
            Ok(_) => {}
            Err(_) => self.commits.write_failed(),
        }
        written
    }

    /// Refuses a write while this instance's last write was lost and it has not restarted yet
    /// (a turn that was awaiting when the store gave up): what it would write builds on
    /// state the store no longer has.
    pub(crate) fn may_write(&self) -> Result<(), super::StoreError> {
        match self.commits.settled(self.last_write.load(Ordering::Acquire)) {
            Settled::Lost(why) => Err(super::StoreError::msg(format!(
                "the instance's earlier writes were lost ({why}); it restarts before it writes again"
            ))),
            _ => Ok(()),
        }
    }

    /// Whether frames wait for this instance's writes (durability "confirmed").
    pub(crate) fn is_confirmed(&self) -> bool {
        self.confirmed
    }

    /// The instance restarts from what is durable: its frames no longer wait for a write of
    /// its that was lost (they would be dropped with the frames held behind it).
    pub(crate) fn forget_lost(&self) {
        let last = self.last_write.load(Ordering::Acquire);
        if let Settled::Lost(_) = self.commits.settled(last) {
            let _ = self.last_write.compare_exchange(last, 0, Ordering::AcqRel, Ordering::Acquire);
        }
    }

    /// What a frame sent now must wait for: the instance's last write, or the hold of its
    /// turn's uncommitted SQL writes.
    pub(crate) fn pending(&self) -> WriteSeq {
        match self.hold.load(Ordering::Acquire) {
            0 => self.last_write.load(Ordering::Acquire),
            hold => hold,
        }
    }

    /// The instance's last write (never a hold).
    pub(crate) fn last_write(&self) -> WriteSeq {
        self.last_write.load(Ordering::Acquire)
    }

    /// Resolves once write `seq` (a [`pending`](Self::pending) value) is durable or lost.
    pub(crate) async fn settled(&self, seq: WriteSeq) -> Settled {
        self.commits.durable(seq).await
    }

    /// What became of write `seq` so far.
    pub(crate) fn settled_now(&self, seq: WriteSeq) -> Settled {
        self.commits.settled(seq)
    }

    /// Whether write `seq` is durable.
    pub(crate) fn is_settled(&self, seq: WriteSeq) -> bool {
        self.commits.is_durable(seq)
    }
}

/// Flushes whenever writes are not durable yet; writes made during a flush wait for the next
/// one, which then covers all of them.
struct Flusher {
    store: Arc<dyn Store>,
    files: Arc<FileSyncs>,
    progress: Arc<Progress>,
    stop: Arc<Notify>,
    give_up_after: Duration,
    /// While flushes (or the store's recovery) fail: logged once per change.
    failing: Option<Failing>,
}

/// The store has been failing since `since`, for `why`; the next give-up counts from `from`.
struct Failing {
    since: Instant,
    from: Instant,
    why: String,
}

/// The longest pause between attempts while the store fails.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// How long the flusher lets writes gather before its next flush while they keep coming (the
/// last flushes each ended with more writes waiting): a flush costs about the same for one
/// write as for a hundred, in CPU and in the disk's operations, so under a steady stream of
/// writes fewer, larger flushes leave the CPU to the turns and keep the disk from queueing
/// (where one slow flush holds every frame behind it). A write after a quiet spell is flushed
/// at once.
const GATHER: Duration = Duration::from_millis(5);
/// Flushes in a row that ended with writes waiting before the flusher starts gathering.
const BUSY_FLUSHES: u32 = 8;

impl Flusher {
    async fn run(mut self, mut doorbell: mpsc::Receiver<()>) {
        let mut backoff = Duration::from_millis(50);
        let mut busy = 0;
        loop {
            tokio::select! {
                rung = doorbell.recv() => if rung.is_none() { return },
                () = self.stop.notified() => return,
            }
            loop {
                let target = self.progress.written.load(Ordering::Acquire);
                let suspect = self.progress.suspect.swap(false, Ordering::AcqRel);
                let flushed = self.progress.durable.load(Ordering::Acquire) >= target;
                // While the store fails, flushes go on until one works, writes or not.
                if flushed && !suspect && self.failing.is_none() {
                    break;
                }
                let files = self.files.clone();
                match self.blocking(move |store| flush(store, &files)).await {
                    Ok(()) => {
                        backoff = Duration::from_millis(50);
                        self.recovered();
                        self.advance(target);
                        let waiting = self.progress.written.load(Ordering::Acquire) > target;
                        busy = if waiting { busy + 1 } else { 0 };
                        if busy >= BUSY_FLUSHES {
                            tokio::select! {
                                () = tokio::time::sleep(GATHER) => {}
                                () = self.stop.notified() => return,
                            }
                        }
                    }
                    Err(why) => {
                        let since = self.failed("flush", why);
                        let hopeless = self.store.failed_for_good();
                        if (hopeless || since.elapsed() >= self.give_up_after)
                            && !self.give_up(&mut backoff).await
                        {
                            return;
                        }
                        tokio::select! {
                            () = tokio::time::sleep(backoff) => {}
                            () = self.stop.notified() => return,
                        }
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
            }
        }
    }

    /// Runs `op` on the store from a blocking thread.
    async fn blocking(
        &self,
        op: impl FnOnce(&dyn Store) -> Result<(), super::StoreError> + Send + 'static,
    ) -> Result<(), String> {
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || op(&*store)).await {
            // With its causes: the OS reason is what an operator needs.
            Ok(done) => done.map_err(|e| crate::Error::from(e).to_string()),
            Err(e) => Err(format!("the storage thread failed: {e}")),
        }
    }

    /// Writes up to `target` are durable.
    fn advance(&self, target: WriteSeq) {
        let progress = &self.progress;
        let before = progress.durable.fetch_max(target, Ordering::AcqRel);
        if target > before {
            progress.flushes.fetch_add(1, Ordering::AcqRel);
            progress.largest_batch.fetch_max(target - before, Ordering::AcqRel);
        }
        progress.advanced.notify_waiters();
    }

    /// Notes a failure (logged when it is the first, or a different reason); returns since
    /// when the next give-up counts.
    fn failed(&mut self, doing: &str, why: String) -> Instant {
        match &mut self.failing {
            Some(failing) => {
                if failing.why != why {
                    tracing::error!("storage still failing, now with: {why}");
                    failing.why = why;
                }
                failing.from
            }
            None => {
                tracing::error!(
                    "storage {doing} failed: {why}; frames behind the writes it holds wait, at \
                     most {:?}, retrying",
                    self.give_up_after
                );
                let now = Instant::now();
                self.failing = Some(Failing { since: now, from: now, why });
                now
            }
        }
    }

    fn recovered(&mut self) {
        if let Some(failing) = self.failing.take() {
            tracing::warn!("storage works again, after failing for {:?}", failing.since.elapsed());
        }
    }

    /// Gives up on the writes flushes could not make durable: the store drops them
    /// ([`Store::recover`]) and they are declared lost; a recovery that fails is retried until
    /// it works, the store failing every call meanwhile. Returns `false` if the server stops
    /// meanwhile.
    async fn give_up(&mut self, backoff: &mut Duration) -> bool {
        let why: Arc<str> = match &self.failing {
            Some(failing) => failing.why.as_str().into(),
            None => "the store failed".into(),
        };
        let mut recovered = self.blocking(|store| store.recover()).await;
        // Read once the store let go of them: every write it dropped has its number by now.
        let to = self.progress.written.load(Ordering::Acquire);
        let from = self.progress.durable.load(Ordering::Acquire);
        if to > from {
            tracing::error!(
                "storage: gave up on {} write(s) after {:?} ({why}); their instances restart \
                 from what is durable",
                to - from,
                self.give_up_after
            );
            self.files.forget();
            lost_run(&self.progress, from, to, why);
        }
        while let Err(e) = recovered {
            self.failed("recovery", e);
            tokio::select! {
                () = tokio::time::sleep(*backoff) => {}
                () = self.stop.notified() => return false,
            }
            *backoff = (*backoff * 2).min(MAX_BACKOFF);
            recovered = self.blocking(|store| store.recover()).await;
        }
        // The next give-up, if flushes still fail, is a full timeout away.
        if let Some(failing) = &mut self.failing {
            failing.from = Instant::now();
        }
        *backoff = Duration::from_millis(50);
        true
    }
}

#[cfg(test)]
mod tests;
