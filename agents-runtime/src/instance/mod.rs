//! Live instances: one per `(agent, name)`, with its connections, state, auto-response and
//! RPC, and the directory that finds or starts them.
//!
//! This layer runs no agent code: it holds what an instance's turns, its sockets and the
//! network edge share. The agent layer above drives it.

pub(crate) mod alarm_clock;
pub(crate) mod auto_response;
pub(crate) mod connection;
pub(crate) mod connections;
pub(crate) mod directory;
pub(crate) mod event;
pub(crate) mod inbound;
pub(crate) mod log_budget;
pub(crate) mod mailbox;
pub(crate) mod rpc;
pub(crate) mod shared;
pub(crate) mod state;
pub(crate) mod tags;

pub(crate) use connection::{ConnectionKey, ConnectionParts, connection_id};
pub(crate) use directory::{AgentClass, Directory};
pub(crate) use event::{ClusterEvent, ConnectRequest, Event};
pub(crate) use shared::Instance;
