//! [`Database`]: one instance's SQLite connection, its limits, and the transaction of the
//! current turn.
//!
//! On disk, a database is in WAL mode with an exclusive lock (no shared-memory file: one
//! connection per database), `synchronous = NORMAL` (a commit is a `write` to the log, which
//! a killed process does not lose; the output gate's flusher `fsync`s the log), and no
//! checkpoint on close (closing is only closing files, cheap enough for a hibernating turn).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rusqlite::hooks::AuthContext;
use rusqlite::limits::Limit;
use rusqlite::{Connection, OpenFlags};

use super::error::{explain, read_pragma};
use super::guard::{Guard, STEPS_PER_LOOK};
use super::{SqlCursor, SqlError, SqlValue};
use crate::limits::SqlLimits;
use crate::storage::file_syncs::SyncFile;

/// The most bytes one statement's rows may hold in memory.
pub(crate) const MAX_RESULT_SIZE: usize = 64 << 20;

/// The name of the savepoint each hook's statements start with, after the turn's first hook.
const HOOK_SAVEPOINT: &str = "agents_hook";

/// One instance's open database.
pub(crate) struct Database {
    conn: Connection,
    /// Where the log is, for the flusher (on disk only).
    file: Option<LogFile>,
    guard: Arc<Guard>,
    limits: SqlLimits,
    /// A transaction is open (the turn ran a statement).
    open: bool,
    /// Where the current hook's statements started.
    scope: Scope,
    /// Why the turn's transaction cannot commit: SQLite rolled it back by itself, or a
    /// rollback failed. Its frames must not go out; the instance restarts.
    broken: Option<String>,
    /// Statements that ran in the open transaction.
    ran: usize,
    /// Opened by this process and not yet asked for statements (see [`take_fresh`](Self::take_fresh)).
    fresh: bool,
}

/// The write-ahead log of a database on disk.
struct LogFile {
    path: PathBuf,
    /// The directory, while the log's or the database's name there is not known durable.
    new_in: Option<PathBuf>,
    /// The runtime's own handle on the log, opened at the first commit that wrote.
    synced: Option<Arc<SyncFile>>,
}

/// Where the statements of the hook under way started, for a rollback if it fails.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Scope {
    /// It ran none yet.
    #[default]
    Untouched,
    /// After the turn's earlier statements: at savepoint [`HOOK_SAVEPOINT`].
    Savepoint,
    /// It began the turn's transaction.
    Begun,
}

impl Database {
    /// Opens (creating it if needed) the database at `path`, or one in memory. `unsynced`: its
    /// files' names may not be durable in their directory yet (created by an earlier open
    /// whose database was never written).
    pub(crate) fn open(
        path: Option<&Path>,
        limits: SqlLimits,
        unsynced: bool,
    ) -> Result<Self, SqlError> {
        let opening = |e: rusqlite::Error| SqlError::new(format!("cannot open the database: {e}"));
        let (conn, file) = match path {
            Some(path) => {
                let dir = path.parent().unwrap_or(Path::new("."));
                create_dirs(dir)
                    .map_err(|e| SqlError::new(format!("cannot create {}: {e}", dir.display())))?;
                let mut log = path.as_os_str().to_owned();
                log.push("-wal");
                let log = PathBuf::from(log);
                let new = unsynced || !path.exists() || !log.exists();
                let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
                    | OpenFlags::SQLITE_OPEN_CREATE
                    | OpenFlags::SQLITE_OPEN_NO_MUTEX;
                let conn = Connection::open_with_flags(path, flags).map_err(opening)?;
                let new_in = new.then(|| dir.to_path_buf());
                (conn, Some(LogFile { path: log, new_in, synced: None }))
            }
            None => (Connection::open_in_memory().map_err(opening)?, None),
        };
        let mut db = Self::with_connection(conn, file, limits);
        db.configure().map_err(opening)?;
        Ok(db)
    }

    fn with_connection(conn: Connection, file: Option<LogFile>, limits: SqlLimits) -> Self {
        Self {
            conn,
            file,
            guard: Arc::default(),
            limits,
            open: false,
            scope: Scope::Untouched,
            broken: None,
            ran: 0,
            fresh: true,
        }
    }

    fn configure(&mut self) -> rusqlite::Result<()> {
        let conn = &mut self.conn;
        let limits = &self.limits;
        // Only one instance of a name is live, but the one that just left memory may still be
        // closing its connection when the next one opens the file: wait for its lock.
        conn.busy_timeout(std::time::Duration::from_secs(1))?;
        let clamp = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
        conn.set_limit(Limit::SQLITE_LIMIT_LENGTH, clamp(limits.max_row_size))?;
        conn.set_limit(Limit::SQLITE_LIMIT_SQL_LENGTH, clamp(limits.max_statement_length))?;
        conn.set_limit(Limit::SQLITE_LIMIT_VARIABLE_NUMBER, clamp(limits.max_bound_parameters))?;
        conn.set_limit(Limit::SQLITE_LIMIT_COLUMN, 100)?;
        // Other databases stay out of reach.
        conn.set_limit(Limit::SQLITE_LIMIT_ATTACHED, 0)?;
        conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_DEFENSIVE, true)?;
        // Only takes on a new database: `delete_all` gives the pages back.
        conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
        if self.file.is_some() {
            conn.pragma_update(None, "locking_mode", "EXCLUSIVE")?;
            let mode: String =
                conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
            if !mode.eq_ignore_ascii_case("wal") {
                let failure = rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR);
                return Err(rusqlite::Error::SqliteFailure(
                    failure,
                    Some(format!("journal mode {mode}, not WAL")),
                ));
            }
            conn.pragma_update(None, "synchronous", "NORMAL")?;
            conn.pragma_update(None, "journal_size_limit", 4 << 20)?;
            conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)?;
        }
        // At most 512 KiB of cached pages per open database.
        conn.pragma_update(None, "cache_size", -512)?;
        let page_size = read_pragma(conn, "page_size")?;
        let pages = (limits.max_database_size / page_size.max(1).unsigned_abs()).max(1);
        conn.pragma_update(None, "max_page_count", i64::try_from(pages).unwrap_or(i64::MAX))?;
        conn.set_prepared_statement_cache_capacity(32);
        let guard = self.guard.clone();
        conn.authorizer(Some(move |context: AuthContext<'_>| guard.authorize(&context)))?;
        let guard = self.guard.clone();
        conn.progress_handler(STEPS_PER_LOOK, Some(move || guard.overtime()))?;
        Ok(())
    }

    /// Runs one statement with `params` bound, inside the turn's transaction; `before_write`
    /// runs first if the statement may write (it may refuse it).
    pub(crate) fn exec(
        &mut self,
        sql: &str,
        params: &[SqlValue],
        before_write: impl FnOnce() -> Result<(), SqlError>,
    ) -> Result<SqlCursor, SqlError> {
        let limits = &self.limits;
        if sql.len() > limits.max_statement_length {
            return Err(SqlError::new(format!(
                "the SQL statement is {} bytes long; the limit is {} (max_sql_statement_length)",
                sql.len(),
                limits.max_statement_length
            )));
        }
        if params.len() > limits.max_bound_parameters {
            return Err(self.too_many_parameters(params.len()));
        }
        if let Some(why) = &self.broken {
            return Err(SqlError::new(format!(
                "the turn's earlier statements were rolled back ({why}); none runs until the \
                 turn ends and the instance restarts"
            )));
        }
        self.begin()?;
        self.guard.start_clock();
        let changes = self.conn.total_changes();
        let ran = self.run(sql, params, before_write);
        // What the turn would lose if SQLite rolled its transaction back: statements that
        // completed, and a failed one that changed rows before it failed (`OR FAIL`).
        if ran.is_ok() || self.conn.total_changes() != changes {
            self.ran += 1;
        }
        if ran.is_err() {
            self.check_transaction();
        }
        ran
    }

    fn run(
        &mut self,
        sql: &str,
        params: &[SqlValue],
        before_write: impl FnOnce() -> Result<(), SqlError>,
    ) -> Result<SqlCursor, SqlError> {
        let explained = |db: &Self, e| explain(&db.guard, &db.conn, &db.limits, e);
        let before = self.conn.total_changes();
        let mut stmt = self.conn.prepare_cached(sql).map_err(|e| explained(self, e))?;
        let expected = stmt.parameter_count();
        if expected != params.len() {
            return Err(SqlError::new(format!(
                "the statement has {expected} parameter(s); {} value(s) were bound",
                params.len()
            )));
        }
        let writes = !stmt.readonly();
        if writes {
            before_write()?;
        }
        let rows = read_rows(&mut stmt, params);
        drop(stmt);
        let (columns, rows) = match rows {
            Ok(read) => read,
            Err(Read::Sqlite(e)) => return Err(explained(self, e)),
            Err(Read::Other(e)) => return Err(e),
        };
        let rows_written = if writes { self.conn.total_changes() - before } else { 0 };
        Ok(SqlCursor { columns, rows, rows_written })
    }

    /// The size of the database in bytes (`databaseSize`): its pages, this turn's included.
    /// A database in memory holding `image`, a whole database file (read before the
    /// connection is configured: SQLite reads it through an `ATTACH`, which the authorizer
    /// refuses).
    pub(crate) fn open_image(limits: SqlLimits, image: &[u8]) -> Result<Self, SqlError> {
        let reading =
            |e: rusqlite::Error| SqlError::new(format!("cannot read the database's image: {e}"));
        let mut conn = Connection::open_in_memory().map_err(reading)?;
        conn.deserialize_read_exact(rusqlite::MAIN_DB, image, image.len(), false)
            .map_err(reading)?;
        let mut db = Self::with_connection(conn, None, limits);
        db.configure().map_err(reading)?;
        Ok(db)
    }

    /// The whole database, as a file would hold it.
    pub(crate) fn image(&mut self) -> Result<Vec<u8>, SqlError> {
        let image = self.conn.serialize(rusqlite::MAIN_DB);
        image
            .map(|image| image.to_vec())
            .map_err(|e| SqlError::new(format!("cannot copy the database: {e}")))
    }

    pub(crate) fn size(&self) -> Result<u64, SqlError> {
        let read = |name| read_pragma(&self.conn, name);
        let size = read("page_count").and_then(|pages| Ok(pages * read("page_size")?));
        let size = size.map(i64::unsigned_abs);
        size.map_err(|e| explain(&self.guard, &self.conn, &self.limits, e))
    }

    /// A hook starts: if it fails, its statements are rolled back, and only those.
    pub(crate) fn hook_started(&mut self) {
        self.scope = Scope::Untouched;
    }

    /// The hook under way failed: its statements are rolled back. Returns whether the turn
    /// still has a transaction open (it had statements before the hook); an error if the
    /// turn's other statements cannot be kept (see [`commit`](Self::commit)).
    pub(crate) fn hook_failed(&mut self) -> Result<bool, SqlError> {
        self.check_transaction();
        match std::mem::take(&mut self.scope) {
            Scope::Untouched => {}
            Scope::Savepoint => {
                let undo = format!("ROLLBACK TO {HOOK_SAVEPOINT}; RELEASE {HOOK_SAVEPOINT}");
                if let Err(e) = self.control(&undo) {
                    self.broken.get_or_insert_with(|| format!("a rollback failed: {e}"));
                }
            }
            Scope::Begun => {
                self.open = false;
                if let Err(e) = self.control("ROLLBACK") {
                    self.broken.get_or_insert_with(|| format!("a rollback failed: {e}"));
                }
            }
        }
        match &self.broken {
            Some(why) => Err(SqlError::new(why)),
            None => Ok(self.open),
        }
    }

    /// The turn is over: its statements are committed. Returns whether they wrote anything
    /// (the log then needs a sync). An error means the turn's statements are not kept: the
    /// commit failed, or SQLite had rolled the transaction back by itself, or a rollback
    /// failed; the caller drops the frames that waited for them.
    pub(crate) fn commit(&mut self) -> Result<bool, SqlError> {
        self.check_transaction();
        self.scope = Scope::Untouched;
        let open = std::mem::take(&mut self.open);
        if let Some(why) = self.broken.take() {
            if !self.conn.is_autocommit() {
                let _ = self.control("ROLLBACK");
            }
            return Err(SqlError::new(why));
        }
        if !open {
            return Ok(false);
        }
        let state = self.conn.transaction_state(None::<&str>);
        let wrote = !matches!(
            state,
            Ok(rusqlite::TransactionState::Read | rusqlite::TransactionState::None)
        );
        match self.control("COMMIT") {
            Ok(()) => Ok(wrote),
            Err(e) => {
                if !self.conn.is_autocommit() {
                    let _ = self.control("ROLLBACK");
                }
                Err(e)
            }
        }
    }

    /// SQLite rolls the whole transaction back by itself after some errors (a full database
    /// or disk, an I/O error, no memory): the turn's earlier statements are gone, and so the
    /// turn is broken.
    fn check_transaction(&mut self) {
        if self.open && self.conn.is_autocommit() {
            self.open = false;
            self.scope = Scope::Untouched;
            // Only the failed statement itself was lost when it was the turn's first.
            if std::mem::take(&mut self.ran) > 0 {
                self.broken.get_or_insert_with(|| "SQLite rolled the transaction back".into());
            }
        }
    }

    /// Whether the names of the database's files may not be durable in their directory yet
    /// (no sync of its log did it): the next open must see to it.
    pub(crate) fn unsynced(&self) -> bool {
        self.file.as_ref().is_some_and(|file| {
            file.new_in.is_some() || file.synced.as_ref().is_some_and(|log| log.dir_pending())
        })
    }

    /// Makes what the log holds durable in the database file itself (a full checkpoint syncs
    /// the log, then the file): for a commit whose log the flusher cannot reach.
    pub(crate) fn checkpoint(&mut self) -> Result<(), SqlError> {
        let done = self.guard.as_runtime(|| {
            self.conn.query_row("PRAGMA wal_checkpoint(FULL)", [], |row| row.get::<_, i64>(0))
        });
        match done {
            Ok(0) => Ok(()),
            Ok(_) => Err(SqlError::new("the checkpoint could not complete (SQLITE_BUSY)")),
            Err(e) => Err(explain(&self.guard, &self.conn, &self.limits, e)),
        }
    }

    /// Whether this is the first call since the database was opened.
    pub(crate) fn take_fresh(&mut self) -> bool {
        std::mem::take(&mut self.fresh)
    }

    /// Whether a turn's transaction is open (the database cannot be closed for another).
    pub(crate) fn in_transaction(&self) -> bool {
        self.open
    }

    /// The log to sync for what was committed (`None` in memory).
    pub(crate) fn log(&mut self) -> Result<Option<Arc<SyncFile>>, SqlError> {
        let Some(file) = &mut self.file else { return Ok(None) };
        if file.synced.is_none() {
            let log = match std::fs::File::open(&file.path) {
                Ok(log) => log,
                // No log yet: nothing was written to sync.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => {
                    let path = file.path.display();
                    return Err(SqlError::new(format!("cannot open the log {path}: {e}")));
                }
            };
            file.synced = Some(Arc::new(SyncFile::new(log, file.new_in.take())));
        }
        Ok(file.synced.clone())
    }

    /// Starts the turn's transaction, or the hook's savepoint within it.
    fn begin(&mut self) -> Result<(), SqlError> {
        if !self.open {
            self.control("BEGIN")?;
            self.open = true;
            self.ran = 0;
            if self.scope == Scope::Untouched {
                self.scope = Scope::Begun;
            }
        } else if self.scope == Scope::Untouched {
            self.control(&format!("SAVEPOINT {HOOK_SAVEPOINT}"))?;
            self.scope = Scope::Savepoint;
        }
        Ok(())
    }

    /// Runs one of the runtime's own statements (the only ones that may control transactions).
    fn control(&mut self, sql: &str) -> Result<(), SqlError> {
        let done = self.guard.as_runtime(|| self.conn.execute_batch(sql));
        done.map_err(|e| explain(&self.guard, &self.conn, &self.limits, e))
    }

    fn too_many_parameters(&self, bound: usize) -> SqlError {
        SqlError::new(format!(
            "a statement may bind at most {} parameters (max_sql_bound_parameters); this one has {bound}",
            self.limits.max_bound_parameters
        ))
    }
}

/// A statement's rows, each its values in column order.
type Rows = Vec<Vec<SqlValue>>;

/// Why reading a statement's rows failed.
enum Read {
    Sqlite(rusqlite::Error),
    Other(SqlError),
}

impl From<rusqlite::Error> for Read {
    fn from(e: rusqlite::Error) -> Self {
        Self::Sqlite(e)
    }
}

/// Binds `params`, runs the statement and reads its rows, at most [`MAX_RESULT_SIZE`] bytes
/// of them. The column names are read after the first step, when SQLite has prepared the
/// statement again if the schema changed since it was cached.
fn read_rows(
    stmt: &mut rusqlite::CachedStatement<'_>,
    params: &[SqlValue],
) -> Result<(Arc<[String]>, Rows), Read> {
    for (i, param) in params.iter().enumerate() {
        stmt.raw_bind_parameter(i + 1, param)?;
    }
    let mut rows = stmt.raw_query();
    let mut out = Vec::new();
    let mut columns: Option<Arc<[String]>> = None;
    let mut bytes = 0usize;
    while let Some(row) = rows.next()? {
        let names = columns.get_or_insert_with(|| {
            let stmt: &rusqlite::Statement<'_> = row.as_ref();
            stmt.column_names().map(str::to_owned).collect()
        });
        let mut values = Vec::with_capacity(names.len());
        for i in 0..names.len() {
            let value = SqlValue::from_ref(row.get_ref(i)?);
            bytes += value.size();
            values.push(value);
        }
        if bytes > MAX_RESULT_SIZE {
            return Err(Read::Other(SqlError::new(format!(
                "the statement's rows are over {} MiB: read them in pages (LIMIT with a key \
                 range)",
                MAX_RESULT_SIZE >> 20
            ))));
        }
        out.push(values);
    }
    drop(rows);
    let columns = columns.unwrap_or_else(|| stmt.column_names().map(str::to_owned).collect());
    Ok((columns, out))
}

/// Creates `dir` and its missing parents, and syncs the directory above each one it created,
/// so their names survive a power cut.
fn create_dirs(dir: &Path) -> std::io::Result<()> {
    let mut missing = Vec::new();
    let mut at = Some(dir);
    while let Some(path) = at.filter(|path| !path.as_os_str().is_empty() && !path.exists()) {
        missing.push(path);
        at = path.parent();
    }
    std::fs::create_dir_all(dir)?;
    for created in missing.iter().rev() {
        if let Some(parent) = created.parent().filter(|parent| !parent.as_os_str().is_empty()) {
            std::fs::File::open(parent)?.sync_all()?;
        }
    }
    Ok(())
}
