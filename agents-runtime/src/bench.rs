//! Entry points for the criterion micro-benchmarks (`bench/benches/hot_paths.rs`),
//! behind the `bench` feature. Not part of the API: each wraps the runtime's own code path,
//! so what the benchmark measures is what a server runs.

use std::sync::Arc;

use serde_json::Value;

use crate::connection::{Connection, ConnectionParts, connection_id};
use crate::connections::ConnectionTable;
use crate::instances::Instance;
use crate::message::Message;
use crate::outbox::{self, Link, Outgoing};
use crate::protocol::{self, ClientFrame};
use crate::server::Limits;

/// One instance's connection table with `n` connections and their outboxes, as the host and
/// the socket tasks hold them (no sockets).
pub struct Room {
    table: ConnectionTable<()>,
    links: Vec<Arc<Link>>,
}

impl Room {
    /// `n` connections with the default limits.
    pub fn new(n: usize) -> Self {
        let limits = Limits::default();
        let instance = Instance::detached();
        let mut table = ConnectionTable::default();
        let mut links = Vec::with_capacity(n);
        for key in 0..n as u64 {
            let link = Arc::new(Link::new(limits.outbox_capacity, None));
            let parts = ConnectionParts {
                key,
                id: connection_id(None),
                uri: "http://127.0.0.1/agents/bench/room".into(),
                outbox: outbox::Sender(link.clone()),
            };
            table.insert(Connection::new(parts, "room".into(), instance.clone(), &limits));
            links.push(link);
        }
        Self { table, links }
    }

    /// `ctx.broadcast(message, &[])`: returns how many outboxes took it.
    pub fn broadcast(&self, message: &Message) -> usize {
        self.table.broadcast(message, &[])
    }

    /// What the socket tasks do next: take every queued message off its outbox.
    pub fn drain(&self) -> usize {
        let mut taken = 0;
        for link in &self.links {
            while let Some(outgoing) = link.try_pop() {
                if let Outgoing::Message(message, _) = outgoing {
                    link.written(message.len());
                }
                taken += 1;
            }
        }
        taken
    }
}

/// Reads a client frame as the host does for every text message: protocol frame or not.
pub fn parse_client_frame(text: &str) -> bool {
    ClientFrame::parse(text).is_some()
}

/// The answer frame of a successful call.
pub fn rpc_result(id: &str, result: &Value) -> Message {
    protocol::rpc_result(id, Some(result), true)
}
