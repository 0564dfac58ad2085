//! [`SledStore`]: the embedded default, on [sled](https://docs.rs/sled).

use std::path::Path;

use super::{BatchOp, ScanIter, Store, StoreError, WriteBatch};

/// The embedded store: a sled database in a directory.
///
/// sled keeps recent writes in memory and in its log buffer; they become durable when
/// [`flush`](Store::flush) returns (the runtime's output gate calls it, grouped across
/// instances) or when sled's own background flush runs (every 500 ms). Only one process can
/// open a directory at a time.
#[derive(Clone, Debug)]
pub struct SledStore {
    db: sled::Db,
}

impl SledStore {
    /// Opens (or creates) the database in `dir`.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, StoreError> {
        let dir = dir.as_ref();
        let db = sled::Config::new().path(dir).open().map_err(|e| {
            StoreError::backend(format!("cannot open sled at {}", dir.display()), e)
        })?;
        Ok(Self { db })
    }

    /// How many bytes the database takes on disk.
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        self.db.size_on_disk().map_err(|e| StoreError::backend("size_on_disk", e))
    }
}

impl Store for SledStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let value = self.db.get(key).map_err(|e| StoreError::backend("get", e))?;
        Ok(value.map(|v| v.to_vec()))
    }

    fn put(&self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.db.insert(key, value).map_err(|e| StoreError::backend("put", e))?;
        Ok(())
    }

    fn delete(&self, key: &[u8]) -> Result<bool, StoreError> {
        let old = self.db.remove(key).map_err(|e| StoreError::backend("delete", e))?;
        Ok(old.is_some())
    }

    fn scan_prefix<'a>(&'a self, prefix: &[u8]) -> ScanIter<'a> {
        Box::new(self.db.scan_prefix(prefix).map(|entry| {
            entry
                .map(|(key, value)| (key.to_vec(), value.to_vec()))
                .map_err(|e| StoreError::backend("scan", e))
        }))
    }

    fn apply(&self, batch: WriteBatch) -> Result<(), StoreError> {
        let mut sled_batch = sled::Batch::default();
        for op in batch.into_ops() {
            match op {
                BatchOp::Put(key, value) => sled_batch.insert(key, value),
                BatchOp::Delete(key) => sled_batch.remove(key),
            }
        }
        self.db.apply_batch(sled_batch).map_err(|e| StoreError::backend("apply a batch", e))
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map_err(|e| StoreError::backend("flush", e))?;
        Ok(())
    }
}
