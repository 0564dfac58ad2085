//! [`Timers`]: what one instance keeps to wake itself: its alarm, its schedules (records by id,
//! and an index by due time) and its queue, and its entry in the server's [`Wakeups`].
//!
//! Every change is one atomic batch through the output gate. A change that brings the next
//! alarm earlier moves the instance's entry in the same batch; one that could make it later
//! leaves the entry early, and the instance moves it after its next alarm runs. An entry is
//! never later than the instance's earliest pending alarm, so a crash between two batches can
//! cost a spare wake, never a missed one.

use super::durability::OutputGate;
use super::wakeups::{Wakeups, now_ms};
use super::{InstanceKeys, Store, StoreError, WriteBatch, decode_value, encode_value};

/// The alarm as stored: when it is due, and how many times it has been retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct StoredAlarm {
    pub(crate) at: u64,
    pub(crate) retries: u32,
}

/// The alarm, schedules and queue of one instance.
pub(crate) struct Timers<'a> {
    gate: &'a OutputGate,
    keys: &'a InstanceKeys,
    wakeups: &'a Wakeups,
}

impl<'a> Timers<'a> {
    pub(crate) fn new(gate: &'a OutputGate, keys: &'a InstanceKeys, wakeups: &'a Wakeups) -> Self {
        Self { gate, keys, wakeups }
    }

    fn store(&self) -> &'a dyn Store {
        self.gate.store()
    }

    /// The stored alarm, if one is set.
    pub(crate) fn alarm(&self) -> Result<Option<StoredAlarm>, StoreError> {
        let Some(stored) = self.store().get(&self.keys.alarm())? else { return Ok(None) };
        let bytes = decode_value(&stored)?;
        let (at, retries) = bytes
            .split_first_chunk::<8>()
            .and_then(|(at, rest)| Some((*at, *rest.first_chunk::<4>()?)))
            .ok_or_else(|| StoreError::msg("a stored alarm is not 12 bytes"))?;
        Ok(Some(StoredAlarm { at: u64::from_be_bytes(at), retries: u32::from_be_bytes(retries) }))
    }

    /// Sets the alarm (replacing the one there was).
    pub(crate) fn set_alarm(&self, alarm: StoredAlarm) -> Result<(), StoreError> {
        let mut value = Vec::with_capacity(12);
        value.extend_from_slice(&alarm.at.to_be_bytes());
        value.extend_from_slice(&alarm.retries.to_be_bytes());
        let mut batch = WriteBatch::new();
        batch.put(self.keys.alarm(), encode_value(&value));
        self.commit(batch, Some(alarm.at))
    }

    /// Removes the alarm; returns whether one was set.
    pub(crate) fn delete_alarm(&self) -> Result<bool, StoreError> {
        if self.alarm()?.is_none() {
            return Ok(false);
        }
        let mut batch = WriteBatch::new();
        batch.delete(self.keys.alarm());
        self.commit(batch, None)?;
        Ok(true)
    }

    /// Stores schedule `id`, due at `due` (moving it from `was_due`, if it was stored).
    pub(crate) fn put_schedule(
        &self,
        id: &str,
        due: u64,
        record: &[u8],
        was_due: Option<u64>,
    ) -> Result<(), StoreError> {
        let mut batch = WriteBatch::new();
        if let Some(was) = was_due.filter(|&was| was != due) {
            batch.delete(self.keys.due(was, id));
        }
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

    /// The ids of the schedules due before `end`, earliest first, at most `limit` of them.
    pub(crate) fn due_before(&self, end: u64, limit: usize) -> Result<Vec<String>, StoreError> {
        let (start, end) = (self.keys.due_start(), self.keys.due(end, ""));
        let mut ids = Vec::new();
        for entry in self.store().scan_range(&start, &end).take(limit) {
            let (key, _) = entry?;
            if let Some((_, id)) = self.keys.due_entry(&key) {
                ids.push(String::from_utf8_lossy(id).into_owned());
            }
        }
        Ok(ids)
    }

    /// When the first schedule is due.
    fn first_due(&self) -> Result<Option<u64>, StoreError> {
        let (start, end) = (self.keys.due_start(), self.keys.due(u64::MAX, "\u{10ffff}"));
        match self.store().scan_range(&start, &end).next() {
            Some(entry) => Ok(entry.map(|(key, _)| self.keys.due_entry(&key).map(|(due, _)| due))?),
            None => Ok(None),
        }
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
        Ok(tail)
    }

    /// The queued records with their sequence numbers, in order.
    pub(crate) fn queued(&self) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        self.queued_up_to(usize::MAX)
    }

    /// The first queued record, if any.
    pub(crate) fn first_queued(&self) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        Ok(self.queued_up_to(1)?.pop())
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
        }
        Ok(removed)
    }

    /// When the instance next has something due: its alarm, its first schedule, or now if
    /// work is queued.
    pub(crate) fn next_due(&self) -> Result<Option<u64>, StoreError> {
        let alarm = self.alarm()?.map(|alarm| alarm.at);
        let queued = self.first_queued()?.map(|_| now_ms());
        let schedule = self.first_due()?;
        Ok([alarm, queued, schedule].into_iter().flatten().min())
    }

    /// Moves the instance's entry in the index to its next due time exactly (later ones
    /// included, which changes do not do by themselves); after its alarms have run.
    pub(crate) fn settle(&self) -> Result<(), StoreError> {
        let next = self.next_due()?;
        let current = Wakeups::current(self.store(), self.keys)?;
        if current == next {
            return Ok(());
        }
        let mut batch = WriteBatch::new();
        Wakeups::move_entry(&mut batch, self.keys, current, next);
        self.apply(batch)?;
        self.wakeups.moved(self.keys, current, next);
        Ok(())
    }

    /// Applies `batch` through the output gate, with the instance's entry in the index moved
    /// to `due` if that is earlier than where it is.
    fn commit(&self, mut batch: WriteBatch, due: Option<u64>) -> Result<(), StoreError> {
        let current = Wakeups::current(self.store(), self.keys)?;
        let earlier = due.filter(|&due| current.is_none_or(|current| due < current));
        if earlier.is_some() {
            Wakeups::move_entry(&mut batch, self.keys, current, earlier);
        }
        self.apply(batch)?;
        if earlier.is_some() {
            self.wakeups.moved(self.keys, current, earlier);
        }
        Ok(())
    }

    fn apply(&self, batch: WriteBatch) -> Result<(), StoreError> {
        self.gate.may_write()?;
        self.gate.wrote(self.store().apply(batch))
    }
}
