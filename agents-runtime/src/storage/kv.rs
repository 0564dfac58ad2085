//! [`Storage`]: the typed key-value API of one instance and its alarm, the counterpart of the
//! Durable Objects storage API (`ctx.storage.get/put/delete/list`, `setAlarm/getAlarm/deleteAlarm`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::alarm::{AlarmSlot, StoredAlarm, to_ms};
use super::durability::OutputGate;
use super::timers::Timers;
use super::{InstanceKeys, Store, WriteBatch, decode_value, encode_value};
use crate::error::{Error, Result};

/// Longest key, in bytes of UTF-8 (Durable Objects' limit).
pub const MAX_KEY_SIZE: usize = 2048;
/// Largest value, in bytes of JSON (Durable Objects' key-value limit).
pub const MAX_VALUE_SIZE: usize = 128 * 1024;

/// The key-value storage of one agent instance (`this.ctx.storage` in the docs), from
/// [`Context::storage`](crate::Context::storage).
///
/// Keys are strings, values anything serde can write as JSON. Reads see every earlier write at
/// once. Writes are durable before any frame the agent sends after them reaches a client (the
/// output gate), unless the agent is `#[agent(durability = "relaxed")]`. Data survives
/// hibernation and restarts; it is the place for what `on_start` rebuilds in-memory fields from.
///
/// Calls are synchronous: the embedded store answers from memory.
pub struct Storage<'a> {
    pub(super) gate: &'a OutputGate,
    pub(super) keys: &'a InstanceKeys,
    pub(super) alarm: &'a AlarmSlot,
}

impl<'a> Storage<'a> {
    pub(crate) fn new(gate: &'a OutputGate, keys: &'a InstanceKeys, alarm: &'a AlarmSlot) -> Self {
        Self { gate, keys, alarm }
    }

    fn store(&self) -> &'a dyn Store {
        self.gate.store()
    }

    /// The value under `key`, or `None` (`storage.get(key)`).
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        check_key(key)?;
        let Some(stored) = self.store().get(&self.keys.kv(key))? else { return Ok(None) };
        decode(key, &stored).map(Some)
    }

    /// Stores `value` under `key` (`storage.put(key, value)`).
    pub fn put<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<()> {
        check_key(key)?;
        let stored = encode(key, value)?;
        self.gate.may_write()?;
        self.gate.wrote(self.store().put(&self.keys.kv(key), &stored))?;
        Ok(())
    }

    /// Removes `key`; returns whether it was there (`storage.delete(key)`).
    pub fn delete(&self, key: &str) -> Result<bool> {
        check_key(key)?;
        self.gate.may_write()?;
        let existed = self.gate.wrote(self.store().delete(&self.keys.kv(key)))?;
        Ok(existed)
    }

    /// Entries in key order (`storage.list(options)`): by prefix, from `start` (inclusive) or
    /// after `start_after`, to `end` (exclusive), reversed, and at most `limit` of them.
    ///
    /// ```no_run
    /// # fn f(storage: agents_runtime::storage::Storage<'_>) -> agents_runtime::Result<()> {
    /// use agents_runtime::storage::ListOptions;
    /// let latest: Vec<(String, String)> =
    ///     storage.list(ListOptions::prefix("msg:").reverse().limit(10))?;
    /// # Ok(()) }
    /// ```
    pub fn list<T: DeserializeOwned>(&self, options: ListOptions<'_>) -> Result<Vec<(String, T)>> {
        let mut prefix = self.keys.kv_prefix();
        prefix.extend_from_slice(options.prefix.as_bytes());
        let mut entries = Vec::new();
        for entry in self.store().scan_prefix(&prefix) {
            let (full, stored) = entry?;
            let Some(user) = self.keys.user_key(&full) else { continue };
            if options.start.is_some_and(|start| user < start.as_bytes())
                || options.start_after.is_some_and(|after| user <= after.as_bytes())
            {
                continue;
            }
            if options.end.is_some_and(|end| user >= end.as_bytes()) {
                break;
            }
            let key = String::from_utf8(user.to_vec())
                .map_err(|_| Error::msg("storage: a stored key is not UTF-8"))?;
            let value = decode(&key, &stored)?;
            entries.push((key, value));
            if !options.reverse && options.limit.is_some_and(|limit| entries.len() >= limit) {
                break;
            }
        }
        if options.reverse {
            entries.reverse();
            if let Some(limit) = options.limit {
                entries.truncate(limit);
            }
        }
        Ok(entries)
    }

    /// Removes every key of this instance's storage (`storage.deleteAll()`); the agent state is
    /// kept. Returns how many keys were removed.
    pub fn delete_all(&self) -> Result<usize> {
        let mut batch = WriteBatch::new();
        for entry in self.store().scan_prefix(&self.keys.kv_prefix()) {
            batch.delete(entry?.0);
        }
        let removed = batch.len();
        if removed > 0 {
            self.gate.may_write()?;
            self.gate.wrote(self.store().apply(batch))?;
        }
        Ok(removed)
    }

    /// Writes applied together, all or none (`storage.put(entries)`, `storage.delete(keys)`,
    /// or a write-only `transaction`).
    pub fn batch(&self) -> StorageBatch<'a> {
        StorageBatch { gate: self.gate, keys: self.keys, batch: WriteBatch::new() }
    }
}

impl Storage<'_> {
    fn timers(&self) -> Timers<'_> {
        Timers::new(self.gate, self.keys, self.alarm)
    }

    /// When the alarm is set for, if it is (`storage.getAlarm()`). While `on_alarm` runs, the
    /// alarm it runs for is not reported, unless the hook set it again.
    pub fn get_alarm(&self) -> Result<Option<SystemTime>> {
        let Some(alarm) = self.timers().alarm()? else { return Ok(None) };
        if self.alarm.hides(alarm.at) {
            return Ok(None);
        }
        Ok(Some(UNIX_EPOCH + Duration::from_millis(alarm.at)))
    }

    /// Sets the alarm for `time`, replacing the one set before (`storage.setAlarm(time)`):
    /// `on_alarm` runs then, waking the instance if it is hibernated or out of memory, and
    /// after a restart. A time in the past runs it at once. Like any write, it is durable
    /// before the frames sent after it go out.
    pub fn set_alarm(&self, time: SystemTime) -> Result<()> {
        let at = to_ms(time).max(1);
        self.timers().set_alarm(StoredAlarm { at, retries: 0 })?;
        self.alarm.touched();
        Ok(())
    }

    /// Removes the alarm if one is set (`storage.deleteAlarm()`); returns whether one was.
    /// Inside `on_alarm`, it also stops the retries of a run that fails.
    pub fn delete_alarm(&self) -> Result<bool> {
        let deleted = self.timers().delete_alarm()?;
        self.alarm.touched();
        Ok(deleted)
    }
}

/// Puts and deletes committed atomically by [`commit`](Self::commit); see [`Storage::batch`].
#[must_use = "a batch does nothing until committed"]
pub struct StorageBatch<'a> {
    gate: &'a OutputGate,
    keys: &'a InstanceKeys,
    batch: WriteBatch,
}

impl StorageBatch<'_> {
    /// Adds a put; fails at once on a bad key or value.
    pub fn put<T: Serialize + ?Sized>(&mut self, key: &str, value: &T) -> Result<&mut Self> {
        check_key(key)?;
        self.batch.put(self.keys.kv(key), encode(key, value)?);
        Ok(self)
    }

    /// Adds a delete; fails at once on a bad key.
    pub fn delete(&mut self, key: &str) -> Result<&mut Self> {
        check_key(key)?;
        self.batch.delete(self.keys.kv(key));
        Ok(self)
    }

    /// Applies every put and delete, in order, all or none.
    pub fn commit(self) -> Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        self.gate.may_write()?;
        self.gate.wrote(self.gate.store().apply(self.batch))?;
        Ok(())
    }
}

/// Which entries [`Storage::list`] returns.
#[derive(Clone, Copy, Debug, Default)]
pub struct ListOptions<'a> {
    prefix: &'a str,
    start: Option<&'a str>,
    start_after: Option<&'a str>,
    end: Option<&'a str>,
    reverse: bool,
    limit: Option<usize>,
}

impl<'a> ListOptions<'a> {
    /// Every entry.
    pub fn all() -> Self {
        Self::default()
    }

    /// Entries whose key starts with `prefix`.
    pub fn prefix(prefix: &'a str) -> Self {
        Self { prefix, ..Self::default() }
    }

    /// Only keys at or after `start`.
    pub fn start(mut self, start: &'a str) -> Self {
        self.start = Some(start);
        self
    }

    /// Only keys after `key` (`startAfter`).
    pub fn start_after(mut self, key: &'a str) -> Self {
        self.start_after = Some(key);
        self
    }

    /// Only keys before `end`.
    pub fn end(mut self, end: &'a str) -> Self {
        self.end = Some(end);
        self
    }

    /// Descending key order (the limit then keeps the last keys).
    pub fn reverse(mut self) -> Self {
        self.reverse = true;
        self
    }

    /// At most `limit` entries.
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = Some(limit);
        self
    }
}

fn check_key(key: &str) -> Result<()> {
    if key.len() > MAX_KEY_SIZE {
        return Err(Error::msg(format!(
            "storage: a key of {} bytes is over the {MAX_KEY_SIZE}-byte limit",
            key.len()
        )));
    }
    Ok(())
}

fn encode<T: Serialize + ?Sized>(key: &str, value: &T) -> Result<Vec<u8>> {
    let json = serde_json::to_vec(value).map_err(|e| {
        Error::msg(format!("storage: the value for `{key}` is not serializable: {e}"))
    })?;
    if json.len() > MAX_VALUE_SIZE {
        return Err(Error::msg(format!(
            "storage: the value for `{key}` is {} bytes of JSON, over the {MAX_VALUE_SIZE}-byte limit",
            json.len()
        )));
    }
    Ok(encode_value(&json))
}

fn decode<T: DeserializeOwned>(key: &str, stored: &[u8]) -> Result<T> {
    let json = decode_value(stored)?;
    serde_json::from_slice(json).map_err(|e| {
        Error::msg(format!(
            "storage: the value under `{key}` does not decode as {}: {e}",
            std::any::type_name::<T>()
        ))
    })
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::instance::shared::Instance;

    #[tokio::test]
    async fn get_put_delete_and_typed_errors() {
        let instance = Instance::detached();
        let storage = Storage::new(&instance.gate, &instance.keys, &instance.alarm);
        assert_eq!(storage.get::<u32>("n").expect("reads"), None);
        storage.put("n", &7u32).expect("writes");
        assert_eq!(storage.get::<u32>("n").expect("reads"), Some(7));
        let wrong = storage.get::<String>("n").unwrap_err().to_string();
        assert!(wrong.contains("the value under `n` does not decode as"), "{wrong}");
        assert!(storage.delete("n").expect("deletes"));
        assert!(!storage.delete("n").expect("deletes"));
        storage.put("", "empty keys are keys").expect("writes");
        assert_eq!(
            storage.get::<String>("").expect("reads").as_deref(),
            Some("empty keys are keys")
        );
    }

    #[tokio::test]
    async fn keys_and_values_over_the_limits_are_refused() {
        let instance = Instance::detached();
        let storage = Storage::new(&instance.gate, &instance.keys, &instance.alarm);
        let long_key = "k".repeat(MAX_KEY_SIZE + 1);
        let err = storage.put(&long_key, &1).unwrap_err().to_string();
        assert!(err.contains("2049 bytes is over the 2048-byte limit"), "{err}");
        assert!(storage.get::<u8>(&long_key).is_err());
        assert!(storage.delete(&long_key).is_err());
        storage.put(&"k".repeat(MAX_KEY_SIZE), &1).expect("a key at the limit fits");
        let big = "x".repeat(MAX_VALUE_SIZE);
        let err = storage.put("big", &big).unwrap_err().to_string(); // +2 quotes
        assert!(err.contains("over the 131072-byte limit"), "{err}");
        assert_eq!(storage.get::<String>("big").expect("reads"), None, "nothing was written");
        let mut batch = storage.batch();
        assert!(batch.put("big", &big).is_err());
        assert!(batch.put(&long_key, &1).is_err());
    }

    #[tokio::test]
    async fn list_by_prefix_range_order_and_limit() {
        let instance = Instance::detached();
        let storage = Storage::new(&instance.gate, &instance.keys, &instance.alarm);
        let mut batch = storage.batch();
        for key in ["msg:3", "msg:1", "other", "msg:2", "msg:10", "msh"] {
            batch.put(key, key).expect("valid");
        }
        batch.commit().expect("commits");
        let keys = |options| -> Vec<String> {
            storage.list::<Value>(options).expect("lists").into_iter().map(|(k, _)| k).collect()
        };
        assert_eq!(keys(ListOptions::prefix("msg:")), ["msg:1", "msg:10", "msg:2", "msg:3"]);
        assert_eq!(keys(ListOptions::prefix("msg:").reverse().limit(2)), ["msg:3", "msg:2"]);
        assert_eq!(keys(ListOptions::prefix("msg:").limit(1)), ["msg:1"]);
        assert_eq!(keys(ListOptions::prefix("msg:").start_after("msg:10")), ["msg:2", "msg:3"]);
        assert_eq!(keys(ListOptions::all().start("msg:2").end("other")), ["msg:2", "msg:3", "msh"]);
        assert_eq!(keys(ListOptions::all()).len(), 6);
        assert!(keys(ListOptions::prefix("nothing")).is_empty());
        assert_eq!(
            storage.list::<Value>(ListOptions::prefix("msg:1")).expect("lists")[0].1,
            json!("msg:1")
        );
        // A batch is all or nothing about its keys: a bad one fails before anything is applied.
        let mut batch = storage.batch();
        batch.delete("msg:1").expect("valid").delete("msg:2").expect("valid");
        batch.commit().expect("commits");
        assert_eq!(keys(ListOptions::prefix("msg:")), ["msg:10", "msg:3"]);
        assert_eq!(storage.delete_all().expect("deletes"), 4);
        assert!(keys(ListOptions::all()).is_empty());
    }

    #[tokio::test]
    async fn instances_do_not_see_each_other() {
        let a = Instance::detached();
        let b = Instance::detached(); // a separate memory store
        let shared_store_a = Storage::new(&a.gate, &a.keys, &a.alarm);
        shared_store_a.put("k", &1).expect("writes");
        let other_keys = InstanceKeys::new("test", "other");
        let other = Storage::new(&a.gate, &other_keys, &a.alarm);
        assert_eq!(other.get::<u8>("k").expect("reads"), None);
        assert_eq!(other.delete_all().expect("deletes"), 0);
        assert_eq!(shared_store_a.get::<u8>("k").expect("reads"), Some(1));
        assert_eq!(Storage::new(&b.gate, &b.keys, &b.alarm).get::<u8>("k").expect("reads"), None);
    }

    #[tokio::test]
    async fn writes_hold_frames_until_durable() {
        let instance = Instance::detached();
        let before = instance.gate.pending();
        assert!(instance.gate.is_settled(before));
        Storage::new(&instance.gate, &instance.keys, &instance.alarm).put("k", &1).expect("writes");
        let seq = instance.gate.pending();
        assert!(seq > before);
        instance.gate.settled(seq).await;
        assert!(instance.gate.is_settled(seq));
    }
}
