//! [`SledStore`]: the embedded default, on [sled](https://docs.rs/sled).

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use super::sled_journal::{self, JOURNAL};
use super::{ScanIter, Store, StoreError, WriteBatch};

/// The embedded store: a sled database in a directory.
///
/// sled keeps recent writes in memory and in its log buffer; they become durable when
/// [`flush`](Store::flush) returns (the runtime's output gate calls it, grouped across
/// instances) or when sled's own background flush runs (every 500 ms). Only one process can
/// open a directory at a time.
///
/// sled fails every call after its first failed write to disk (a full disk), until it is
/// opened again: [`recover`](Store::recover) does that, dropping what was not durable. While
/// the directory cannot be opened again, every call fails with the reason.
#[derive(Clone, Debug)]
pub struct SledStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    /// The open database, or why there is none (its recovery failed, or is under way).
    db: RwLock<Result<Opened, String>>,
    /// The id of the next batch in the journal (see `sled_journal`).
    next_batch: AtomicU64,
}

/// An open database and its journal of batches.
#[derive(Debug)]
struct Opened {
    db: sled::Db,
    journal: sled::Tree,
}

impl std::ops::Deref for Opened {
    type Target = sled::Db;

    fn deref(&self) -> &sled::Db {
        &self.db
    }
}

impl SledStore {
    /// Opens (or creates) the database in `dir`.
    ///
    /// While another store holds the directory's lock, this waits up to a second for it
    /// before failing: a store this process just dropped lets go of the lock only when
    /// sled's background threads have finished their last write.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, StoreError> {
        let dir = dir.as_ref();
        let db = open_db(dir)?;
        let next_batch = AtomicU64::new(0);
        Ok(Self {
            inner: Arc::new(Inner { dir: dir.to_owned(), db: RwLock::new(Ok(db)), next_batch }),
        })
    }

    /// How many bytes the database takes on disk.
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        self.with(|db| db.size_on_disk(), "size_on_disk")
    }

    /// Runs `op` on the open database, or fails with why there is none.
    fn with<T>(
        &self,
        op: impl FnOnce(&Opened) -> sled::Result<T>,
        doing: &'static str,
    ) -> Result<T, StoreError> {
        let db = self.inner.db.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        match &*db {
            Ok(db) => op(db).map_err(|e| StoreError::backend(doing, e)),
            Err(why) => Err(StoreError::msg(format!("{doing}: the store is unavailable: {why}"))),
        }
    }
}

/// Opens the database in `dir` (waiting a while for a lock another store holds) and applies
/// the batches a crash interrupted.
fn open_db(dir: &Path) -> Result<Opened, StoreError> {
    let db = open_sled(dir)?;
    let journal =
        db.open_tree(JOURNAL).map_err(|e| StoreError::backend("open the journal of batches", e))?;
    let replayed = sled_journal::replay(&db, &journal)?;
    if replayed > 0 {
        tracing::info!(batches = replayed, "store: applied the batches a crash interrupted");
    }
    Ok(Opened { db, journal })
}

/// Opens the database in `dir`, waiting a while for a lock another store holds.
fn open_sled(dir: &Path) -> Result<sled::Db, StoreError> {
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        // A damaged file can make sled panic as well as fail: either is an error here.
        let opened = std::panic::catch_unwind(|| sled::Config::new().path(dir).open());
        match opened {
            Ok(Ok(db)) => return Ok(db),
            Ok(Err(e)) if is_locked(&e) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok(Err(e @ (sled::Error::Corruption { .. } | sled::Error::Unsupported(_)))) => {
                return Err(damaged(dir, &e.to_string()));
            }
            Ok(Err(e)) => {
                let what = format!("cannot open sled at {}", dir.display());
                return Err(StoreError::backend(what, e));
            }
            Err(_) => return Err(damaged(dir, "sled panicked while reading it")),
        }
    }
}

/// The error for a store sled cannot read: which file is damaged, where it can tell, and
/// what to do about it.
fn damaged(dir: &Path, why: &str) -> StoreError {
    let what = match damaged_file(dir) {
        Some(file) => format!("{} is damaged", file.display()),
        None => format!("a file in {} is damaged", dir.display()),
    };
    StoreError::msg(format!(
        "cannot open the store at {}: {what} ({why}), so its data may be lost. Restore the \
         directory from a backup (see \"The data directory\" in the book's production \
         chapter), or move it aside to start with an empty store",
        dir.display()
    ))
}

/// The first of sled's checksummed files in `dir` whose checksum fails: the configuration
/// (`conf`: its text, then its CRC-32), or the newest snapshot (`snap.*`: its bytes, their
/// length, then the CRC-32). `None` if both check out: the damage is in the log.
fn damaged_file(dir: &Path) -> Option<PathBuf> {
    let intact = |bytes: &[u8], trailer: usize| {
        let Some(body) = bytes.len().checked_sub(trailer) else { return false };
        let crc = bytes[bytes.len() - 4..].try_into().map(u32::from_le_bytes);
        bytes.len() > trailer && crc.is_ok_and(|crc| crc32fast::hash(&bytes[..body]) == crc)
    };
    let conf = dir.join("conf");
    if std::fs::read(&conf).is_ok_and(|bytes| !intact(&bytes, 4)) {
        return Some(conf);
    }
    let newest = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| {
            let name = path.file_name().and_then(|name| name.to_str()).unwrap_or_default();
            name.starts_with("snap.") && !name.ends_with(".generating")
        })
        .max()?;
    std::fs::read(&newest).is_ok_and(|bytes| !intact(&bytes, 12)).then_some(newest)
}

/// `error`'s text followed by its causes' (the OS reason).
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(next) = cause {
        text = format!("{text}: {next}");
        cause = next.source();
    }
    text
}

/// How long [`SledStore::open`] waits for a lock held by another store.
const LOCK_WAIT: Duration = Duration::from_secs(1);

/// Whether sled refused to open because another store holds the directory's lock (sled 0.34
/// says so only in the message of an `Other` I/O error).
fn is_locked(error: &sled::Error) -> bool {
    matches!(error, sled::Error::Io(io) if io.to_string().starts_with("could not acquire lock"))
}

impl Store for SledStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let value = self.with(|db| db.get(key), "get")?;
        Ok(value.map(|v| v.to_vec()))
    }

    fn put(&self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.with(|db| db.insert(key, value), "put")?;
        Ok(())
    }

    fn delete(&self, key: &[u8]) -> Result<bool, StoreError> {
        let old = self.with(|db| db.remove(key), "delete")?;
        Ok(old.is_some())
    }

    fn scan_prefix<'a>(&'a self, prefix: &[u8]) -> ScanIter<'a> {
        match self.with(|db| Ok(db.scan_prefix(prefix)), "scan") {
            Ok(entries) => Box::new(entries.map(|entry| {
                entry
                    .map(|(key, value)| (key.to_vec(), value.to_vec()))
                    .map_err(|e| StoreError::backend("scan", e))
            })),
            Err(e) => Box::new(std::iter::once(Err(e))),
        }
    }

    fn scan_range<'a>(&'a self, start: &[u8], end: &[u8]) -> ScanIter<'a> {
        if start >= end {
            return Box::new(std::iter::empty());
        }
        let (start, end) = (start.to_vec(), end.to_vec());
        match self.with(|db| Ok(db.range(start..end)), "scan") {
            Ok(entries) => Box::new(entries.map(|entry| {
                entry
                    .map(|(key, value)| (key.to_vec(), value.to_vec()))
                    .map_err(|e| StoreError::backend("scan", e))
            })),
            Err(e) => Box::new(std::iter::once(Err(e))),
        }
    }

    fn apply(&self, batch: WriteBatch) -> Result<(), StoreError> {
        let next = &self.inner.next_batch;
        self.with(|db| sled_journal::apply(db, &db.journal, next, batch), "apply a batch")
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.with(|db| db.flush(), "flush")?;
        Ok(())
    }

    /// Closes the database, which drops what it had not made durable, and opens it again.
    fn recover(&self) -> Result<(), StoreError> {
        let slot = &self.inner.db;
        let old = {
            let mut db = slot.write().unwrap_or_else(std::sync::PoisonError::into_inner);
            std::mem::replace(&mut *db, Err("it is being reopened after a failure".into()))
        };
        // Dropped outside the lock: sled's last flush attempt runs here.
        drop(old);
        let reopened = open_db(&self.inner.dir);
        let mut db = slot.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        match reopened {
            Ok(reopened) => {
                *db = Ok(reopened);
                Ok(())
            }
            Err(e) => {
                *db = Err(with_causes(&e));
                Err(e)
            }
        }
    }
}
