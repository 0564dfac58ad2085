//! [`SqlError`]: what a statement that cannot run, a limit or a row that does not fit a type
//! returns.

use std::fmt;

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
