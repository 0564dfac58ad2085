//! [`Event`]: what reaches an instance's mailbox.

use std::sync::Arc;

use tokio::sync::oneshot;

use crate::cluster::GatewayLink;
use crate::cluster::frames::Frame;
use crate::error::Error;
use crate::instance::rpc::{Call, CallOutcome};
use crate::message::Message;
use crate::outbox::Outlet;
use crate::request::{ConnectionContext, Request, Response};

/// What reaches an instance's mailbox.
pub(crate) enum Event {
    /// A socket finished its upgrade. Its later events queue behind this one, so its
    /// `on_message` never runs before its `on_connect` has finished.
    Connect(Box<ConnectRequest>),
    Message {
        key: ConnectionKey,
        message: Message,
    },
    Close {
        key: ConnectionKey,
        code: u16,
        reason: String,
        was_clean: bool,
    },
    Error {
        key: ConnectionKey,
        error: Error,
    },
    /// Boxed: HTTP is rare next to messages, and every mailbox slot is as big as the largest
    /// variant.
    Request {
        request: Box<Request>,
        reply: oneshot::Sender<Response>,
    },
    /// An in-process call from an [`AgentStub`](crate::AgentStub).
    Call {
        call: Call,
        reply: oneshot::Sender<CallOutcome>,
    },
    /// The instance's alarm is due (its own, a schedule's, or queued work): what is due runs.
    Alarm,
    /// The store gave up on writes (a full disk): an instance that made some of them
    /// restarts from what is durable (every turn looks first; this wakes an idle one).
    StorageLost,
    /// A connection to one of its MCP servers changed state: the end of the turn broadcasts
    /// the new `cf_agent_mcp_servers` frame.
    McpChanged,
    /// Cluster mode: what the links between nodes bring (boxed: rare next to messages).
    Cluster(Box<ClusterEvent>),
}

/// What reaches an instance from the other nodes of a cluster.
pub(crate) enum ClusterEvent {
    /// As the owner: a frame from a gateway's link about one of its sockets.
    FromGateway(Arc<GatewayLink>, Frame),
    /// As the owner: a gateway's link ended, and its sockets with it.
    GatewayLost(Arc<GatewayLink>),
    /// As a gateway: a frame from the owner for this node's sockets.
    FromOwner(Arc<str>, Frame),
    /// As a gateway: the link to this owner ended.
    OwnerLost(Arc<str>),
    /// The node's lease ran out: whatever it owns is not its own any more.
    Fenced,
}

impl Event {
    /// The instance is in a turn that waits for something, ahead of this event: a connect
    /// does not hold its socket's 101 back for its own turn (the socket task writes it now).
    pub(crate) fn heard_late(&self) {
        if let Event::Connect(request) = self
            && let Some(link) = request.parts.link.local()
        {
            link.release_response();
        }
    }
}

/// The runtime's handle on one connection, unique within the process.
pub(crate) type ConnectionKey = u64;

/// What a connection is made of when its socket joins the instance.
pub(crate) struct ConnectionParts {
    pub(crate) key: ConnectionKey,
    pub(crate) id: Arc<str>,
    pub(crate) uri: Box<str>,
    pub(crate) link: Outlet,
}

pub(crate) struct ConnectRequest {
    pub(crate) parts: ConnectionParts,
    pub(crate) conn_ctx: ConnectionContext,
}
