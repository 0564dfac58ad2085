//! The host in cluster mode: before a turn it makes sure this node owns the instance
//! (acquiring it, and loading its data), or else relays its local sockets' events to the node
//! that does; as the owner it takes the events of sockets on other nodes (gateways), whose
//! frames go back through a route per gateway.
//!
//! An instance whose ownership ends here (the node's lease ran out, or the owner it relayed to
//! went away) closes its local sockets with 1013, so their clients connect again and find it
//! wherever it runs now; the agent struct is dropped without committing.

use std::collections::HashMap;
use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use tokio::sync::oneshot;

use super::Host;
use crate::agent::Agent;
use crate::agent::context::Kept;
use crate::cluster::frames::{Frame, Sink, Target};
use crate::cluster::{GatewayLink, Owner, OwnerLink};
use crate::error::Error;
use crate::instance::connection::{Connection, ConnectionKey, ConnectionParts};
use crate::instance::event::{ClusterEvent, ConnectRequest, Event};
use crate::instance::rpc::{Call, CallOutcome};
use crate::mcp::McpClients;
use crate::outbox::{Outlet, RemoteOutlet, Route};
use crate::request::{ConnectionContext, Response};
use crate::wire::close_code;

/// What the host of an instance knows of its place in the cluster.
#[derive(Default)]
pub(super) struct ClusterSide {
    /// The epoch this node owns the instance at, and the node's incarnation it was acquired
    /// under: a node that lost its lease and joined again owns nothing it had before.
    owned: Option<(i64, i64)>,
    /// The owner this node relays the instance's local sockets to.
    relay: Option<Relaying>,
    /// As the owner: a route per gateway link with sockets of this instance.
    routes: Vec<(u64, Arc<Route>)>,
    /// As the owner: the key of each socket on a gateway, by (link, the gateway's key).
    remote: HashMap<(u64, u64), ConnectionKey>,
    /// As a gateway: the requests and calls relayed to the owner, by id, waiting for answers.
    waiting: HashMap<u64, Waiting>,
    next_id: u64,
}

/// A relayed request or call's answer, to be sent where it is awaited.
enum Waiting {
    Request(oneshot::Sender<Response>),
    Call(oneshot::Sender<CallOutcome>),
}

struct Relaying {
    owner: Arc<OwnerLink>,
    /// The highest epoch the owner's frames carried: older ones come from a stale owner.
    epoch: i64,
}

/// Where an instance's turns run.
enum Placed {
    Here,
    Relayed,
    Unavailable(String),
}

impl<A: Agent> Host<A> {
    /// In cluster mode, what becomes of `event` before it is a turn here: a cluster event is
    /// handled (a gateway's frame becomes the event it stands for), and an event of this
    /// node's own goes on only if this node owns the instance (else it is relayed to the
    /// owner, or answered with why nobody can take it). `Some`: run it as a turn.
    pub(super) async fn place_event(&mut self, event: Event) -> Option<Event> {
        self.directory.cluster.as_ref()?;
        match event {
            Event::Cluster(event) => self.cluster_event(*event).await,
            // Only the owner has storage and MCP servers to look after.
            Event::StorageLost | Event::McpChanged => {
                self.cluster.as_ref().and_then(|side| side.owned).is_some().then_some(event)
            }
            event => match self.place().await {
                Placed::Here => Some(event),
                Placed::Relayed => {
                    self.relay(event);
                    None
                }
                Placed::Unavailable(why) => {
                    self.unavailable(event, &why);
                    None
                }
            },
        }
    }

    /// Makes sure this node owns the instance (acquired and loaded) or knows who does.
    async fn place(&mut self) -> Placed {
        let Some(cluster) = self.directory.cluster.clone() else { return Placed::Here };
        let side = self.cluster.get_or_insert_with(Box::default);
        if let Some((epoch, incarnation)) = side.owned {
            let namespace = self.instance.keys.namespace();
            if cluster.lease().holding() == Some(incarnation)
                && cluster.store.is_resident(namespace, epoch, incarnation)
            {
                return Placed::Here;
            }
            self.lose("this node's lease ran out");
        } else if let Some(relay) = &side.relay {
            if relay.owner.is_open() {
                return Placed::Relayed;
            }
            self.lose("the link to the agent's node ended");
        }
        match cluster.acquire(A::NAME, &self.name).await {
            Ok(Owner::Acquired { epoch, incarnation }) => {
                let owner = (&cluster.node.id, incarnation, epoch);
                let namespace = self.instance.keys.namespace();
                if let Err(e) = cluster.store.load(namespace, owner, (A::NAME, &self.name)).await {
                    let _ = cluster.release(A::NAME, &self.name, epoch).await;
                    return Placed::Unavailable(e.to_string());
                }
                tracing::debug!(agent = A::NAME, name = %self.name, epoch, "acquired");
                self.cluster_side().owned = Some((epoch, incarnation));
                Placed::Here
            }
            Ok(Owner::Other { holder, addr }) => {
                match cluster.peers.owner(&holder.node, holder.incarnation, &addr).await {
                    Ok(owner) => {
                        self.cluster_side().relay = Some(Relaying { owner, epoch: 0 });
                        Placed::Relayed
                    }
                    Err(e) => {
                        Placed::Unavailable(format!("the agent runs on node {}: {e}", holder.node))
                    }
                }
            }
            Err(e) => Placed::Unavailable(e.to_string()),
        }
    }

    fn cluster_side(&mut self) -> &mut ClusterSide {
        self.cluster.get_or_insert_with(Box::default)
    }

    /// This node's part in the instance ends (`why`): the agent is dropped uncommitted, local
    /// sockets are closed with 1013 (their clients reconnect), sockets elsewhere forgotten.
    fn lose(&mut self, why: &str) {
        if let Some(awake) = self.awake.take() {
            Kept { connections: self.asleep, mcp: self.mcp } = awake.ctx.into_kept();
            drop(awake.agent);
            self.instance.corks.trim();
        }
        self.mcp = McpClients::default();
        self.hibernated = None;
        let keys: Vec<ConnectionKey> = self.asleep.every().map(Connection::key).collect();
        for key in keys {
            if let Some(conn) = self.asleep.remove(key) {
                if let Some(link) = conn.link() {
                    // What is queued for it is dropped: it came from a turn this node may no
                    // longer speak for.
                    link.release_response();
                    let reason = crate::wire::truncate_reason(why).to_owned();
                    link.force_close(crate::wire::CloseFrame {
                        code: close_code::TRY_AGAIN_LATER,
                        reason,
                    });
                }
                conn.mark_closed();
            }
        }
        for (_, waiting) in self.cluster_side().waiting.drain() {
            match waiting {
                Waiting::Request(reply) => {
                    let _ = reply.send(unavailable_response(why));
                }
                Waiting::Call(reply) => {
                    let _ = reply.send(CallOutcome::Error(why.to_owned()));
                }
            }
        }
        tracing::warn!(agent = A::NAME, name = %self.name, "left this node: {why}");
        *self.cluster_side() = ClusterSide::default();
    }

    /// Sends a local socket's event to the owner this node relays to.
    fn relay(&mut self, event: Event) {
        let (agent, name) = (A::NAME.to_owned(), self.name.to_string());
        let frame = match event {
            Event::Connect(request) => {
                let ConnectRequest { parts, conn_ctx } = *request;
                let conn = Connection::new(parts, self.instance.clone());
                if let Some(link) = conn.link() {
                    link.release_response();
                }
                let headers = headers_of(conn_ctx.headers());
                let frame = Frame::Connect {
                    agent,
                    name,
                    conn: conn.key(),
                    id: conn.id().to_owned(),
                    uri: conn_ctx.uri().to_string(),
                    headers,
                };
                self.asleep.insert(conn);
                frame
            }
            Event::Message { key, message } => {
                let Some(conn) = self.asleep.get(key) else { return };
                if let Some(link) = conn.link() {
                    link.took_inbound(message.len(), self.directory.limits.max_message_size);
                }
                Frame::Message { agent, name, conn: key, message }
            }
            Event::Close { key, code, reason, was_clean } => {
                let Some(conn) = self.asleep.remove(key) else { return };
                conn.mark_closed();
                Frame::Close { agent, name, conn: key, code, reason, clean: was_clean }
            }
            Event::Error { key, error } => {
                Frame::Error { agent, name, conn: key, error: error.to_string() }
            }
            Event::Request { request, reply } => {
                let id = self.wait(Waiting::Request(reply));
                let (parts, body) = request.into_parts();
                Frame::Request {
                    agent,
                    name,
                    id,
                    method: parts.method.to_string(),
                    uri: parts.uri.to_string(),
                    headers: headers_of(&parts.headers),
                    body,
                }
            }
            Event::Call { call, reply } => {
                let args = serde_json::Value::Array(call.args).to_string();
                let id = self.wait(Waiting::Call(reply));
                Frame::Call { agent, name, id, method: call.method, args }
            }
            // Its owner runs its alarms.
            Event::Alarm => return,
            other => return self.unavailable(other, "not an event for another node"),
        };
        let sent = self
            .cluster
            .as_ref()
            .and_then(|side| side.relay.as_ref())
            .is_some_and(|relay| relay.owner.send(&frame));
        if !sent {
            self.lose("the link to the agent's node ended");
        }
    }

    /// Answers an event nobody can take now with `why`.
    fn unavailable(&mut self, event: Event, why: &str) {
        tracing::info!(agent = A::NAME, name = %self.name, "unavailable: {why}");
        match event {
            Event::Connect(request) => {
                let conn =
                    Connection::<A::ConnectionState>::new(request.parts, self.instance.clone());
                if let Some(link) = conn.link() {
                    link.release_response();
                }
                let _ = conn.close(close_code::TRY_AGAIN_LATER, why);
            }
            Event::Message { key, message } => {
                self.unheard(key, &message, &Error::msg(why.to_owned()))
            }
            Event::Close { key, .. } => {
                if let Some(conn) = self.asleep.remove(key) {
                    conn.mark_closed();
                }
            }
            Event::Request { reply, .. } => {
                let _ = reply.send(unavailable_response(why));
            }
            Event::Call { reply, .. } => {
                let _ = reply.send(CallOutcome::Error(why.to_owned()));
            }
            _ => {}
        }
    }

    /// A cluster event; `Some`: the event a gateway's frame stands for, to run as a turn.
    async fn cluster_event(&mut self, event: ClusterEvent) -> Option<Event> {
        match event {
            ClusterEvent::FromOwner(owner, frame) => {
                self.owner_frame(&owner, frame);
                None
            }
            ClusterEvent::OwnerLost(owner) => {
                let relaying = self.cluster.as_ref().and_then(|side| side.relay.as_ref());
                if relaying.is_some_and(|relay| relay.owner.node == owner) {
                    self.lose("the link to the agent's node ended");
                }
                None
            }
            ClusterEvent::Fenced => {
                if self.cluster.as_ref().is_some_and(|side| side.owned.is_some()) {
                    self.lose("this node's lease ran out");
                }
                None
            }
            ClusterEvent::FromGateway(link, frame) => self.gateway_frame(link, frame).await,
            ClusterEvent::GatewayLost(link) => {
                self.gateway_lost(&link).await;
                None
            }
        }
    }

    /// As a gateway: what the owner sends this node's sockets.
    fn owner_frame(&mut self, owner: &str, frame: Frame) {
        let Some(relay) = self.cluster.as_mut().and_then(|side| side.relay.as_mut()) else {
            return;
        };
        if &*relay.owner.node != owner {
            return;
        }
        match frame {
            Frame::Send { epoch, target, message, .. } if epoch >= relay.epoch => {
                relay.epoch = epoch;
                let keys = match &target {
                    Target::One(key) => std::slice::from_ref(key),
                    Target::Some(keys) => keys.as_slice(),
                };
                for key in keys {
                    if let Some(conn) = self.asleep.get(*key) {
                        let _ = conn.send(message.clone());
                    }
                }
            }
            Frame::CloseConn { epoch, conn, code, reason, .. } if epoch >= relay.epoch => {
                relay.epoch = epoch;
                if let Some(conn) = self.asleep.get(conn) {
                    let _ = conn.close(code, &reason);
                }
            }
            Frame::NotOwner { .. } => self.lose("the agent moved to another node"),
            Frame::Response { id, status, headers, body, .. } => {
                if let Some(Waiting::Request(reply)) = self.cluster_side().waiting.remove(&id) {
                    let mut response = Response::new(body);
                    *response.status_mut() =
                        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
                    *response.headers_mut() = header_map(headers);
                    let _ = reply.send(response);
                }
            }
            Frame::Outcome { id, kind, payload, .. } => {
                if let Some(Waiting::Call(reply)) = self.cluster_side().waiting.remove(&id) {
                    let _ = reply.send(outcome_of(kind, payload));
                }
            }
            _ => {}
        }
    }

    /// Keeps `waiting` for its answer; the id the owner answers it by.
    fn wait(&mut self, waiting: Waiting) -> u64 {
        let side = self.cluster_side();
        side.next_id += 1;
        side.waiting.insert(side.next_id, waiting);
        side.next_id
    }

    /// As the owner: a gateway's frame about one of its sockets, as the event it stands for.
    async fn gateway_frame(&mut self, link: Arc<GatewayLink>, frame: Frame) -> Option<Event> {
        let (agent, name) = (A::NAME.to_owned(), self.name.to_string());
        let (epoch, incarnation) = match self.place().await {
            Placed::Here => self.cluster.as_ref().and_then(|side| side.owned)?,
            _ => {
                link.answer(&Frame::NotOwner { agent, name });
                return None;
            }
        };
        let lease = self.directory.cluster.as_ref()?.node.lease.clone();
        let side = self.cluster_side();
        match frame {
            Frame::Connect { conn, id, uri, headers, .. } => {
                let route = match side.routes.iter().find(|(id, _)| *id == link.id) {
                    Some((_, route)) => route.clone(),
                    None => {
                        let sink: Arc<dyn Sink> = link.clone();
                        let instance = (A::NAME.into(), self.name.clone(), epoch);
                        let commits = self.directory.commits.clone();
                        let route = Route::new(instance, (lease, incarnation), commits, sink);
                        self.cluster_side().routes.push((link.id, route.clone()));
                        route
                    }
                };
                let key = self.directory.next_connection_key();
                self.cluster_side().remote.insert((link.id, conn), key);
                let conn_ctx = connection_context(&uri, headers);
                let link = Outlet::Remote(Box::new(RemoteOutlet { route, conn }));
                let parts =
                    ConnectionParts { key, id: id.into(), uri: conn_ctx.url().into(), link };
                Some(Event::Connect(Box::new(ConnectRequest { parts, conn_ctx })))
            }
            Frame::Message { conn, message, .. } => match side.remote.get(&(link.id, conn)) {
                Some(&key) => Some(Event::Message { key, message }),
                None => {
                    // A socket this owner does not know (it lost and took the agent again):
                    // the gateway closes it, and its client connects afresh.
                    let reason = "the agent moved".to_owned();
                    link.send(Frame::CloseConn {
                        agent,
                        name,
                        epoch,
                        conn,
                        code: close_code::TRY_AGAIN_LATER,
                        reason,
                    });
                    None
                }
            },
            Frame::Close { conn, code, reason, clean, .. } => {
                let key = side.remote.remove(&(link.id, conn))?;
                if !side.remote.keys().any(|(id, _)| *id == link.id) {
                    // The gateway's last socket of this instance: its route goes, and the link
                    // forgets the instance.
                    side.routes.retain(|(id, _)| *id != link.id);
                    crate::sync::lock(&link.instances).remove(&(A::NAME, name));
                }
                Some(Event::Close { key, code, reason, was_clean: clean })
            }
            Frame::Error { conn, error, .. } => {
                let key = *side.remote.get(&(link.id, conn))?;
                Some(Event::Error { key, error: Error::msg(error) })
            }
            frame @ (Frame::Request { .. } | Frame::Call { .. }) => answered_on(link, frame),
            _ => None,
        }
    }

    /// As the owner: a gateway's link ended, and its sockets with it (`on_close`, 1006).
    async fn gateway_lost(&mut self, link: &GatewayLink) {
        let side = self.cluster_side();
        side.routes.retain(|(id, _)| *id != link.id);
        let keys: Vec<ConnectionKey> =
            side.remote.iter().filter(|((id, _), _)| *id == link.id).map(|(_, key)| *key).collect();
        side.remote.retain(|(id, _), _| *id != link.id);
        for key in keys {
            let closed = Event::Close {
                key,
                code: close_code::ABNORMAL_CLOSURE,
                reason: "the node holding the socket went away".into(),
                was_clean: false,
            };
            self.handle(closed).await;
        }
    }

    /// After the instance left memory: its writes committed, it lets go of its data and of
    /// its row, so the next event acquires it anywhere.
    pub(super) async fn leave_cluster(&mut self) {
        let Some(cluster) = self.directory.cluster.clone() else { return };
        let Some((epoch, _)) = self.cluster.as_mut().and_then(|side| side.owned.take()) else {
            return;
        };
        let last = self.instance.gate.last_write();
        self.instance.gate.settled(last).await;
        let namespace = self.instance.keys.namespace();
        let mut unloaded = cluster.store.unload(namespace, epoch);
        for _ in 0..100 {
            if unloaded.is_ok() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            unloaded = cluster.store.unload(namespace, epoch);
        }
        if let Err(e) = unloaded {
            // Its writes need its fence: it stays this node's until its lease says otherwise.
            tracing::warn!(agent = A::NAME, name = %self.name, "keeping the agent: {e}");
            return;
        }
        if let Err(e) = cluster.release(A::NAME, &self.name, epoch).await {
            tracing::warn!(agent = A::NAME, name = %self.name, "letting go of the agent failed (its lease will): {e}");
        }
    }
}

/// A gateway's HTTP request or call, as the event whose answer goes back on `link`.
fn answered_on(link: Arc<GatewayLink>, frame: Frame) -> Option<Event> {
    match frame {
        Frame::Request { agent, name, id, method, uri, headers, body } => {
            let mut request = crate::request::Request::new(body);
            *request.method_mut() = Method::from_bytes(method.as_bytes()).unwrap_or(Method::GET);
            *request.uri_mut() = uri.parse().unwrap_or_else(|_| Uri::from_static("/"));
            *request.headers_mut() = header_map(headers);
            let (reply, answer) = oneshot::channel::<Response>();
            tokio::spawn(async move {
                let Ok(response) = answer.await else { return };
                let (parts, body) = response.into_parts();
                let status = parts.status.as_u16();
                let headers = headers_of(&parts.headers);
                link.send(Frame::Response { agent, name, id, status, headers, body });
            });
            Some(Event::Request { request: Box::new(request), reply })
        }
        Frame::Call { agent, name, id, method, args } => {
            let args = match serde_json::from_str(&args) {
                Ok(serde_json::Value::Array(args)) => args,
                _ => Vec::new(),
            };
            let (reply, answer) = oneshot::channel::<CallOutcome>();
            tokio::spawn(async move {
                let Ok(outcome) = answer.await else { return };
                let (kind, payload) = outcome_frame(outcome);
                link.send(Frame::Outcome { agent, name, id, kind, payload });
            });
            Some(Event::Call { call: Call { method, args, stream: None }, reply })
        }
        _ => None,
    }
}

/// A 503 saying `why`.
fn unavailable_response(why: &str) -> Response {
    let mut response = Response::new(why.to_owned().into());
    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    response
}

/// Headers as a link carries them.
fn headers_of(headers: &HeaderMap) -> Vec<(String, Vec<u8>)> {
    headers
        .iter()
        .map(|(name, value)| (name.as_str().to_owned(), value.as_bytes().to_vec()))
        .collect()
}

/// Headers from a link (any that are not valid HTTP are dropped).
fn header_map(headers: Vec<(String, Vec<u8>)>) -> HeaderMap {
    let mut map = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::from_bytes(&value))
        {
            map.append(name, value);
        }
    }
    map
}

/// A call's outcome as an `Outcome` frame's kind and payload.
fn outcome_frame(outcome: CallOutcome) -> (u8, String) {
    match outcome {
        CallOutcome::Value(Some(value)) => (0, value.to_string()),
        CallOutcome::Value(None) => (1, String::new()),
        CallOutcome::Error(message) => (2, message),
        CallOutcome::NotFound => (3, String::new()),
        CallOutcome::NotCallable => (4, String::new()),
        CallOutcome::Streamed => {
            (2, "a streaming method cannot be called on an agent on another node".into())
        }
    }
}

/// An `Outcome` frame's call outcome.
fn outcome_of(kind: u8, payload: String) -> CallOutcome {
    match kind {
        0 => serde_json::from_str(&payload)
            .map_or_else(|e| CallOutcome::Error(e.to_string()), |v| CallOutcome::Value(Some(v))),
        1 => CallOutcome::Value(None),
        3 => CallOutcome::NotFound,
        4 => CallOutcome::NotCallable,
        _ => CallOutcome::Error(payload),
    }
}

/// The upgrade request a gateway saw, as a connect turn reads it.
fn connection_context(target: &str, headers: Vec<(String, Vec<u8>)>) -> ConnectionContext {
    let uri: Uri = target.parse().unwrap_or_else(|_| Uri::from_static("/"));
    let mut map = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::from_bytes(&value))
        {
            map.append(name, value);
        }
    }
    ConnectionContext::new(Method::GET, uri, map)
}
