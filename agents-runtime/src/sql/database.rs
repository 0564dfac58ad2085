//! [`Database`]: one instance's SQLite connection, its limits, and the transaction of the
//! current turn.
//!
//! On disk, a database is in WAL mode with an exclusive lock (no shared-memory file: one
//! connection per database), `synchronous = NORMAL` (a commit is a `write` to the log, which
//! a killed process does not lose; the output gate's flusher `fsync`s the log), and no
//! checkpoint on close (closing is only closing files, cheap enough for a hibernating turn).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use rusqlite::hooks::{AuthAction, AuthContext, Authorization, TransactionOperation};
use rusqlite::limits::Limit;
use rusqlite::{Connection, OpenFlags};

use super::{SqlCursor, SqlError, SqlValue};
use crate::limits::SqlLimits;
use crate::storage::file_syncs::SyncFile;
use crate::sync::lock;

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

/// What the authorizer knows: whether the runtime itself is running a statement (the only
/// one that may begin, commit or roll back), and why it refused the last statement.
#[derive(Default)]
struct Guard {
    runtime: AtomicBool,
    refused: Mutex<Option<String>>,
}

impl Database {
    /// Opens (creating it if needed) the database at `path`, or one in memory.
    pub(crate) fn open(path: Option<&Path>, limits: SqlLimits) -> Result<Self, SqlError> {
        let opening = |e: rusqlite::Error| SqlError::new(format!("cannot open the database: {e}"));
        let (conn, file) = match path {
            Some(path) => {
                let dir = path.parent().unwrap_or(Path::new("."));
                std::fs::create_dir_all(dir)
                    .map_err(|e| SqlError::new(format!("cannot create {}: {e}", dir.display())))?;
                let mut log = path.as_os_str().to_owned();
                log.push("-wal");
                let log = PathBuf::from(log);
                let new = !path.exists() || !log.exists();
                let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
                    | OpenFlags::SQLITE_OPEN_CREATE
                    | OpenFlags::SQLITE_OPEN_NO_MUTEX;
                let conn = Connection::open_with_flags(path, flags).map_err(opening)?;
                let new_in = new.then(|| dir.to_path_buf());
                (conn, Some(LogFile { path: log, new_in, synced: None }))
            }
            None => (Connection::open_in_memory().map_err(opening)?, None),
        };
        let mut db = Self {
            conn,
            file,
            guard: Arc::default(),
            limits,
            open: false,
            scope: Scope::Untouched,
        };
        db.configure().map_err(opening)?;
        Ok(db)
    }

    fn configure(&mut self) -> rusqlite::Result<()> {
        let conn = &mut self.conn;
        let limits = &self.limits;
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
        let page_size: i64 = conn.pragma_query_value(None, "page_size", |row| row.get(0))?;
        let pages = (limits.max_database_size / page_size.max(1).unsigned_abs()).max(1);
        conn.pragma_update(None, "max_page_count", i64::try_from(pages).unwrap_or(i64::MAX))?;
        conn.set_prepared_statement_cache_capacity(32);
        let guard = self.guard.clone();
        conn.authorizer(Some(move |context: AuthContext<'_>| guard.authorize(&context)))?;
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
        self.begin()?;
        let before = self.conn.total_changes();
        let mut stmt = match self.conn.prepare_cached(sql) {
            Ok(stmt) => stmt,
            Err(e) => return Err(explain(&self.guard, &self.conn, &self.limits, e)),
        };
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
        let columns: Arc<[String]> = stmt.column_names().map(str::to_owned).collect();
        let run = |stmt: &mut rusqlite::CachedStatement<'_>| -> rusqlite::Result<_> {
            for (i, param) in params.iter().enumerate() {
                stmt.raw_bind_parameter(i + 1, param)?;
            }
            let mut rows = stmt.raw_query();
            let mut out = Vec::new();
            while let Some(row) = rows.next()? {
                out.push(
                    (0..columns.len()).map(|i| SqlValue::from_ref(row.get_ref_unwrap(i))).collect(),
                );
            }
            Ok(out)
        };
        let rows = run(&mut stmt);
        drop(stmt);
        let rows = rows.map_err(|e| {
            let error = explain(&self.guard, &self.conn, &self.limits, e);
            self.lost_transaction();
            error
        })?;
        let rows_written = if writes { self.conn.total_changes() - before } else { 0 };
        Ok(SqlCursor { columns, rows, rows_written })
    }

    /// The size of the database in bytes (`databaseSize`): its pages, this turn's included.
    pub(crate) fn size(&self) -> Result<u64, SqlError> {
        let read = |name| self.conn.pragma_query_value(None, name, |row| row.get::<_, i64>(0));
        let size = read("page_count").and_then(|pages| Ok(pages * read("page_size")?));
        let size = size.map(i64::unsigned_abs);
        size.map_err(|e| explain(&self.guard, &self.conn, &self.limits, e))
    }

    /// A hook starts: if it fails, its statements are rolled back, and only those.
    pub(crate) fn hook_started(&mut self) {
        self.scope = Scope::Untouched;
    }

    /// The hook under way failed: its statements are rolled back. Returns whether the turn
    /// still has a transaction open (it had statements before the hook).
    pub(crate) fn hook_failed(&mut self) -> Result<bool, SqlError> {
        self.lost_transaction();
        match std::mem::take(&mut self.scope) {
            Scope::Untouched => {}
            Scope::Savepoint => {
                self.control(&format!("ROLLBACK TO {HOOK_SAVEPOINT}; RELEASE {HOOK_SAVEPOINT}"))?
            }
            Scope::Begun => {
                self.open = false;
                self.control("ROLLBACK")?;
            }
        }
        Ok(self.open)
    }

    /// The turn is over: its statements are committed. Returns whether they wrote anything
    /// (the log then needs a sync); on an error they were rolled back.
    pub(crate) fn commit(&mut self) -> Result<bool, SqlError> {
        self.lost_transaction();
        self.scope = Scope::Untouched;
        if !std::mem::take(&mut self.open) {
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
    /// or disk, an I/O error, no memory): then the turn has none open any more.
    fn lost_transaction(&mut self) {
        if self.open && self.conn.is_autocommit() {
            self.open = false;
            self.scope = Scope::Untouched;
        }
    }

    /// Whether a turn's transaction is open (the database cannot be closed for another).
    pub(crate) fn in_transaction(&self) -> bool {
        self.open
    }

    /// The log to sync for what was committed (`None` in memory).
    pub(crate) fn log(&mut self) -> Result<Option<Arc<SyncFile>>, SqlError> {
        let Some(file) = &mut self.file else { return Ok(None) };
        if file.synced.is_none() {
            let log = std::fs::File::open(&file.path).map_err(|e| {
                SqlError::new(format!("cannot open the log {}: {e}", file.path.display()))
            })?;
            file.synced = Some(Arc::new(SyncFile::new(log, file.new_in.take())));
        }
        Ok(file.synced.clone())
    }

    /// Starts the turn's transaction, or the hook's savepoint within it.
    fn begin(&mut self) -> Result<(), SqlError> {
        if !self.open {
            self.control("BEGIN")?;
            self.open = true;
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
        self.guard.runtime.store(true, Ordering::Release);
        let done = self.conn.execute_batch(sql);
        self.guard.runtime.store(false, Ordering::Release);
        done.map_err(|e| explain(&self.guard, &self.conn, &self.limits, e))
    }

    fn too_many_parameters(&self, bound: usize) -> SqlError {
        SqlError::new(format!(
            "a statement may bind at most {} parameters (max_sql_bound_parameters); this one has {bound}",
            self.limits.max_bound_parameters
        ))
    }
}

impl Guard {
    fn authorize(&self, context: &AuthContext<'_>) -> Authorization {
        let refused = match context.action {
            AuthAction::Transaction { operation } | AuthAction::Savepoint { operation, .. }
                if !self.runtime.load(Ordering::Acquire) =>
            {
                let what = match operation {
                    TransactionOperation::Begin => "begin",
                    TransactionOperation::Release => "commit or release",
                    TransactionOperation::Rollback => "roll back",
                    _ => "control",
                };
                format!(
                    "statements cannot {what} a transaction or savepoint: each turn is one \
                     transaction, committed when the turn ends and rolled back if its hook fails"
                )
            }
            AuthAction::Attach { .. } | AuthAction::Detach { .. } => {
                "an agent's SQL reaches its own database only (ATTACH and DETACH are refused)"
                    .into()
            }
            AuthAction::Pragma { pragma_name, pragma_value }
                if is_runtime_pragma(pragma_name, pragma_value) =>
            {
                format!("PRAGMA {pragma_name} is set by the runtime and cannot be changed")
            }
            _ => return Authorization::Allow,
        };
        *lock(&self.refused) = Some(refused);
        Authorization::Deny
    }
}

/// The pragmas the runtime's durability and limits rest on.
fn is_runtime_pragma(name: &str, value: Option<&str>) -> bool {
    const FIXED: [&str; 6] = [
        "journal_mode",
        "locking_mode",
        "synchronous",
        "writable_schema",
        "temp_store_directory",
        "data_store_directory",
    ];
    let name = name.to_ascii_lowercase();
    FIXED.contains(&name.as_str()) || (name == "max_page_count" && value.is_some())
}

/// SQLite's error, with its code, or the limit or rule it hit.
fn explain(guard: &Guard, conn: &Connection, limits: &SqlLimits, e: rusqlite::Error) -> SqlError {
    if let Some(refused) = lock(&guard.refused).take() {
        return SqlError::new(refused);
    }
    if let rusqlite::Error::SqlInputError { error, msg, offset, .. } = &e {
        let code = code_name(error.extended_code & 0xff);
        return SqlError::new(format!("{msg} at offset {offset} ({code})"));
    }
    let rusqlite::Error::SqliteFailure(failure, message) = &e else {
        return match e {
            rusqlite::Error::MultipleStatement => {
                SqlError::new("exec runs one statement; this text holds more than one")
            }
            other => SqlError::new(other),
        };
    };
    let text = message.clone().unwrap_or_else(|| failure.to_string());
    let primary = failure.extended_code & 0xff;
    match primary {
        rusqlite::ffi::SQLITE_TOOBIG => SqlError::new(format!(
            "a string, BLOB or row is over the limit of {} bytes (max_sql_row_size): {text}",
            limits.max_row_size
        )),
        rusqlite::ffi::SQLITE_FULL if at_size_limit(conn) => SqlError::new(format!(
            "the database is at its size limit of {} bytes (max_sql_database_size): {text}",
            limits.max_database_size
        )),
        _ if text.contains("too many SQL variables") => SqlError::new(format!(
            "a statement may bind at most {} parameters (max_sql_bound_parameters): {text}",
            limits.max_bound_parameters
        )),
        _ => SqlError::new(format!("{text} ({})", code_name(primary))),
    }
}

fn at_size_limit(conn: &Connection) -> bool {
    let read = |name| conn.pragma_query_value(None, name, |row| row.get::<_, i64>(0)).ok();
    matches!((read("page_count"), read("max_page_count")), (Some(pages), Some(max)) if pages >= max)
}

/// SQLite's name of a primary result code.
fn code_name(code: i32) -> &'static str {
    use rusqlite::ffi;
    match code {
        ffi::SQLITE_ERROR => "SQLITE_ERROR",
        ffi::SQLITE_BUSY => "SQLITE_BUSY",
        ffi::SQLITE_LOCKED => "SQLITE_LOCKED",
        ffi::SQLITE_NOMEM => "SQLITE_NOMEM",
        ffi::SQLITE_READONLY => "SQLITE_READONLY",
        ffi::SQLITE_INTERRUPT => "SQLITE_INTERRUPT",
        ffi::SQLITE_IOERR => "SQLITE_IOERR",
        ffi::SQLITE_CORRUPT => "SQLITE_CORRUPT",
        ffi::SQLITE_FULL => "SQLITE_FULL",
        ffi::SQLITE_CANTOPEN => "SQLITE_CANTOPEN",
        ffi::SQLITE_TOOBIG => "SQLITE_TOOBIG",
        ffi::SQLITE_CONSTRAINT => "SQLITE_CONSTRAINT",
        ffi::SQLITE_MISMATCH => "SQLITE_MISMATCH",
        ffi::SQLITE_MISUSE => "SQLITE_MISUSE",
        ffi::SQLITE_AUTH => "SQLITE_AUTH",
        ffi::SQLITE_RANGE => "SQLITE_RANGE",
        ffi::SQLITE_NOTADB => "SQLITE_NOTADB",
        _ => "SQLITE_ERROR",
    }
}
