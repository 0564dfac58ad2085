//! [`ClusterError`]: what went wrong talking to the cluster's PostgreSQL.

use std::fmt;

/// What went wrong talking to the cluster's PostgreSQL.
#[derive(Debug)]
pub struct ClusterError {
    message: String,
}

impl ClusterError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self { message: message.into() }
    }

    pub(super) fn postgres(doing: &str, error: tokio_postgres::Error) -> Self {
        let detail = match error.as_db_error() {
            Some(db) => format!("{}: {}", db.code().code(), db.message()),
            None => error_chain(&error),
        };
        Self::new(format!("{doing}: {detail}"))
    }

    pub(super) fn pool(doing: &str, error: deadpool_postgres::PoolError) -> Self {
        match error {
            deadpool_postgres::PoolError::Backend(error) => Self::postgres(doing, error),
            deadpool_postgres::PoolError::Timeout(_) => {
                Self::new(format!("{doing}: PostgreSQL did not accept a connection in time"))
            }
            other => Self::new(format!("{doing}: {other}")),
        }
    }
}

impl fmt::Display for ClusterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cluster: {}", self.message)
    }
}

impl std::error::Error for ClusterError {}

/// An error and its sources, joined with ": ".
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(next) = source {
        text.push_str(": ");
        text.push_str(&next.to_string());
        source = next.source();
    }
    text
}
