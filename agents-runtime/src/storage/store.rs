//! The [`Store`] trait every backend implements, its batches and errors, and the format
//! version byte on every stored value.

use std::fmt;

/// When an agent's writes are acknowledged: `#[agent(durability = "...")]`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// `"confirmed"`, the default: a frame the agent sends after a write reaches the client
    /// only once that write is on disk (the output gate). A client never sees an answer the
    /// server could forget in a crash.
    #[default]
    Confirmed,
    /// `"relaxed"`: frames go out at once, and writes reach the disk with the store's own
    /// background flush (sled: within 500 ms). A crash can lose writes a client already saw
    /// acknowledged; Cloudflare's `allowUnconfirmed` makes the same trade for one write.
    Relaxed,
}

/// The format version written as the first byte of every stored value.
pub const FORMAT_VERSION: u8 = 1;

/// A key-value store: ordered byte keys, byte values, atomic batches and an explicit flush.
///
/// Calls are synchronous, like the SQLite-backed Durable Objects storage: an embedded store
/// answers from memory and only [`flush`](Store::flush) waits for the disk. The runtime calls
/// `flush` from a blocking thread, never from an async task.
///
/// A backend must pass [`conformance::check`](super::conformance::check) (and [`conformance::check_reopen`](super::conformance::check_reopen) if it
/// persists across restarts).
pub trait Store: Send + Sync + 'static {
    /// The value under `key`, if any.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;

    /// Sets `key` to `value`. Visible to reads at once; durable after the next
    /// [`flush`](Store::flush) returns.
    fn put(&self, key: &[u8], value: &[u8]) -> Result<(), StoreError>;

    /// Removes `key`; returns whether it was there.
    fn delete(&self, key: &[u8]) -> Result<bool, StoreError>;

    /// Every entry whose key starts with `prefix`, in ascending key order (bytewise).
    fn scan_prefix<'a>(&'a self, prefix: &[u8]) -> ScanIter<'a>;

    /// Every entry whose key is at or after `start` and before `end`, in ascending key order
    /// (bytewise). The runtime reads its index of alarms by due time this way, from the
    /// earliest entry on, and stops early.
    ///
    /// The default filters a scan of the keys the two bounds share as a prefix; a backend with
    /// ordered keys should seek to `start` instead.
    fn scan_range<'a>(&'a self, start: &[u8], end: &[u8]) -> ScanIter<'a> {
        let shared = start.iter().zip(end).take_while(|(a, b)| a == b).count();
        let (start, end) = (start.to_vec(), end.to_vec());
        Box::new(self.scan_prefix(&start[..shared]).filter_map(move |entry| match entry {
            Ok((key, _)) if key < start || key >= end => None,
            other => Some(other),
        }))
    }

    /// Applies every operation of `batch`, all or none, in order.
    fn apply(&self, batch: WriteBatch) -> Result<(), StoreError>;

    /// Makes every write that returned before this call durable (an fsync), then returns.
    fn flush(&self) -> Result<(), StoreError>;

    /// Called when flushes have failed for the storage timeout (a full disk): the runtime
    /// gives up on the writes that are not durable, and this returns the store to a state it
    /// can work from. After it returns, `Ok` or not, those writes may be gone: the instances
    /// that made them restart from what reads back. `Err` means the store cannot work yet
    /// (every call may fail); the runtime calls it again until it returns `Ok`.
    ///
    /// The default does nothing: flushes are simply tried again. [`SledStore`](super::SledStore),
    /// whose first failed write fails every later call, reopens its directory.
    fn recover(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Whether the last failed flush can never succeed however often it is tried, so the
    /// writes it holds are given up at once rather than after the storage timeout: a cluster
    /// store whose node no longer owns an agent it holds writes of. The default: never.
    fn failed_for_good(&self) -> bool {
        false
    }
}

/// A shared store is a store: several servers (or a server and the program around it) can use
/// one, as `ServerBuilder::store(Arc::clone(&store))`.
impl<S: Store + ?Sized> Store for std::sync::Arc<S> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        (**self).get(key)
    }

    fn put(&self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        (**self).put(key, value)
    }

    fn delete(&self, key: &[u8]) -> Result<bool, StoreError> {
        (**self).delete(key)
    }

    fn scan_prefix<'a>(&'a self, prefix: &[u8]) -> ScanIter<'a> {
        (**self).scan_prefix(prefix)
    }

    fn scan_range<'a>(&'a self, start: &[u8], end: &[u8]) -> ScanIter<'a> {
        (**self).scan_range(start, end)
    }

    fn apply(&self, batch: WriteBatch) -> Result<(), StoreError> {
        (**self).apply(batch)
    }

    fn flush(&self) -> Result<(), StoreError> {
        (**self).flush()
    }

    fn recover(&self) -> Result<(), StoreError> {
        (**self).recover()
    }

    fn failed_for_good(&self) -> bool {
        (**self).failed_for_good()
    }
}

/// What [`Store::scan_prefix`] returns: `(key, value)` pairs in key order.
pub type ScanIter<'a> = Box<dyn Iterator<Item = Result<(Vec<u8>, Vec<u8>), StoreError>> + 'a>;

/// Writes applied together by [`Store::apply`]: all of them or none.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteBatch {
    ops: Vec<BatchOp>,
}

/// One write of a [`WriteBatch`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BatchOp {
    /// Set a key to a value.
    Put(Vec<u8>, Vec<u8>),
    /// Remove a key.
    Delete(Vec<u8>),
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a put.
    pub fn put(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> &mut Self {
        self.ops.push(BatchOp::Put(key.into(), value.into()));
        self
    }

    /// Adds a delete.
    pub fn delete(&mut self, key: impl Into<Vec<u8>>) -> &mut Self {
        self.ops.push(BatchOp::Delete(key.into()));
        self
    }

    /// How many operations the batch holds.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether the batch holds no operation.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The operations, in the order they were added.
    pub fn into_ops(self) -> Vec<BatchOp> {
        self.ops
    }
}

/// A storage failure: the backend's error, or a value this build cannot read.
#[derive(Debug)]
pub struct StoreError {
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl StoreError {
    /// An error with a message only.
    pub fn msg(message: impl fmt::Display) -> Self {
        Self { message: message.to_string(), source: None }
    }

    /// An error from a backend, with what was being done.
    pub fn backend(
        doing: impl fmt::Display,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self { message: doing.to_string(), source: Some(Box::new(source)) }
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "storage: {}", self.message)
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// `value` with the format version in front, as the runtime stores it.
pub(crate) fn encode_value(json: &[u8]) -> Vec<u8> {
    let mut stored = Vec::with_capacity(json.len() + 1);
    stored.push(FORMAT_VERSION);
    stored.extend_from_slice(json);
    stored
}

/// The payload of a stored value, after checking its format version.
pub(crate) fn decode_value(stored: &[u8]) -> Result<&[u8], StoreError> {
    match stored.split_first() {
        Some((&FORMAT_VERSION, payload)) => Ok(payload),
        Some((version, _)) => Err(StoreError::msg(format!(
            "a stored value has format version {version}; this build reads version {FORMAT_VERSION}"
        ))),
        None => Err(StoreError::msg("a stored value is empty (no format version)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_carry_their_format_version() {
        let stored = encode_value(b"{\"a\":1}");
        assert_eq!(stored[0], FORMAT_VERSION);
        assert_eq!(decode_value(&stored).expect("v1"), b"{\"a\":1}");
        let future = [FORMAT_VERSION + 1, b'1'];
        let err = decode_value(&future).unwrap_err().to_string();
        assert!(err.contains("format version 2"), "{err}");
        assert!(decode_value(&[]).is_err());
    }
}
