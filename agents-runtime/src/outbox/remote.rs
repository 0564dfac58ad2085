//! What an owner sends to its agent's sockets on other nodes (cluster mode): a [`Route`] per
//! instance and gateway node, an ordered queue of frames that each wait for the output gate,
//! and a task that writes them, in order, to the gateway's link. A broadcast takes one entry
//! per gateway, naming the gateway's sockets it is for.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use super::link::PushError;
use crate::cluster::Lease;
use crate::cluster::frames::{Frame, Sink, Target};
use crate::message::Message;
use crate::storage::durability::{GroupCommit, Settled, WriteSeq};
use crate::sync::lock;

/// Bytes a route may hold for its gateway before it gives up on the gateway's link (the
/// gateway then closes its sockets with 1013, and the owner hears them close).
const MAX_ROUTE_BYTES: usize = 64 << 20;

/// An owner's connection to a socket on another node: the route to that node, and the
/// socket's key there.
#[derive(Clone)]
pub(crate) struct RemoteOutlet {
    pub(crate) route: Arc<Route>,
    pub(crate) conn: u64,
}

/// One instance's frames for one gateway node, in the order its turns sent them.
pub(crate) struct Route {
    shared: Arc<Shared>,
}

struct Shared {
    agent: Arc<str>,
    name: Arc<str>,
    epoch: i64,
    /// The node's lease, and the incarnation the instance was acquired under: a frame goes
    /// out only while that incarnation's lease holds.
    lease: Arc<Lease>,
    incarnation: i64,
    queue: Mutex<Queue>,
    more: Notify,
    sink: Arc<dyn Sink>,
}

#[derive(Default)]
struct Queue {
    entries: VecDeque<(WriteSeq, Out)>,
    bytes: usize,
    /// The route was dropped or gave up: nothing more is queued, and its task ends.
    closed: bool,
}

enum Out {
    Send(Target, Message),
    Close(u64, u16, String),
}

impl Route {
    /// A route for instance `(agent, name)`, owned at `epoch` under the node's incarnation
    /// `owner.1` of lease `owner.0`, to `sink`; its task runs on the current runtime until the
    /// route is dropped.
    pub(crate) fn new(
        (agent, name, epoch): (Arc<str>, Arc<str>, i64),
        owner: (Arc<Lease>, i64),
        commits: Arc<GroupCommit>,
        sink: Arc<dyn Sink>,
    ) -> Arc<Self> {
        let shared = Arc::new(Shared {
            agent,
            name,
            epoch,
            lease: owner.0,
            incarnation: owner.1,
            queue: Mutex::default(),
            more: Notify::new(),
            sink,
        });
        tokio::spawn(pump(shared.clone(), commits));
        Arc::new(Self { shared })
    }

    /// Queues `message` for the gateway's sockets `target`, released once write `after` is
    /// durable.
    pub(crate) fn send(
        &self,
        target: Target,
        message: Message,
        after: WriteSeq,
    ) -> Result<(), PushError> {
        let len = message.len() + 64;
        self.push(after, Out::Send(target, message), len)
    }

    /// Queues a close of the gateway's socket `conn`, after write `after`.
    pub(crate) fn close(
        &self,
        conn: u64,
        code: u16,
        reason: &str,
        after: WriteSeq,
    ) -> Result<(), PushError> {
        self.push(after, Out::Close(conn, code, reason.to_owned()), 64 + reason.len())
    }

    fn push(&self, after: WriteSeq, out: Out, len: usize) -> Result<(), PushError> {
        let mut queue = lock(&self.shared.queue);
        if queue.closed {
            return Err(PushError::Closed);
        }
        if queue.bytes + len > MAX_ROUTE_BYTES {
            tracing::warn!(agent = %self.shared.agent, name = %self.shared.name, "a gateway's link is not taking frames: giving up on it");
            queue.closed = true;
            queue.entries.clear();
            drop(queue);
            self.shared.sink.abort();
            self.shared.more.notify_one();
            return Err(PushError::Closed);
        }
        queue.bytes += len;
        let was_empty = queue.entries.is_empty();
        queue.entries.push_back((after, out));
        drop(queue);
        if was_empty {
            self.shared.more.notify_one();
        }
        Ok(())
    }
}

impl Drop for Route {
    fn drop(&mut self) {
        lock(&self.shared.queue).closed = true;
        self.shared.more.notify_one();
    }
}

/// Writes the route's frames in order, each once the writes before it are durable; a frame
/// whose writes were lost is dropped (its instance restarts from what is durable).
async fn pump(shared: Arc<Shared>, commits: Arc<GroupCommit>) {
    loop {
        let front = {
            let queue = lock(&shared.queue);
            match queue.entries.front() {
                Some((after, _)) => Some(*after),
                None if queue.closed => return,
                None => None,
            }
        };
        let Some(after) = front else {
            shared.more.notified().await;
            continue;
        };
        let settled = match commits.settled(after) {
            Settled::Pending => commits.durable(after).await,
            settled => settled,
        };
        let Some((_, out)) = ({
            let mut queue = lock(&shared.queue);
            let entry = queue.entries.pop_front();
            if let Some((_, out)) = &entry {
                queue.bytes -= out_len(out);
            }
            entry
        }) else {
            continue;
        };
        if let Settled::Lost(_) = settled {
            continue;
        }
        let (agent, name, epoch) =
            (shared.agent.to_string(), shared.name.to_string(), shared.epoch);
        let frame = match out {
            Out::Send(target, message) => Frame::Send { agent, name, epoch, target, message },
            Out::Close(conn, code, reason) => {
                Frame::CloseConn { agent, name, epoch, conn, code, reason }
            }
        };
        let ours = shared.lease.holding() == Some(shared.incarnation);
        if !ours || !shared.sink.send(frame) {
            let mut queue = lock(&shared.queue);
            queue.closed = true;
            queue.entries.clear();
            return;
        }
    }
}

fn out_len(out: &Out) -> usize {
    match out {
        Out::Send(_, message) => message.len() + 64,
        Out::Close(_, _, reason) => 64 + reason.len(),
    }
}
