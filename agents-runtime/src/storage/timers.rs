//! [`Timers`]: what one instance keeps to wake itself: its alarm, its schedules (records by id,
//! and an index by due time) and its queue, and its entry in the server's [`Wakeups`].
//!
//! Every change is one atomic batch through the output gate. A change that brings the next
//! alarm earlier moves the instance's entry in the same batch; one that could make it later
//! leaves the entry early, and the instance moves it after its next alarm runs
//! ([`settle`](Timers::settle)). An entry is never later than the instance's earliest pending
//! alarm, so a crash between two batches can cost a spare wake, never a missed one.

use std::collections::HashSet;

use super::alarm::{AlarmSlot, Known, StoredAlarm};
use super::durability::OutputGate;
use super::wakeups::{Wakeups, now_ms};
use super::{InstanceKeys, Store, StoreError, WriteBatch, decode_value, encode_value};
use crate::sync::lock;

/// What became of a schedule whose callback ran, applied by [`Timers::settle`].
pub(crate) enum Ran {
    /// A one-off: removed.
    Removed { id: String, due: u64 },
    /// A repeating one: stored again (`record`) due at `due`, no longer at `was`.
    Moved { id: String, was: u64, due: u64, record: Vec<u8> },
}

/// The alarm, schedules and queue of one instance.
pub(crate) struct Timers<'a> {
    gate: &'a OutputGate,
    keys: &'a InstanceKeys,
    slot: &'a AlarmSlot,
}

impl<'a> Timers<'a> {
    pub(crate) fn new(gate: &'a OutputGate, keys: &'a InstanceKeys, slot: &'a AlarmSlot) -> Self {
        Self { gate, keys, slot }
    }

    fn store(&self) -> &'a dyn Store {
        self.gate.store()
    }

    fn known(&self) -> Known {
        *lock(&self.slot.known)
    }

    fn learn(&self, learn: impl FnOnce(&mut Known)) {
        learn(&mut lock(&self.slot.known));
    }

    /// The stored alarm, if one is set.
    pub(crate) fn alarm(&self) -> Result<Option<StoredAlarm>, StoreError> {
        if let Some(alarm) = self.known().alarm {
            return Ok(alarm);
        }
        let alarm = match self.store().get(&self.keys.alarm())? {
            Some(stored) => {
                let bytes = decode_value(&stored)?;
                let (at, retries) = bytes
                    .split_first_chunk::<8>()
                    .and_then(|(at, rest)| Some((*at, *rest.first_chunk::<4>()?)))
                    .ok_or_else(|| StoreError::msg("a stored alarm is not 12 bytes"))?;
                let (at, retries) = (u64::from_be_bytes(at), u32::from_be_bytes(retries));
                Some(StoredAlarm { at, retries })
            }
            None => None,
        };
        self.learn(|known| known.alarm = Some(alarm));
        Ok(alarm)
    }

    /// Sets the alarm (replacing the one there was).
    pub(crate) fn set_alarm(&self, alarm: StoredAlarm) -> Result<(), StoreError> {
        let mut value = Vec::with_capacity(12);
        value.extend_from_slice(&alarm.at.to_be_bytes());
        value.extend_from_slice(&alarm.retries.to_be_bytes());
        let mut batch = WriteBatch::new();
        batch.put(self.keys.alarm(), encode_value(&value));
        self.commit(batch, Some(alarm.at))?;
        self.learn(|known| known.alarm = Some(Some(alarm)));
        Ok(())
    }

    /// Removes the alarm; returns whether one was set.
    pub(crate) fn delete_alarm(&self) -> Result<bool, StoreError> {
        if self.alarm()?.is_none() {
            return Ok(false);
        }
        let mut batch = WriteBatch::new();
        batch.delete(self.keys.alarm());
        self.commit(batch, None)?;
        self.learn(|known| known.alarm = Some(None));
        Ok(true)
    }

    /// Stores a new schedule `id`, due at `due`.
    pub(crate) fn add_schedule(&self, id: &str, due: u64, record: &[u8]) -> Result<(), StoreError> {
        let mut batch = WriteBatch::new();
        batch.put(self.keys.schedule(id), encode_value(record));
        batch.put(self.keys.due(due, id), encode_value(b""));
        self.commit(batch, Some(due))
    }

    /// Schedule `id`'s stored record.
    pub(crate) fn schedule(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(stored) = self.store().get(&self.keys.schedule(id))? else { return Ok(None) };
        decode_value(&stored).map(|record| Some(record.to_vec()))
    }

    /// Removes schedule `id`, due at `due`.
    pub(crate) fn remove_schedule(&self, id: &str, due: u64) -> Result<(), StoreError> {
        let mut batch = WriteBatch::new();
        batch.delete(self.keys.schedule(id));
        batch.delete(self.keys.due(due, id));
        self.commit(batch, None)
    }

    /// Every schedule's stored record, in id order.
    pub(crate) fn schedules(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        let prefix = self.keys.schedule_prefix();
        self.store()
            .scan_prefix(&prefix)
            .map(|entry| entry.and_then(|(_, stored)| decode_value(&stored).map(<[u8]>::to_vec)))
            .collect()
    }

    /// The entries of the index of schedules due before `end` (due time and id), earliest
    /// first, at most `limit` of them.
    pub(crate) fn due_before(
        &self,
        end: u64,
        limit: usize,
    ) -> Result<Vec<(u64, String)>, StoreError> {
        let (start, end) = (self.keys.due_start(), self.keys.due(end, ""));
        let mut due = Vec::new();
        for entry in self.store().scan_range(&start, &end).take(limit) {
            let (key, _) = entry?;
            if let Some((at, id)) = self.keys.due_entry(&key) {
                due.push((at, String::from_utf8_lossy(id).into_owned()));
            }
        }
        Ok(due)
    }

    /// Removes an entry of the index of schedules that no record matches (left by a batch a
    /// failure cut short).
    pub(crate) fn drop_due(&self, due: u64, id: &str) -> Result<(), StoreError> {
        let mut batch = WriteBatch::new();
        batch.delete(self.keys.due(due, id));
        self.commit(batch, None)
    }

    /// When the first schedule is due, leaving out the index entries in `gone`.
    fn first_due(&self, gone: &HashSet<Vec<u8>>) -> Result<Option<u64>, StoreError> {
        let (start, end) = (self.keys.due_start(), self.keys.due(u64::MAX, "\u{10ffff}"));
        for entry in self.store().scan_range(&start, &end) {
            let (key, _) = entry?;
            if !gone.contains(&key) {
                return Ok(self.keys.due_entry(&key).map(|(due, _)| due));
            }
        }
        Ok(None)
    }

    /// Queues a record; returns its sequence number.
    pub(crate) fn push(&self, record: &[u8]) -> Result<u64, StoreError> {
        let tail = match self.store().get(&self.keys.queue_tail())? {
            Some(stored) => decode_value(&stored)?
                .try_into()
                .map(u64::from_be_bytes)
                .map_err(|_| StoreError::msg("a stored queue tail is not 8 bytes"))?,
            None => 0,
        };
        let mut batch = WriteBatch::new();
        batch.put(self.keys.queue(tail), encode_value(record));
        batch.put(self.keys.queue_tail(), encode_value(&(tail + 1).to_be_bytes()));
        self.commit(batch, Some(now_ms()))?;
        self.learn(|known| known.queued = Some(true));
        Ok(tail)
    }

    /// The queued records with their sequence numbers, in order.
    pub(crate) fn queued(&self) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        self.queued_up_to(usize::MAX)
    }

    /// The first queued record, if any.
    pub(crate) fn first_queued(&self) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        if self.known().queued == Some(false) {
            return Ok(None);
        }
        let first = self.queued_up_to(1)?.pop();
        self.learn(|known| known.queued = Some(first.is_some()));
        Ok(first)
    }

    fn queued_up_to(&self, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let prefix = self.keys.queue_prefix();
        let mut items = Vec::new();
        for entry in self.store().scan_prefix(&prefix).take(limit) {
            let (key, stored) = entry?;
            let Some(seq) = key[prefix.len()..].first_chunk::<8>() else { continue };
            items.push((u64::from_be_bytes(*seq), decode_value(&stored)?.to_vec()));
        }
        Ok(items)
    }

    /// Removes the queued records `seqs`; returns how many were there.
    pub(crate) fn unqueue(&self, seqs: &[u64]) -> Result<usize, StoreError> {
        let mut batch = WriteBatch::new();
        let mut removed = 0;
        for &seq in seqs {
            let key = self.keys.queue(seq);
            if self.store().get(&key)?.is_some() {
                removed += 1;
                batch.delete(key);
            }
        }
        if removed > 0 {
            self.commit(batch, None)?;
            self.learn(|known| known.queued = None);
        }
        Ok(removed)
    }

    /// Where the instance's entry in the index is now.
    fn wake(&self) -> Result<Option<u64>, StoreError> {
        if let Some(wake) = self.known().wake {
            return Ok(wake);
        }
        let wake = Wakeups::current(self.store(), self.keys)?;
        self.learn(|known| known.wake = Some(wake));
        Ok(wake)
    }

    /// After the instance's alarms ran: applies what became of the schedules that ran, and
    /// moves the instance's entry in the index to its next due time exactly (later ones
    /// included, which other changes do not do), all in one batch.
    pub(crate) fn settle(&self, ran: Vec<Ran>) -> Result<(), StoreError> {
        let mut batch = WriteBatch::new();
        let mut gone = HashSet::new();
        let mut moved_to = None::<u64>;
        for change in ran {
            match change {
                Ran::Removed { id, due } => {
                    batch.delete(self.keys.schedule(&id));
                    gone.insert(self.keys.due(due, &id));
                }
                Ran::Moved { id, was, due, record } => {
                    batch.put(self.keys.schedule(&id), encode_value(&record));
                    if was != due {
                        gone.insert(self.keys.due(was, &id));
                    }
                    batch.put(self.keys.due(due, &id), encode_value(b""));
                    moved_to = Some(moved_to.map_or(due, |earliest| earliest.min(due)));
                }
            }
        }
        for key in &gone {
            batch.delete(key.clone());
        }
        let alarm = self.alarm()?.map(|alarm| alarm.at);
        let queued = self.first_queued()?.map(|_| now_ms());
        let schedule = self.first_due(&gone)?;
        let next = [alarm, queued, schedule, moved_to].into_iter().flatten().min();
        let current = self.wake()?;
        if current != next {
            Wakeups::move_entry(&mut batch, self.keys, current, next);
        }
        if !batch.is_empty() {
            self.apply(batch)?;
        }
        self.learn(|known| known.wake = Some(next));
        // An entry still due (more was due than one wake runs) goes back in the clock's
        // window, which let go of it when it sent this wake.
        if current != next || next.is_some_and(|next| next <= now_ms()) {
            self.slot.wakeups.moved(self.keys, current, next);
        }
        Ok(())
    }

    /// Applies `batch` through the output gate, with the instance's entry in the index moved
    /// to `due` if that is earlier than where it is.
    fn commit(&self, mut batch: WriteBatch, due: Option<u64>) -> Result<(), StoreError> {
        let current = self.wake()?;
        let earlier = due.filter(|&due| current.is_none_or(|current| due < current));
        if earlier.is_some() {
            Wakeups::move_entry(&mut batch, self.keys, current, earlier);
        }
        self.apply(batch)?;
        if earlier.is_some() {
            self.learn(|known| known.wake = Some(earlier));
            self.slot.wakeups.moved(self.keys, current, earlier);
        }
        Ok(())
    }

    fn apply(&self, batch: WriteBatch) -> Result<(), StoreError> {
        self.gate.may_write()?;
        let applied = self.gate.wrote(self.store().apply(batch));
        if applied.is_err() {
            // A batch that failed may have been applied in part: read the store again.
            self.slot.forget();
        }
        applied
    }
}
