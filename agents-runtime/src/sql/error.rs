//! [`SqlError`]: what a statement that cannot run, a limit or a row that does not fit a type
//! returns, and [`explain`]: SQLite's errors in those terms.

use std::fmt;

use rusqlite::Connection;

use super::guard::Guard;
use crate::limits::SqlLimits;

/// An SQL statement failed, or its rows do not fit the type asked for.
///
/// The message is SQLite's own, with its result code (`no such table: cache (SQLITE_ERROR)`),
/// or says which limit was reached and how to raise it. Never a panic: a wrong statement is
/// an error value a hook can return or answer with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SqlError {
    message: String,
}

impl SqlError {
    pub(crate) fn new(message: impl fmt::Display) -> Self {
        Self { message: message.to_string() }
    }

    /// What went wrong.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for SqlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for SqlError {}

impl serde::de::Error for SqlError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Self::new(format!("a row does not fit the type asked for: {msg}"))
    }
}

impl serde::ser::Error for SqlError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Self::new(format!("a value cannot be bound: {msg}"))
    }
}

/// SQLite's error, with its code, or the limit or rule it hit.
pub(crate) fn explain(
    guard: &Guard,
    conn: &Connection,
    limits: &SqlLimits,
    e: rusqlite::Error,
) -> SqlError {
    if let Some(refused) = guard.take_refusal() {
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
    let read = |name| read_pragma(conn, name).ok();
    matches!((read("page_count"), read("max_page_count")), (Some(pages), Some(max)) if pages >= max)
}

/// The number pragma `name` reads (`page_count`, `page_size`…).
pub(crate) fn read_pragma(conn: &Connection, name: &str) -> rusqlite::Result<i64> {
    conn.pragma_query_value(None, name, |row| row.get(0))
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
