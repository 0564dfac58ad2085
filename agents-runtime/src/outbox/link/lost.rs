//! What a link does with queued frames whose writes the store lost (a full disk).

use std::sync::atomic::Ordering;

use super::Link;
use super::state::State;
use crate::outbox::queue::Outgoing;
use crate::storage::durability::{GroupCommit, Settled};
use crate::wire::protocol::{self, RpcResponse};
use crate::wire::{CloseFrame, close_code};

/// What a lost frame was, for what the client is told instead.
enum Lost {
    /// An RPC answer: the call gets an error.
    Answer(String),
    /// A state or MCP servers broadcast: the instance's restart sends it as it is now.
    Protocol,
    /// Anything else (the agent's own messages): the client cannot be told in-band, so the
    /// connection is closed once what was not lost has gone out.
    Other,
}

fn what_was_lost(message: &crate::Message) -> Lost {
    match protocol::server_frame_kind(message) {
        Some((kind, Some(id))) if kind == "rpc" => Lost::Answer(id),
        Some((kind, _)) if kind == "cf_agent_state" || kind == "cf_agent_mcp_servers" => {
            Lost::Protocol
        }
        _ => Lost::Other,
    }
}

impl Link {
    /// The output gate lost the writes some queued frames waited for (the store failed): they
    /// are dropped, as a Durable Object's output is when a write fails, except that each RPC
    /// call whose answer was among them is answered with an error instead (once), a close
    /// still closes, and a connection that lost messages of the agent's own is closed with
    /// 1011 after what was not lost.
    pub(super) fn answer_lost(&self, state: &mut State, commits: &GroupCommit, why: &str) {
        let mut queue = std::mem::take(&mut state.queue);
        let mut answered: Vec<String> = Vec::new();
        let mut lost_messages = false;
        while let Some(item) = queue.pop_front() {
            let item = match item {
                Outgoing::Message(message, after) if !commits.is_durable(after) => {
                    if !matches!(commits.settled(after), Settled::Lost(_)) {
                        state.queue.push_back(Outgoing::Message(message, after));
                        continue;
                    }
                    self.written(message.len());
                    let id = match what_was_lost(&message) {
                        Lost::Answer(id) if !answered.contains(&id) => id,
                        Lost::Answer(_) | Lost::Protocol => continue,
                        Lost::Other => {
                            lost_messages = true;
                            continue;
                        }
                    };
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
        if lost_messages {
            let reason = "Storage failed: messages were lost";
            let close = CloseFrame::new(close_code::INTERNAL_ERROR, reason);
            state.queue.push_back(Outgoing::Close(close, 0));
        }
    }
}
