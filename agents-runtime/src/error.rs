//! Errors: the boxed [`Error`] hooks return, and the typed [`ConnectionError`].

use std::error::Error as StdError;
use std::fmt;

/// The result type of hooks and runtime calls.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Any error a hook can return.
///
/// Like `anyhow::Error`, it converts from every `std::error::Error + Send + Sync`, so `?` works
/// on serde, I/O and runtime errors alike inside a hook. [`Error::msg`] builds one from a message.
/// It deliberately does not implement `std::error::Error` itself (that would collide with the
/// blanket `From`); use [`Error::source_ref`] to reach the underlying error.
pub struct Error {
    inner: Box<dyn StdError + Send + Sync + 'static>,
}

impl Error {
    /// An error carrying only a message.
    pub fn msg(message: impl fmt::Display) -> Self {
        Self { inner: Box::new(Message(message.to_string())) }
    }

    /// Wraps an already boxed error (`Box<dyn Error + Send + Sync>`, as many libraries return).
    pub fn from_boxed(error: Box<dyn StdError + Send + Sync + 'static>) -> Self {
        Self { inner: error }
    }

    /// The underlying error, for downcasting (`err.source_ref().downcast_ref::<T>()`).
    pub fn source_ref(&self) -> &(dyn StdError + Send + Sync + 'static) {
        &*self.inner
    }

    /// Whether the underlying error is a `T`.
    pub fn is<T: StdError + 'static>(&self) -> bool {
        self.inner.is::<T>()
    }
}

impl<E: StdError + Send + Sync + 'static> From<E> for Error {
    fn from(error: E) -> Self {
        Self { inner: Box::new(error) }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.inner, f)?;
        let mut source = self.inner.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[derive(Debug)]
struct Message(String);

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl StdError for Message {}

/// What can go wrong when using a [`Connection`](crate::Connection) or looking one up.
#[derive(Debug)]
#[non_exhaustive]
pub enum ConnectionError {
    /// The connection is closing or closed; nothing more can be sent on it.
    Closed,
    /// The connection's outbox was full: the client stopped reading. The runtime closes it with
    /// [`close_code::OUTBOX_FULL`](crate::close_code::OUTBOX_FULL).
    OutboxFull {
        /// The configured outbox capacity, in messages.
        messages: usize,
        /// The configured outbox budget, in bytes.
        bytes: usize,
    },
    /// The serialized connection state is over the configured limit; the old state is kept.
    StateTooLarge {
        /// The configured limit in bytes.
        limit: usize,
    },
    /// The connection state could not be serialized to JSON.
    StateNotSerializable(serde_json::Error),
    /// `close` was given a code a server may not send (only 1000–1003, 1007–1014 and 3000–4999).
    InvalidCloseCode(u16),
    /// `get_connection(id)` found more than one live connection with that id (clients choose
    /// their id with `_pk`, so two sockets can share one).
    DuplicateId(String),
}

impl fmt::Display for ConnectionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Closed => f.write_str("the connection is closed"),
            Self::OutboxFull { messages, bytes } => write!(
                f,
                "the connection's outbox is full ({messages} messages or {bytes} bytes): the client is not reading"
            ),
            Self::StateTooLarge { limit } => {
                write!(f, "connection state is over the {limit}-byte limit once serialized")
            }
            Self::StateNotSerializable(e) => write!(f, "connection state is not serializable: {e}"),
            Self::InvalidCloseCode(code) => {
                write!(f, "close code {code} cannot be sent: use 1000-1003, 1007-1014 or 3000-4999")
            }
            // Cloudflare's wording (partyserver `getConnection`).
            Self::DuplicateId(id) => write!(
                f,
                "More than one connection found for id {id}. Did you mean to use getConnections(tag) instead?"
            ),
        }
    }
}

impl StdError for ConnectionError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            Self::StateNotSerializable(e) => Some(e),
            _ => None,
        }
    }
}

/// Turns what a hook returns into a [`Result`], so hooks may return `T` or `Result<T, E>`.
///
/// Implemented for `()`, [`Response`](crate::Response), `Vec<String>` (tags) and every
/// `Result<T, E>` whose error converts into [`Error`].
#[diagnostic::on_unimplemented(
    message = "a hook cannot return `{Self}`",
    label = "this hook must return `{T}` or `Result<{T}, E>`",
    note = "`E` can be any error that converts into `agents_runtime::Error` (every `std::error::Error + Send + Sync`)"
)]
pub trait IntoHookResult<T> {
    /// Converts into the runtime's result.
    fn into_hook_result(self) -> Result<T>;
}

impl IntoHookResult<()> for () {
    fn into_hook_result(self) -> Result<()> {
        Ok(())
    }
}

impl IntoHookResult<crate::Response> for crate::Response {
    fn into_hook_result(self) -> Result<crate::Response> {
        Ok(self)
    }
}

impl IntoHookResult<bool> for bool {
    fn into_hook_result(self) -> Result<bool> {
        Ok(self)
    }
}

impl IntoHookResult<Vec<String>> for Vec<String> {
    fn into_hook_result(self) -> Result<Vec<String>> {
        Ok(self)
    }
}

impl<T, E: Into<Error>> IntoHookResult<T> for std::result::Result<T, E> {
    fn into_hook_result(self) -> Result<T> {
        self.map_err(Into::into)
    }
}

impl From<Error> for Box<dyn StdError + Send + Sync + 'static> {
    fn from(error: Error) -> Self {
        error.inner
    }
}
