//! [`MemoryStore`]: a store in a `BTreeMap`, for servers without a data directory.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::{BatchOp, ScanIter, Store, StoreError, WriteBatch};
use crate::sync::lock;

/// A store that lives in memory only: everything is lost when the process ends, and
/// [`flush`](Store::flush) has nothing to do.
///
/// The server uses it when built with [`ServerBuilder::in_memory`](crate::ServerBuilder::in_memory) (and says so at startup).
#[derive(Debug, Default)]
pub struct MemoryStore {
    entries: Mutex<BTreeMap<Vec<u8>, Vec<u8>>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Store for MemoryStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(lock(&self.entries).get(key).cloned())
    }

    fn put(&self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        lock(&self.entries).insert(key.to_vec(), value.to_vec());
        Ok(())
    }

    fn delete(&self, key: &[u8]) -> Result<bool, StoreError> {
        Ok(lock(&self.entries).remove(key).is_some())
    }

    fn scan_prefix<'a>(&'a self, prefix: &[u8]) -> ScanIter<'a> {
        // A snapshot: the lock is not held while the caller iterates.
        let entries: Vec<_> = lock(&self.entries)
            .range(prefix.to_vec()..)
            .take_while(|(key, _)| key.starts_with(prefix))
            .map(|(key, value)| Ok((key.clone(), value.clone())))
            .collect();
        Box::new(entries.into_iter())
    }

    fn scan_range<'a>(&'a self, start: &[u8], end: &[u8]) -> ScanIter<'a> {
        if start >= end {
            return Box::new(std::iter::empty());
        }
        let entries: Vec<_> = lock(&self.entries)
            .range(start.to_vec()..end.to_vec())
            .map(|(key, value)| Ok((key.clone(), value.clone())))
            .collect();
        Box::new(entries.into_iter())
    }

    fn apply(&self, batch: WriteBatch) -> Result<(), StoreError> {
        let mut entries = lock(&self.entries);
        for op in batch.into_ops() {
            match op {
                BatchOp::Put(key, value) => {
                    entries.insert(key, value);
                }
                BatchOp::Delete(key) => {
                    entries.remove(&key);
                }
            }
        }
        Ok(())
    }

    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
