//! What a link does with queued frames whose writes the store lost (a full disk).

use std::sync::atomic::Ordering;

use super::Link;
use super::state::State;
use crate::outbox::queue::Outgoing;
use crate::storage::durability::{GroupCommit, Settled};
use crate::wire::protocol::{self, RpcResponse};

impl Link {
    /// The output gate lost the writes some queued frames waited for (the store failed): they
    /// are dropped, as a Durable Object's output is when a write fails, except that each RPC
    /// call whose answer was among them is answered with an error instead (once), and a close
    /// still closes.
    pub(super) fn answer_lost(&self, state: &mut State, commits: &GroupCommit, why: &str) {
        let mut queue = std::mem::take(&mut state.queue);
        let mut answered: Vec<String> = Vec::new();
        while let Some(item) = queue.pop_front() {
            let item = match item {
                Outgoing::Message(message, after) if !commits.is_durable(after) => {
                    if !matches!(commits.settled(after), Settled::Lost(_)) {
                        state.queue.push_back(Outgoing::Message(message, after));
                        continue;
                    }
                    self.written(message.len());
                    let Some(id) = protocol::rpc_answer_id(&message) else { continue };
                    if answered.contains(&id) {
                        continue;
                    }
                    let error = RpcResponse::error(id.clone(), protocol::storage_failed(why));
                    let error = error.to_message();
                    self.queued_bytes.fetch_add(error.len(), Ordering::Relaxed);
                    answered.push(id);
                    Outgoing::Message(error, 0)
                }
                Outgoing::Close(frame, after)
                    if matches!(commits.settled(after), Settled::Lost(_)) =>
                {
                    Outgoing::Close(frame, 0)
                }
                item => item,
            };
            state.queue.push_back(item);
        }
    }
}
