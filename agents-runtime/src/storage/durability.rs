//! The output gate's clock: writes get increasing sequence numbers, and one flusher task makes
//! them durable in groups (group commit), so many writes share one fsync.
//!
//! A frame sent after a write carries that write's number and is released to the socket only
//! once the number is durable; see `Connection::send` and the socket task.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, mpsc};

use super::Store;

/// A write's place in the store's history; `0` is "no write", always durable.
pub(crate) type WriteSeq = u64;

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
    progress: Arc<Progress>,
    /// A one-slot doorbell: a pending ring covers any number of writes.
    wake: mpsc::Sender<()>,
    /// Tells the flusher to end (shutdown), so it lets go of the store.
    stop: Arc<Notify>,
    flusher: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl GroupCommit {
    /// Starts the flusher; it ends when this is dropped or [`stop`](Self::stop)ped.
    pub(crate) fn start(store: Arc<dyn Store>) -> Self {
        let progress = Arc::new(Progress::default());
        let (wake, doorbell) = mpsc::channel(1);
        let stop = Arc::new(Notify::new());
        let flusher =
            tokio::spawn(flusher(store.clone(), progress.clone(), doorbell, stop.clone()));
        Self { store, progress, wake, stop, flusher: std::sync::Mutex::new(Some(flusher)) }
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

    /// Numbers a write that has returned, and asks for a flush that covers it.
    pub(crate) fn wrote(&self) -> WriteSeq {
        let seq = self.progress.written.fetch_add(1, Ordering::AcqRel) + 1;
        let _ = self.wake.try_send(());
        seq
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

    pub(crate) fn is_durable(&self, seq: WriteSeq) -> bool {
        self.progress.durable.load(Ordering::Acquire) >= seq
    }

    /// Resolves once write `seq` is durable.
    pub(crate) async fn durable(&self, seq: WriteSeq) {
        loop {
            let advanced = self.progress.advanced.notified();
            tokio::pin!(advanced);
            advanced.as_mut().enable();
            if self.is_durable(seq) {
                return;
            }
            advanced.await;
        }
    }

    /// Flushes everything written so far, now (shutdown).
    pub(crate) async fn flush_now(&self) -> Result<(), super::StoreError> {
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || store.flush()).await {
            Ok(flushed) => flushed,
            Err(e) => Err(super::StoreError::msg(format!("the flush thread failed: {e}"))),
        }
    }
}

/// One instance's side of the output gate: the number of its last write that frames must wait
/// for. An agent with relaxed durability never sets it, so its frames never wait.
pub(crate) struct OutputGate {
    commits: Arc<GroupCommit>,
    confirmed: bool,
    last_write: AtomicU64,
}

impl OutputGate {
    /// A gate that starts behind every write made so far: a new instance can read data an
    /// earlier one wrote, and must not repeat it to a client before it is durable.
    pub(crate) fn new(commits: Arc<GroupCommit>, confirmed: bool) -> Self {
        let written = if confirmed { commits.progress.written.load(Ordering::Acquire) } else { 0 };
        Self { commits, confirmed, last_write: AtomicU64::new(written) }
    }

    pub(crate) fn store(&self) -> &dyn Store {
        &**self.commits.store()
    }

    /// A write to the store returned: later frames wait until it is durable.
    pub(crate) fn wrote(&self) {
        if self.confirmed {
            let seq = self.commits.wrote();
            self.last_write.fetch_max(seq, Ordering::AcqRel);
        }
    }

    /// What a frame sent now must wait for.
    pub(crate) fn pending(&self) -> WriteSeq {
        self.last_write.load(Ordering::Acquire)
    }

    /// Resolves once write `seq` (a [`pending`](Self::pending) value) is durable.
    pub(crate) async fn settled(&self, seq: WriteSeq) {
        self.commits.durable(seq).await;
    }

    /// Whether write `seq` is durable.
    pub(crate) fn is_settled(&self, seq: WriteSeq) -> bool {
        self.commits.is_durable(seq)
    }
}

/// Flushes whenever writes are not durable yet; writes made during a flush wait for the next
/// one, which then covers all of them.
async fn flusher(
    store: Arc<dyn Store>,
    progress: Arc<Progress>,
    mut doorbell: mpsc::Receiver<()>,
    stop: Arc<Notify>,
) {
    const MAX_BACKOFF: Duration = Duration::from_secs(5);
    let mut backoff = Duration::from_millis(50);
    loop {
        tokio::select! {
            rung = doorbell.recv() => if rung.is_none() { return },
            () = stop.notified() => return,
        }
        loop {
            let target = progress.written.load(Ordering::Acquire);
            if progress.durable.load(Ordering::Acquire) >= target {
                break;
            }
            let flushing = store.clone();
            let flushed = tokio::task::spawn_blocking(move || flushing.flush()).await;
            match flushed {
                Ok(Ok(())) => {
                    backoff = Duration::from_millis(50);
                    let before = progress.durable.fetch_max(target, Ordering::AcqRel);
                    if target > before {
                        progress.flushes.fetch_add(1, Ordering::AcqRel);
                        progress.largest_batch.fetch_max(target - before, Ordering::AcqRel);
                    }
                    progress.advanced.notify_waiters();
                }
                failed => {
                    let why = match failed {
                        Ok(Err(e)) => e.to_string(),
                        Err(e) => format!("the flush thread failed: {e}"),
                        Ok(Ok(())) => unreachable!("handled above"),
                    };
                    // Frames stay held: nothing is acknowledged that is not on disk.
                    tracing::error!("storage flush failed, retrying in {backoff:?}: {why}");
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = stop.notified() => return,
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;
    use crate::storage::{MemoryStore, ScanIter, StoreError, WriteBatch};

    /// Counts flushes, each taking a while, to see writes share them.
    #[derive(Default)]
    struct SlowFlush {
        inner: MemoryStore,
        flushes: AtomicUsize,
        /// Every flush fails (a full or broken disk).
        failing: std::sync::atomic::AtomicBool,
    }

    impl Store for SlowFlush {
        fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
            self.inner.get(key)
        }
        fn put(&self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
            self.inner.put(key, value)
        }
        fn delete(&self, key: &[u8]) -> Result<bool, StoreError> {
            self.inner.delete(key)
        }
        fn scan_prefix<'a>(&'a self, prefix: &[u8]) -> ScanIter<'a> {
            self.inner.scan_prefix(prefix)
        }
        fn apply(&self, batch: WriteBatch) -> Result<(), StoreError> {
            self.inner.apply(batch)
        }
        fn flush(&self) -> Result<(), StoreError> {
            std::thread::sleep(Duration::from_millis(20));
            self.flushes.fetch_add(1, Ordering::Relaxed);
            if self.failing.load(Ordering::Relaxed) {
                return Err(StoreError::msg("no space left on device"));
            }
            Ok(())
        }
    }

    #[tokio::test]
    async fn writes_share_flushes_and_waiters_are_released_in_order() {
        let store = Arc::new(SlowFlush::default());
        let commits = GroupCommit::start(store.clone());
        assert!(commits.is_durable(0), "no write is always durable");
        let seqs: Vec<_> = (0..100).map(|_| commits.wrote()).collect();
        assert_eq!(seqs, (1..=100).collect::<Vec<_>>());
        assert!(!commits.is_durable(100));
        commits.durable(100).await;
        assert!(commits.is_durable(1) && commits.is_durable(100));
        let flushes = store.flushes.load(Ordering::Relaxed);
        assert!(flushes <= 2, "100 writes made {flushes} flushes");
        let stats = commits.stats();
        assert_eq!(stats.durable_writes, 100);
        assert_eq!(stats.flushes, flushes as u64);
        assert!(stats.largest_batch >= 50, "{stats:?}");
    }

    #[tokio::test]
    async fn stop_ends_a_flusher_that_keeps_failing() {
        let store = Arc::new(SlowFlush::default());
        store.failing.store(true, Ordering::Relaxed);
        let commits = GroupCommit::start(store.clone());
        let seq = commits.wrote();
        while store.flushes.load(Ordering::Relaxed) < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(!commits.is_durable(seq), "a failed flush confirms nothing");
        // The flusher is backing off between failures; stop must not wait for a success.
        let stopped = tokio::time::timeout(Duration::from_secs(10), commits.stop(WAIT_FOREVER));
        stopped.await.expect("the flusher stops while flushes fail");
        assert_eq!(Arc::strong_count(&store), 2, "only this test and `commits` hold the store");
    }

    /// A limit `stop` never reaches in these tests: they check the flusher ends by itself.
    const WAIT_FOREVER: Duration = Duration::from_secs(3600);
}
