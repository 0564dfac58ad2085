//! [`Databases`]: every instance's SQL database, where its file is, and the bound on how many
//! are open at once (each holds file descriptors, and a process has a limit of them).
//!
//! An instance's database opens at its first statement after it woke and closes when it
//! hibernates or leaves memory. When the bound is reached, the least recently used open
//! database whose turn is not under way is closed first (its instance opens it again at its
//! next statement). Without a data dir, databases live in memory for the server's life.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use super::SqlError;
use super::database::Database;
use crate::limits::SqlLimits;
use crate::storage::{InstanceKeys, Store, decode_value};
use crate::sync::lock;

/// The longest a database's path under the data dir may be, in bytes of its escaped name.
const MAX_ESCAPED_NAME: usize = 3000;
/// The longest directory or file name the escaped name is cut into.
const PART: usize = 200;

/// An instance: its agent's route name and its name.
type InstanceName = (&'static str, Arc<str>);

/// The SQL databases of one server.
pub(crate) struct Databases {
    /// `{data dir}/sql`, or `None`: in memory.
    root: Option<PathBuf>,
    limits: SqlLimits,
    /// The databases on disk that are (or were) open, to pick one to close.
    open: Mutex<Vec<Weak<Slot>>>,
    /// How many databases on disk are open (or opening).
    open_count: Arc<AtomicUsize>,
    /// Ticks at each use, for the least recently used.
    clock: AtomicU64,
    /// In memory: every instance's database, kept for the server's life.
    memory: Mutex<HashMap<InstanceName, Arc<Slot>>>,
    /// Databases closed before the names of their files were synced in their directory.
    unsynced: Arc<Mutex<HashSet<PathBuf>>>,
    /// Cluster mode: each database lives in memory while its instance is awake, and its image
    /// in this store (so it moves between nodes with its agent).
    images: Option<Arc<dyn Store>>,
}

/// One instance's database, open or not.
pub(crate) struct Slot {
    db: Mutex<Option<Database>>,
    path: Option<PathBuf>,
    used: AtomicU64,
    open_count: Arc<AtomicUsize>,
    unsynced: Arc<Mutex<HashSet<PathBuf>>>,
    /// Cluster mode: where the database's image is kept.
    pub(crate) image: Option<Image>,
}

/// Where a database's image is kept: a store and a key.
pub(crate) struct Image {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) key: Vec<u8>,
}

impl Databases {
    /// Databases under `root` (`None`: in memory) held to `limits`.
    pub(crate) fn new(root: Option<PathBuf>, limits: SqlLimits) -> Self {
        Self {
            root,
            limits,
            open: Mutex::default(),
            open_count: Arc::default(),
            clock: AtomicU64::new(0),
            memory: Mutex::default(),
            unsynced: Arc::default(),
            images: None,
        }
    }

    /// Databases in memory whose images are kept in `store` (cluster mode): a database is read
    /// from its image when its instance first uses it, and the image is written at each commit
    /// (behind the output gate, like any write).
    pub(crate) fn in_store(limits: SqlLimits, store: Arc<dyn Store>) -> Self {
        Self { images: Some(store), ..Self::new(None, limits) }
    }

    /// How many databases on disk are open now.
    pub(crate) fn open_count(&self) -> usize {
        self.open_count.load(Ordering::Acquire)
    }

    /// The database of instance `name` of `agent` (not opened yet).
    pub(crate) fn slot(&self, agent: &'static str, name: &Arc<str>) -> Result<Arc<Slot>, SqlError> {
        if let Some(store) = &self.images {
            let key = InstanceKeys::new(agent, name).sql_image();
            let mut slot = self.new_slot(None);
            slot.image = Some(Image { store: store.clone(), key });
            return Ok(Arc::new(slot));
        }
        let Some(root) = &self.root else {
            let mut memory = lock(&self.memory);
            let slot = memory
                .entry((agent, name.clone()))
                .or_insert_with(|| Arc::new(self.new_slot(None)));
            return Ok(slot.clone());
        };
        let path = database_path(root, agent, name)?;
        Ok(Arc::new(self.new_slot(Some(path))))
    }

    fn new_slot(&self, path: Option<PathBuf>) -> Slot {
        Slot {
            db: Mutex::new(None),
            path,
            used: AtomicU64::new(0),
            open_count: self.open_count.clone(),
            unsynced: self.unsynced.clone(),
            image: None,
        }
    }

    /// Runs `f` on the database of `slot`, opening it first if needed.
    pub(crate) fn with<T>(
        &self,
        slot: &Arc<Slot>,
        f: impl FnOnce(&mut Database) -> Result<T, SqlError>,
    ) -> Result<T, SqlError> {
        slot.used.store(self.clock.fetch_add(1, Ordering::Relaxed), Ordering::Relaxed);
        let mut db = lock(&slot.db);
        if db.is_none() {
            let counted = slot.path.is_some();
            if counted {
                self.admit(slot)?;
            }
            let unsynced = slot.path.as_ref().is_some_and(|path| lock(&self.unsynced).remove(path));
            let opened = match &slot.image {
                Some(image) => restore(image, self.limits),
                None => Database::open(slot.path.as_deref(), self.limits, unsynced),
            };
            match opened {
                Ok(opened) => *db = Some(opened),
                Err(e) => {
                    if counted {
                        self.open_count.fetch_sub(1, Ordering::AcqRel);
                    }
                    if let (true, Some(path)) = (unsynced, &slot.path) {
                        lock(&self.unsynced).insert(path.clone());
                    }
                    return Err(e);
                }
            }
        }
        f(db.as_mut().expect("opened"))
    }

    /// Runs `f` on the database of `slot` if it is open (`None` if not: a closed database has
    /// no transaction under way).
    pub(crate) fn with_open<T>(
        &self,
        slot: &Slot,
        f: impl FnOnce(&mut Database) -> T,
    ) -> Option<T> {
        lock(&slot.db).as_mut().map(f)
    }

    /// Makes room for `slot`'s database and counts it open: closes the least recently used
    /// ones idle between turns while the bound is reached, then lists `slot`.
    fn admit(&self, slot: &Arc<Slot>) -> Result<(), SqlError> {
        let mut open = lock(&self.open);
        // Every wake lists its database once: the closed ones go, now and then.
        if self.open_count() >= self.limits.max_open_databases
            || open.len() > 2 * self.open_count() + 64
        {
            open.retain(|listed| listed.strong_count() > 0);
        }
        while self.open_count() >= self.limits.max_open_databases {
            if !self.close_least_recently_used(&open, slot) {
                return Err(SqlError::new(format!(
                    "{} SQL databases are open, each in a turn under way: the bound \
                     (max_open_databases) is reached; try again",
                    self.open_count()
                )));
            }
        }
        self.open_count.fetch_add(1, Ordering::AcqRel);
        if !open.iter().any(|listed| listed.as_ptr() == Arc::as_ptr(slot)) {
            open.push(Arc::downgrade(slot));
        }
        Ok(())
    }

    /// Closes the least recently used open database of `open` other than `slot`'s that is
    /// between turns; returns whether there was one. Its instance opens it again at its next
    /// statement.
    fn close_least_recently_used(&self, open: &[Weak<Slot>], slot: &Arc<Slot>) -> bool {
        let idle = |other: &Slot| {
            try_lock(&other.db).is_some_and(|db| db.as_ref().is_some_and(|db| !db.in_transaction()))
        };
        let victim = open
            .iter()
            .filter_map(Weak::upgrade)
            .filter(|other| !Arc::ptr_eq(other, slot) && idle(other))
            .min_by_key(|other| other.used.load(Ordering::Relaxed));
        let Some(victim) = victim else { return false };
        let Some(mut db) = try_lock(&victim.db) else { return false };
        if db.as_ref().is_some_and(|db| !db.in_transaction()) {
            victim.closed(db.take());
            self.open_count.fetch_sub(1, Ordering::AcqRel);
            return true;
        }
        false
    }
}

impl Slot {
    /// Its database `db` was closed: a database whose files' names were never synced is
    /// noted, for its next open to sync them.
    fn closed(&self, db: Option<Database>) {
        if let (Some(db), Some(path)) = (db, &self.path)
            && db.unsynced()
        {
            lock(&self.unsynced).insert(path.clone());
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let db = self.db.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        // Databases in memory hold no file descriptor and are not counted.
        if db.is_some() && self.path.is_some() {
            self.open_count.fetch_sub(1, Ordering::AcqRel);
        }
        self.closed(db);
    }
}

/// `mutex`, if no one holds it (a poisoned one included).
fn try_lock<T>(mutex: &Mutex<T>) -> Option<std::sync::MutexGuard<'_, T>> {
    match mutex.try_lock() {
        Ok(guard) => Some(guard),
        Err(std::sync::TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
        Err(std::sync::TryLockError::WouldBlock) => None,
    }
}

/// Where instance `name` of `agent` keeps its database: `root/agent/name.sqlite3`, each name
/// escaped (bytes other than ASCII letters, digits, `-` and `_` as `%XX`) and cut into
/// directories of 200 bytes, so any name has a file of its own.
fn database_path(root: &std::path::Path, agent: &str, name: &str) -> Result<PathBuf, SqlError> {
    let escaped = escape(name);
    if escaped.len() > MAX_ESCAPED_NAME {
        return Err(SqlError::new(format!(
            "the instance name is too long for an SQL database file ({} bytes escaped; at most {MAX_ESCAPED_NAME})",
            escaped.len()
        )));
    }
    let mut path = root.join(escape(agent));
    let parts: Vec<&[u8]> = escaped.as_bytes().chunks(PART).collect();
    let (last, dirs) = parts.split_last().map_or((&b""[..], &[][..]), |(l, d)| (*l, d));
    for dir in dirs {
        path.push(std::str::from_utf8(dir).expect("ASCII"));
    }
    path.push(format!("{}.sqlite3", std::str::from_utf8(last).expect("ASCII")));
    Ok(path)
}

fn escape(name: &str) -> String {
    use std::fmt::Write;
    let mut escaped = String::with_capacity(name.len());
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_' {
            escaped.push(byte as char);
        } else {
            let _ = write!(escaped, "%{byte:02X}");
        }
    }
    escaped
}

/// A database in memory, read from its image if it has one (cluster mode).
fn restore(image: &Image, limits: SqlLimits) -> Result<Database, SqlError> {
    let reading =
        |e: crate::storage::StoreError| SqlError::new(format!("cannot read the database: {e}"));
    match image.store.get(&image.key).map_err(reading)? {
        Some(stored) => Database::open_image(limits, decode_value(&stored).map_err(reading)?),
        None => Database::open(None, limits, false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_has_a_file_of_its_own() {
        let root = std::path::Path::new("/data/sql");
        let path = |name: &str| database_path(root, "catalog", name).expect("a path");
        assert_eq!(path("shop-1"), root.join("catalog/shop-1.sqlite3"));
        assert_eq!(path("../x"), root.join("catalog/%2E%2E%2Fx.sqlite3"));
        assert_eq!(path(""), root.join("catalog/.sqlite3"));
        let long = "é".repeat(200);
        let long_path = path(&long);
        assert!(long_path.components().all(|c| c.as_os_str().len() <= PART + 8), "{long_path:?}");
        assert_ne!(path(&long), path(&"é".repeat(201)));
        assert!(database_path(root, "catalog", &"x".repeat(MAX_ESCAPED_NAME + 1)).is_err());
    }
}

#[cfg(test)]
mod bound_tests {
    use super::*;

    #[test]
    fn at_the_bound_the_least_recently_used_idle_database_closes() {
        let dir = std::env::temp_dir().join(format!("databases-bound-{}", std::process::id()));
        let limits = SqlLimits { max_open_databases: 2, ..SqlLimits::default() };
        let databases = Databases::new(Some(dir.clone()), limits);
        let slots: Vec<_> = (0..3)
            .map(|n| databases.slot("lab", &Arc::from(format!("i{n}"))).expect("a slot"))
            .collect();
        for slot in &slots {
            databases
                .with(slot, |db| {
                    db.exec("CREATE TABLE IF NOT EXISTS t (x)", &[], || Ok(()))?;
                    db.commit()
                })
                .expect("runs");
            assert!(databases.open_count() <= 2, "{}", databases.open_count());
        }
        assert!(databases.with_open(&slots[0], |_| ()).is_none(), "the first was closed");
        drop(slots);
        assert_eq!(databases.open_count(), 0);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
