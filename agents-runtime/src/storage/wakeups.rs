//! [`Wakeups`]: when each instance next has an alarm due (its own alarm, a schedule or queued
//! work), as an index in the store sorted by due time, and the part of it due soon in memory.
//!
//! The store holds one entry per instance with something pending, so a server with millions
//! of pending schedules starts without reading them: the window in memory is filled from the
//! earliest entries on, up to a horizon and a cap, and refilled as time passes.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::Notify;

use super::keys::{InstanceKeys, index_from, parse_index_entry};
use super::{Store, StoreError, WriteBatch, decode_value, encode_value};
use crate::sync::lock;

/// How far ahead of now the window reads the index.
pub(crate) const HORIZON: Duration = Duration::from_secs(60);
/// Most entries the window holds from one refill; the rest are read as the first ones fire.
pub(crate) const WINDOW_CAP: usize = 65_536;

/// Milliseconds since the Unix epoch, as alarms are stored.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
}

/// The server's index of instances by their next due alarm: its window in memory, kept in step
/// with the store by the instances (when their alarms move) and by refills (as time passes).
#[derive(Default)]
pub(crate) struct Wakeups {
    window: Mutex<Window>,
    /// Signalled when an entry earlier than the window's first may have been added.
    earlier: Notify,
}

/// The entries of the index due up to `until`, as their store keys (which sort by due time).
#[derive(Default)]
struct Window {
    until: u64,
    entries: BTreeSet<Box<[u8]>>,
}

/// An instance whose alarm is due: its agent, its name, and when it was due.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct DueInstance {
    pub(crate) due: u64,
    pub(crate) agent: String,
    pub(crate) name: String,
}

impl Wakeups {
    /// Where the instance's entry in the index is now (its due time), if it has one.
    pub(crate) fn current(
        store: &dyn Store,
        keys: &InstanceKeys,
    ) -> Result<Option<u64>, StoreError> {
        let Some(stored) = store.get(&keys.wake())? else { return Ok(None) };
        let due = decode_value(&stored)?;
        let due =
            due.try_into().map_err(|_| StoreError::msg("a stored due time is not 8 bytes"))?;
        Ok(Some(u64::from_be_bytes(due)))
    }

    /// Adds to `batch` the writes that move the instance's entry from `old` to `new`.
    pub(crate) fn move_entry(
        batch: &mut WriteBatch,
        keys: &InstanceKeys,
        old: Option<u64>,
        new: Option<u64>,
    ) {
        if let Some(old) = old {
            batch.delete(keys.index_entry(old));
        }
        match new {
            Some(new) => {
                batch.put(keys.index_entry(new), encode_value(b""));
                batch.put(keys.wake(), encode_value(&new.to_be_bytes()));
            }
            None => {
                batch.delete(keys.wake());
            }
        }
    }

    /// The store now has the instance's entry at `new` instead of `old`: the window follows.
    pub(crate) fn moved(&self, keys: &InstanceKeys, old: Option<u64>, new: Option<u64>) {
        let mut window = lock(&self.window);
        if let Some(old) = old {
            window.entries.remove(&*keys.index_entry(old));
        }
        let Some(new) = new.filter(|&new| new <= window.until) else { return };
        let first = window.entries.first().cloned();
        let entry: Box<[u8]> = keys.index_entry(new).into();
        let earlier = first.is_none_or(|first| entry < first);
        window.entries.insert(entry);
        drop(window);
        if earlier {
            self.earlier.notify_one();
        }
    }

    /// Reads the index from where the window ends up to `now + HORIZON` (at most
    /// [`WINDOW_CAP`] entries), and also every entry due before `overdue_before` (an entry
    /// the window let go of whose instance has not moved it: a failed start, say).
    pub(crate) fn refill(
        &self,
        store: &dyn Store,
        now: u64,
        overdue_before: Option<u64>,
    ) -> Result<(), StoreError> {
        let horizon = u64::try_from(HORIZON.as_millis()).unwrap_or(u64::MAX);
        let until = now.saturating_add(horizon);
        let from = {
            let mut window = lock(&self.window);
            let from = window.until;
            if until <= from && overdue_before.is_none() {
                return Ok(());
            }
            // Moved first: an instance arming an entry while this reads is put in the window
            // by `moved`, whether or not the read sees it.
            window.until = window.until.max(until);
            from
        };
        let read = self.read(store, from, until, overdue_before);
        if read.is_err() {
            // Read again from where the window ended, next time.
            lock(&self.window).until = from;
        }
        let found = read?;
        if found.is_empty() {
            return Ok(());
        }
        lock(&self.window).entries.extend(found);
        self.earlier.notify_one();
        Ok(())
    }

    /// The entries of the index due after `from` and up to `until` (at most `WINDOW_CAP`,
    /// then the window ends before the next due time), and those due before `overdue_before`.
    fn read(
        &self,
        store: &dyn Store,
        from: u64,
        until: u64,
        overdue_before: Option<u64>,
    ) -> Result<Vec<Box<[u8]>>, StoreError> {
        let mut found = Vec::new();
        if let Some(before) = overdue_before {
            let overdue = store.scan_range(&index_from(0), &index_from(before.min(from)));
            for entry in overdue.take(WINDOW_CAP) {
                found.push(entry?.0.into_boxed_slice());
            }
        }
        // The first read starts at 0: an alarm may be due at the epoch.
        let start = if from == 0 { 0 } else { from.saturating_add(1) };
        let mut last_due = None;
        for entry in store.scan_range(&index_from(start), &index_from(until.saturating_add(1))) {
            let key = entry?.0;
            let due = parse_index_entry(&key).map(|(due, ..)| due);
            if found.len() >= WINDOW_CAP && due != last_due {
                // The window ends before this due time; the next refill reads on from here.
                let end = last_due.unwrap_or(from);
                lock(&self.window).until = end;
                break;
            }
            last_due = due;
            found.push(key.into_boxed_slice());
        }
        Ok(found)
    }

    /// When the window's first entry is due.
    pub(crate) fn next_due(&self) -> Option<u64> {
        let window = lock(&self.window);
        window.entries.first().and_then(|key| parse_index_entry(key)).map(|(due, ..)| due)
    }

    /// Takes the entries due at or before `now` out of the window, at most `limit` of them.
    pub(crate) fn take_due(&self, now: u64, limit: usize) -> Vec<DueInstance> {
        let mut window = lock(&self.window);
        let mut due = Vec::new();
        while due.len() < limit {
            let Some(first) = window.entries.first() else { break };
            match parse_index_entry(first) {
                Some((at, ..)) if at > now => break,
                Some((at, agent, name)) => {
                    let (agent, name) = (agent.to_owned(), name.to_owned());
                    due.push(DueInstance { due: at, agent, name });
                }
                None => {}
            }
            window.entries.pop_first();
        }
        due
    }

    /// Resolves once an entry earlier than the window's first may have been added.
    pub(crate) async fn earlier(&self) {
        self.earlier.notified().await;
    }

    /// How many entries the window holds.
    #[cfg(test)]
    pub(crate) fn window_len(&self) -> usize {
        lock(&self.window).entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemoryStore;

    fn add(store: &MemoryStore, wakeups: &Wakeups, name: &str, due: u64) {
        let keys = InstanceKeys::new("r", name);
        let old = Wakeups::current(store, &keys).expect("reads");
        let mut batch = WriteBatch::new();
        Wakeups::move_entry(&mut batch, &keys, old, Some(due));
        store.apply(batch).expect("applies");
        wakeups.moved(&keys, old, Some(due));
    }

    #[test]
    fn the_window_holds_what_is_due_soon_and_refills_from_the_store() {
        let store = MemoryStore::new();
        let wakeups = Wakeups::default();
        let now = 1_000_000;
        add(&store, &wakeups, "soon", now + 10);
        add(&store, &wakeups, "late", now + 3_600_000);
        assert_eq!(wakeups.window_len(), 0, "nothing is read before the first refill");
        wakeups.refill(&store, now, None).expect("refills");
        assert_eq!(wakeups.window_len(), 1, "only what is due within the horizon");
        assert_eq!(wakeups.next_due(), Some(now + 10));
        add(&store, &wakeups, "sooner", now + 5);
        assert_eq!(wakeups.next_due(), Some(now + 5), "an entry inside the window joins it");
        add(&store, &wakeups, "sooner", now + 20);
        assert_eq!(wakeups.window_len(), 2, "a moved entry leaves its old place");
        assert!(wakeups.take_due(now, 10).is_empty());
        let due = wakeups.take_due(now + 15, 10);
        assert_eq!(due, [DueInstance { due: now + 10, agent: "r".into(), name: "soon".into() }]);
        wakeups.refill(&store, now + 3_600_000, None).expect("refills");
        let due = wakeups.take_due(now + 3_600_000, 10);
        let names: Vec<_> = due.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["sooner", "late"]);
    }

    #[test]
    fn overdue_entries_are_read_again() {
        let store = MemoryStore::new();
        let wakeups = Wakeups::default();
        add(&store, &wakeups, "stuck", 100);
        wakeups.refill(&store, 1_000, None).expect("refills");
        assert_eq!(wakeups.take_due(1_000, 10).len(), 1);
        wakeups.refill(&store, 1_000, None).expect("refills");
        assert!(wakeups.take_due(1_000, 10).is_empty(), "a plain refill reads on from the window");
        wakeups.refill(&store, 1_000, Some(900)).expect("refills");
        assert_eq!(wakeups.take_due(1_000, 10).len(), 1, "the sweep finds it again");
    }
}
