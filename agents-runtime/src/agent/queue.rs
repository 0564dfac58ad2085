//! The queue, as the Agents SDK has it: `this.queue(callback, payload)` runs callbacks one at a
//! time, in order, after the current turn; `dequeue`, `dequeueAll`, `dequeueAllByCallback`,
//! `getQueue` and `getQueues`, on [`Context`]. Items are stored, so work queued before a crash
//! runs after the restart.

use std::time::{Duration, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::agent::Agent;
use crate::agent::callback::{Callback, TriggerKind, prepare};
use crate::agent::context::Context;
use crate::agent::schedule::new_id;
use crate::agent::tasks::QueueItem;
use crate::error::{Error, Result};
use crate::storage::timers::Timers;
use crate::storage::wakeups::now_ms;

/// A queue item as stored.
#[derive(Serialize, Deserialize)]
struct Record {
    id: String,
    callback: String,
    payload: serde_json::Value,
    created_at: u64,
}

impl From<Record> for QueueItem {
    fn from(record: Record) -> Self {
        Self {
            id: record.id,
            callback: record.callback,
            payload: record.payload,
            created_at: UNIX_EPOCH + Duration::from_millis(record.created_at),
        }
    }
}

fn decode(record: &[u8]) -> Result<QueueItem> {
    let record: Record = serde_json::from_slice(record)
        .map_err(|e| Error::msg(format!("storage: a queue item does not decode: {e}")))?;
    Ok(record.into())
}

/// The queue, in order, with the items' sequence numbers.
pub(crate) fn items(timers: &Timers<'_>) -> Result<Vec<(u64, QueueItem)>> {
    timers.queued()?.into_iter().map(|(seq, record)| Ok((seq, decode(&record)?))).collect()
}

/// The first queued item, if any, with its sequence number (an item that does not decode
/// still has one, so it can be removed).
pub(crate) fn first(timers: &Timers<'_>) -> Result<Option<(u64, Result<QueueItem>)>> {
    Ok(timers.first_queued()?.map(|(seq, record)| (seq, decode(&record))))
}

impl<A: Agent> Context<A> {
    /// Queues a call of a `#[callback]` method (`this.queue(callback, payload)`): queued calls
    /// run one at a time, in order, each as a turn of its own, soon after the current turn.
    /// Returns the item's id. Stored like any write: work queued before a crash runs after
    /// the restart.
    pub fn queue<C: Callback<A>>(&mut self, callback: C) -> Result<String> {
        let (name, payload) = prepare::<A, C>(callback, TriggerKind::Queue)?;
        let id = new_id();
        let record =
            Record { id: id.clone(), callback: name.to_owned(), payload, created_at: now_ms() };
        self.timers().push(&serde_json::to_vec(&record)?)?;
        Ok(id)
    }

    /// Removes a queued item that has not run yet (`dequeue(id)`); returns whether it was
    /// queued.
    pub fn dequeue(&mut self, id: &str) -> Result<bool> {
        self.dequeue_where(|item| item.id == id).map(|removed| removed > 0)
    }

    /// Empties the queue (`dequeueAll()`); returns how many items it held.
    pub fn dequeue_all(&mut self) -> Result<usize> {
        self.dequeue_where(|_| true)
    }

    /// Removes the queued calls of one callback (`dequeueAllByCallback(callback)`); returns
    /// how many there were.
    pub fn dequeue_all_by_callback(&mut self, callback: &str) -> Result<usize> {
        self.dequeue_where(|item| item.callback == callback)
    }

    fn dequeue_where(&mut self, which: impl Fn(&QueueItem) -> bool) -> Result<usize> {
        let timers = self.timers();
        let seqs: Vec<u64> = items(&timers)?
            .into_iter()
            .filter(|(_, item)| which(item))
            .map(|(seq, _)| seq)
            .collect();
        Ok(timers.unqueue(&seqs)?)
    }

    /// The queued item with this id, if it has not run yet (`getQueue(id)`).
    pub fn get_queue(&self, id: &str) -> Result<Option<QueueItem>> {
        let items = items(&self.timers())?;
        Ok(items.into_iter().map(|(_, item)| item).find(|item| item.id == id))
    }

    /// Every queued item, in the order they will run (`getQueues()`).
    pub fn get_queues(&self) -> Result<Vec<QueueItem>> {
        Ok(items(&self.timers())?.into_iter().map(|(_, item)| item).collect())
    }
}
