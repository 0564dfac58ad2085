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
    pub(crate) read_buffer_size: usize,
    pub(crate) close_timeout: Duration,
    pub(crate) send_timeout: Duration,
    pub(crate) hibernate_after: Duration,
    pub(crate) max_connections: usize,
    pub(crate) max_instances: usize,
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
            read_buffer_size: 64 * 1024,
            close_timeout: Duration::from_secs(5),
            send_timeout: Duration::from_secs(30),
            hibernate_after: Duration::from_secs(10),
            max_connections: 100_000,
            max_instances: 100_000,
        }
    }
}
