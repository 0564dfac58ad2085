//! Entry points for the criterion micro-benchmarks (`bench/benches/hot_paths.rs`),
//! behind the `bench` feature. Not part of the API: each wraps the runtime's own code path,
//! so what the benchmark measures is what a server runs.

use std::io::{self, IoSlice};
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use serde_json::Value;

use crate::instance::connection::{Connection, ConnectionParts, connection_id};
use crate::instance::connections::ConnectionTable;
use crate::instance::shared::Instance;
use crate::limits::Limits;
use crate::message::Message;
use crate::outbox::{Link, LinkHandle, Outgoing};
use crate::wire::frame::{Frames, Wire};
use crate::wire::protocol::{ClientFrame, RpcResponse};

/// One instance's connection table with `n` connections and their outboxes, as the host and
/// the socket tasks hold them (no sockets).
pub struct Room {
    table: ConnectionTable<()>,
    links: Vec<Arc<Link>>,
    instance: Arc<Instance>,
}

/// A socket that takes every byte at once and keeps none (no syscall: what is measured is
/// ours).
struct Sink;

impl Wire for Sink {
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        Ok(bufs.iter().map(|buf| buf.len()).sum())
    }

    fn poll_write_ready(&self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl Room {
    /// `n` connections with the default limits and no sockets: every send is queued.
    pub fn new(n: usize) -> Self {
        Self::build(n, false)
    }

    /// `n` connections whose sockets take everything: sends are corked during a turn.
    pub fn with_sockets(n: usize) -> Self {
        Self::build(n, true)
    }

    fn build(n: usize, sockets: bool) -> Self {
        let limits = Limits::default();
        let instance = Instance::detached();
        let mut table = ConnectionTable::default();
        let mut links = Vec::with_capacity(n);
        for key in 0..n as u64 {
            let wire: Option<Arc<dyn Wire>> = if sockets { Some(Arc::new(Sink)) } else { None };
            let link = Arc::new(Link::new(limits.outbox_capacity, wire));
            let parts = ConnectionParts {
                key,
                id: connection_id(None),
                uri: "http://127.0.0.1/agents/bench/room".into(),
                link: LinkHandle::new(link.clone()).into(),
            };
            table.insert(Connection::new(parts, instance.clone()));
            links.push(link);
        }
        Self { table, links, instance }
    }

    /// `ctx.broadcast(message, &[])` for each of `messages` in one turn of the instance: every
    /// send is corked, and each socket written once when the turn ends. Returns how many
    /// deliveries were made.
    pub fn broadcast_in_turn(&self, messages: &[Message]) -> usize {
        let mut sent = 0;
        let mut turn = pin!(std::future::poll_fn(|_| {
            sent = messages.iter().map(|message| self.table.broadcast(message, &[])).sum();
            Poll::Ready(())
        }));
        let _ = self.instance.corks.poll(turn.as_mut(), &mut Context::from_waker(Waker::noop()));
        sent
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

/// Encodes `message` as one server frame into a connection's write buffer and writes it to a
/// socket that takes everything: one send's encode, copy and write. Returns the frame's size.
pub fn write_frame(message: &Message) -> usize {
    let mut frames = Frames::default();
    frames.push(message);
    let len = frames.len();
    let _ = frames.write_to(&Sink);
    len
}

/// Reads a client frame as the host does for every text message: protocol frame or not.
pub fn parse_client_frame(text: &str) -> bool {
    ClientFrame::parse(text).is_some()
}

/// The answer frame of a successful call.
pub fn rpc_result(id: &str, result: &Value) -> Message {
    RpcResponse::result(id, Some(result.clone()), true).to_message()
}
