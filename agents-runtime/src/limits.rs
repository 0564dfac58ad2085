//! The bounds every input and queue is held to.

use std::time::Duration;

/// The bounds every input and queue is held to. Set through [`ServerBuilder`].
#[derive(Clone, Debug)]
pub(crate) struct Limits {
    pub(crate) max_message_size: usize,
    pub(crate) outbox_capacity: usize,
    pub(crate) max_outbox_bytes: usize,
    pub(crate) mailbox_capacity: usize,
    pub(crate) max_connection_state_size: usize,
    pub(crate) max_request_body_size: usize,
    pub(crate) max_request_head_size: usize,
    pub(crate) read_buffer_size: usize,
    pub(crate) close_timeout: Duration,
    pub(crate) send_timeout: Duration,
    pub(crate) hibernate_after: Duration,
    pub(crate) max_connections: usize,
    pub(crate) max_instances: usize,
    pub(crate) storage_timeout: Duration,
    pub(crate) max_unfinished_input: usize,
    pub(crate) message_timeout: Duration,
    pub(crate) request_head_timeout: Duration,
    pub(crate) sql: SqlLimits,
    /// Whether agents may connect to MCP servers on loopback addresses.
    pub(crate) mcp_loopback: bool,
}

/// The limits of each instance's SQL database, Cloudflare's by default.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SqlLimits {
    /// The longest statement, in bytes (100 KB).
    pub(crate) max_statement_length: usize,
    /// The most bound parameters of one statement (100).
    pub(crate) max_bound_parameters: usize,
    /// The largest string, BLOB or row, in bytes (2 MB).
    pub(crate) max_row_size: usize,
    /// The largest database, in bytes (10 GB).
    pub(crate) max_database_size: u64,
    /// The most databases open at once ([`default_max_open_databases`]).
    pub(crate) max_open_databases: usize,
}

impl Default for SqlLimits {
    fn default() -> Self {
        Self {
            max_statement_length: 100_000,
            max_bound_parameters: 100,
            max_row_size: 2_000_000,
            max_database_size: 10_000_000_000,
            max_open_databases: default_max_open_databases(),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_size: 1 << 20,
            outbox_capacity: 1024,
            max_outbox_bytes: 16 << 20,
            mailbox_capacity: 1024,
            max_connection_state_size: 2048,
            max_request_body_size: 1 << 20,
            max_request_head_size: 64 * 1024,
            read_buffer_size: 64 * 1024,
            close_timeout: Duration::from_secs(5),
            send_timeout: Duration::from_secs(30),
            hibernate_after: Duration::from_secs(10),
            max_connections: default_max_connections(),
            max_instances: 100_000,
            storage_timeout: Duration::from_secs(5),
            max_unfinished_input: 256 << 20,
            message_timeout: Duration::from_secs(30),
            request_head_timeout: Duration::from_secs(10),
            sql: SqlLimits::default(),
            mcp_loopback: true,
        }
    }
}

/// File descriptors an open SQL database holds: the database, its log, and the runtime's
/// handle to sync the log.
pub(crate) const FDS_PER_DATABASE: usize = 3;

/// The process's open-file limit (its soft limit), if it has one.
fn open_file_limit() -> Option<usize> {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
    limit.and_then(|limit| usize::try_from(limit).ok())
}

/// How many SQL databases may be open at once by default: 256, or fewer where a tenth of the
/// open-file limit cannot hold that many (at least one). An instance's database is open only
/// while it is awake, and the least recently used one is closed to open another.
pub(crate) fn default_max_open_databases() -> usize {
    const MOST: usize = 256;
    open_file_limit().map_or(MOST, |limit| (limit / 10 / FDS_PER_DATABASE).clamp(1, MOST))
}

/// What `max_connections` defaults to: the process's open-file limit (its soft limit), less a
/// tenth of it (at least 32) for the store, the listener and HTTP requests, and less what the
/// default number of open SQL databases holds, since every WebSocket holds a file descriptor;
/// 100,000 where the limit cannot be read or is unlimited.
pub(crate) fn default_max_connections() -> usize {
    const FALLBACK: usize = 100_000;
    let databases = default_max_open_databases() * FDS_PER_DATABASE;
    match open_file_limit() {
        Some(limit) => limit.saturating_sub((limit / 10).max(32) + databases).max(1),
        None => FALLBACK,
    }
}

#[cfg(test)]
mod tests {
    use super::default_max_connections;

    #[test]
    fn max_connections_stays_under_the_open_file_limit() {
        let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
        let default = default_max_connections();
        match limit {
            Some(limit) => {
                let databases = super::default_max_open_databases() * super::FDS_PER_DATABASE;
                let held = (default + databases) as u64;
                assert!(held < limit, "{default} sockets and {databases} for databases: {limit}");
            }
            None => assert_eq!(default, 100_000),
        }
        assert!(default >= 1);
    }
}
