//! The group commit and the output gate against a store whose flushes are slow or fail.

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
    recoveries: AtomicUsize,
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
    fn recover(&self) -> Result<(), StoreError> {
        self.recoveries.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

#[tokio::test]
async fn writes_share_flushes_and_waiters_are_released_in_order() {
    let store = Arc::new(SlowFlush::default());
    let commits = GroupCommit::start(store.clone(), WAIT_FOREVER);
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
    let commits = GroupCommit::start(store.clone(), WAIT_FOREVER);
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

#[tokio::test]
async fn writes_flushes_cannot_make_durable_are_lost_after_the_timeout() {
    let store = Arc::new(SlowFlush::default());
    let commits = GroupCommit::start(store.clone(), Duration::from_millis(200));
    let first = commits.wrote();
    assert_eq!(commits.durable(first).await, Settled::Durable);
    store.failing.store(true, Ordering::Relaxed);
    let (second, third) = (commits.wrote(), commits.wrote());
    let losses = commits.next_loss(0);
    let started = std::time::Instant::now();
    let settled = commits.durable(third).await;
    assert!(started.elapsed() >= Duration::from_millis(200), "{:?}", started.elapsed());
    assert!(matches!(&settled, Settled::Lost(why) if why.contains("no space left")));
    assert_eq!(losses.await, 1);
    assert_eq!(commits.settled(second), settled);
    assert_eq!(commits.settled(first), Settled::Durable, "a durable write stays durable");
    assert!(!commits.is_durable(second));
    assert_eq!(commits.lost_runs(0).len(), 1);
    assert!(store.recoveries.load(Ordering::Relaxed) >= 1, "the store was asked to recover");

    // The disk works again: later writes are durable, the lost ones stay lost.
    store.failing.store(false, Ordering::Relaxed);
    let fourth = commits.wrote();
    assert_eq!(commits.durable(fourth).await, Settled::Durable);
    assert!(matches!(commits.settled(third), Settled::Lost(_)));
}

#[tokio::test]
async fn an_instance_whose_write_was_lost_writes_again_only_after_it_restarts() {
    let store = Arc::new(SlowFlush::default());
    let commits = Arc::new(GroupCommit::start(store.clone(), Duration::from_millis(100)));
    let gate = OutputGate::new(commits.clone(), true, 0);
    gate.may_write().expect("nothing lost yet");
    store.failing.store(true, Ordering::Relaxed);
    gate.wrote(Ok::<(), StoreError>(())).expect("written");
    assert!(matches!(gate.settled(gate.pending()).await, Settled::Lost(_)));
    store.failing.store(false, Ordering::Relaxed);
    // A turn that was awaiting meanwhile must not build on the lost write.
    let refused = gate.may_write().expect_err("refused").to_string();
    assert!(refused.contains("earlier writes were lost"), "{refused}");
    gate.forget_lost(); // the restart
    gate.may_write().expect("writes again");
    assert_eq!(gate.pending(), 0, "its frames wait for nothing lost");
}

#[tokio::test]
async fn a_failed_write_has_the_flusher_recover_the_store_with_nothing_to_flush() {
    let store = Arc::new(SlowFlush::default());
    store.failing.store(true, Ordering::Relaxed);
    let commits = Arc::new(GroupCommit::start(store.clone(), Duration::from_millis(100)));
    let gate = OutputGate::new(commits.clone(), true, 0);
    let failed: Result<(), StoreError> = Err(StoreError::msg("put: no space left"));
    assert!(gate.wrote(failed).is_err());
    assert_eq!(gate.pending(), 0, "a failed write holds nothing");
    while store.recoveries.load(Ordering::Relaxed) == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(commits.loss_count(), 0, "nothing was written, so nothing is lost");
}

#[tokio::test]
async fn a_hold_waits_for_the_turn_to_end_then_for_what_it_became() {
    let store = Arc::new(SlowFlush::default());
    let commits = Arc::new(GroupCommit::start(store.clone(), WAIT_FOREVER));
    let gate = OutputGate::new(commits.clone(), true, 0);
    gate.hold();
    let held = gate.pending();
    assert_ne!(held & HELD, 0, "frames sent now wait on the hold");
    // Writes of others go on being flushed; the hold stays pending while the turn is open.
    let other = commits.wrote();
    assert_eq!(commits.durable(other).await, Settled::Durable);
    assert_eq!(commits.settled(held), Settled::Pending);
    assert!(!commits.is_durable(held));
    // The commit: the hold now waits for the write it became.
    gate.wrote_outside();
    gate.release();
    assert_eq!(gate.pending(), other + 1);
    assert_eq!(commits.durable(held).await, Settled::Durable);

    // A turn that rolled back: its hold is what the instance wrote before.
    gate.hold();
    let rolled_back = gate.pending();
    gate.release();
    assert!(commits.is_durable(rolled_back));

    // A commit that failed: what waited is told it was lost; the instance is told to restart,
    // and no other instance is concerned.
    gate.hold();
    let failed = gate.pending();
    gate.fail("the disk is full");
    assert!(
        matches!(commits.durable(failed).await, Settled::Lost(why) if why.contains("disk is full"))
    );
    assert!(gate.take_failure().is_some_and(|why| why.contains("disk is full")));
    assert_eq!(gate.take_failure(), None);
    assert_eq!(commits.loss_count(), 0);
    assert_eq!(gate.pending(), other + 1, "the instance's own writes are untouched");
}

/// A limit `stop` never reaches in these tests: they check the flusher ends by itself.
const WAIT_FOREVER: Duration = Duration::from_secs(3600);
