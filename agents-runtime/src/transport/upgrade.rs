//! The WebSocket upgrade: the request checked and answered (101), the socket admitted, and its
//! connect event delivered before its task starts relaying.

use std::future::poll_fn;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use hyper::upgrade::OnUpgrade;
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use warp::reply::Reply;

use crate::instance::{AgentClass, ConnectRequest, ConnectionParts, Event, connection_id};
use crate::outbox::{Link, LinkHandle, SocketSlot};
use crate::request::{ConnectionContext, query_param};
use crate::transport::edge::Edge;
use crate::transport::reply::text;
use crate::transport::socket::{Joined, Socket, serve};
use crate::transport::stream::{HttpStream, Switching};
use crate::wire::frame::OP_CLOSE;
use crate::wire::handshake::is_valid_key;
use crate::wire::{CloseFrame, close_code};

/// `Upgrade: websocket` (case-insensitive), as Cloudflare tests it.
pub(super) fn is_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// What hyper gives a request for its upgrade.
pub(super) struct Upgrade {
    pub(super) on_upgrade: Option<OnUpgrade>,
    /// Raised with the 101, for the stream to hold it (see `transport::stream`).
    pub(super) switching: Option<Switching>,
}

/// Answers the upgrade (101) and starts the socket task, or says what is wrong with it.
pub(super) fn upgrade(
    edge: Arc<Edge>,
    class: AgentClass,
    name: String,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    upgrade: Upgrade,
) -> warp::reply::Response {
    let Upgrade { on_upgrade, switching } = upgrade;
    let accept = match check(&method, &headers) {
        Ok(accept) => accept,
        Err(refusal) => return refusal.response(),
    };
    let Some(on_upgrade) = on_upgrade else {
        return text(
            StatusCode::BAD_REQUEST,
            "Invalid WebSocket upgrade: the connection cannot be upgraded",
        );
    };
    let Some(slot) = edge.admit_connection() else {
        tracing::warn!("refusing a WebSocket: max_connections reached");
        return text(StatusCode::SERVICE_UNAVAILABLE, "Too many connections");
    };
    let opening =
        Opening::new(slot, edge, class, name, ConnectionContext::new(method, uri, headers));
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(e) => {
                tracing::debug!("websocket upgrade failed: {e}");
                return;
            }
        };
        // The server only serves TCP: this is the stream `transport::serve` gave hyper.
        let Ok(parts) = upgraded.downcast::<HttpStream>() else {
            tracing::error!("websocket upgrade over a stream that is not TCP");
            return;
        };
        let (tcp, switching, unread) = parts.io.into_parts();
        // hyper read from the front of `unread`: what it kept of that comes first.
        let read = if unread.is_empty() {
            parts.read_buf
        } else {
            [&parts.read_buf, unread.as_slice()].concat().into()
        };
        opening.upgraded(tcp, switching, read).run().await;
    });
    let mut response = http::Response::new(bytes::Bytes::new());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(accept) = HeaderValue::from_str(&accept) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    // The stream holds this 101 for the connect turn to write with its first frames.
    if let Some(switching) = switching {
        switching.hold();
    }
    response.into_response()
}

/// The handshake's checks (RFC 6455 §4.2.1) on a request that asks for an upgrade: the
/// `Sec-WebSocket-Accept` to answer with, or what is wrong.
pub(super) fn check(method: &Method, headers: &HeaderMap) -> Result<String, Refusal> {
    if method != Method::GET {
        return Err(Refusal::NotGet);
    }
    let has_upgrade_token = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    if !has_upgrade_token {
        return Err(Refusal::NoConnectionUpgrade);
    }
    if headers.get(header::SEC_WEBSOCKET_VERSION).map(HeaderValue::as_bytes) != Some(b"13") {
        return Err(Refusal::Version);
    }
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
        return Err(Refusal::NoKey);
    };
    if !is_valid_key(key.as_bytes()) {
        return Err(Refusal::BadKey);
    }
    Ok(derive_accept_key(key.as_bytes()))
}

/// What is wrong with an upgrade request.
#[derive(Clone, Copy, Debug)]
pub(super) enum Refusal {
    NotGet,
    NoConnectionUpgrade,
    Version,
    NoKey,
    BadKey,
}

impl Refusal {
    /// The answer: 400 with the reason, or 426 naming the version to use.
    fn response(self) -> warp::reply::Response {
        let why = match self {
            Refusal::NotGet => "Invalid WebSocket upgrade: the method must be GET",
            Refusal::NoConnectionUpgrade => {
                "Invalid WebSocket upgrade: `Connection: upgrade` is missing"
            }
            Refusal::NoKey => "Invalid WebSocket upgrade: `Sec-WebSocket-Key` is missing",
            Refusal::BadKey => {
                "Invalid WebSocket upgrade: `Sec-WebSocket-Key` must be 16 bytes in base64"
            }
            Refusal::Version => {
                let mut response =
                    text(StatusCode::UPGRADE_REQUIRED, "Unsupported WebSocket version: use 13");
                response
                    .headers_mut()
                    .insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
                return response;
            }
        };
        text(StatusCode::BAD_REQUEST, why)
    }
}

/// What an accepted upgrade needs until its socket joins the instance.
pub(super) struct Opening {
    slot: SocketSlot,
    edge: Arc<Edge>,
    class: AgentClass,
    name: String,
    id: Arc<str>,
    conn_ctx: ConnectionContext,
    /// The socket, once upgraded.
    upgraded: Option<Upgraded>,
}

/// A socket the upgrade gave: its 101 not written yet, and what the client sent after its
/// request head (its first frames).
struct Upgraded {
    tcp: TcpStream,
    switching: Vec<u8>,
    read: Bytes,
}

impl Opening {
    /// An upgrade admitted (`slot`) to instance `name` of `class`.
    pub(super) fn new(
        slot: SocketSlot,
        edge: Arc<Edge>,
        class: AgentClass,
        name: String,
        conn_ctx: ConnectionContext,
    ) -> Box<Self> {
        let id = connection_id(query_param(conn_ctx.uri().query(), "_pk").as_deref());
        Box::new(Opening { slot, edge, class, name, id, conn_ctx, upgraded: None })
    }

    /// The upgrade gave `tcp`: `switching` is its 101, not written yet, `read` what the
    /// client sent after its request head (its first frames).
    pub(super) fn upgraded(
        mut self: Box<Self>,
        tcp: TcpStream,
        switching: Vec<u8>,
        read: Bytes,
    ) -> Box<Self> {
        self.upgraded = Some(Upgraded { tcp, switching, read });
        self
    }

    /// The socket's life, once [`upgraded`](Self::upgraded).
    pub(super) async fn run(self: Box<Self>) {
        // The task keeps only the relay for the socket's life: setting up runs in an
        // allocation of its own, freed before the relay starts.
        let Some(socket) = Box::pin(self.open()).await else { return };
        serve(socket).await;
    }

    /// Delivers the connect event; `None` if the instance could not take the socket (the
    /// client is told to try again later).
    async fn open(self: Box<Self>) -> Option<Socket> {
        let Opening { mut slot, edge, class, name, id, conn_ctx, upgraded } = *self;
        let Upgraded { tcp, switching, read } = upgraded?;
        let tcp = Arc::new(tcp);
        let limits = edge.limits();
        let link = Arc::new(Link::new(limits.outbox_capacity, Some(tcp.clone())));
        slot.list(&link);
        // The 101 leaves with the connect turn's first frames (or ahead of anything else
        // written to the socket before that turn).
        link.hold_response(&switching);
        let key = edge.directory.next_connection_key();
        let parts = ConnectionParts {
            key,
            id,
            uri: conn_ctx.url().into(),
            link: LinkHandle::new(link.clone()).into(),
        };
        let connect = Event::Connect(Box::new(ConnectRequest { parts, conn_ctx }));
        let dispatched = edge.directory.dispatch(&class, &name, connect).await;
        let Some(instance) = dispatched else {
            // The instance could not be started (max_instances, shutting down, or it kept being
            // evicted under our feet): try again later.
            link.encode_control(
                OP_CLOSE,
                &CloseFrame::new(close_code::OUTBOX_FULL, "Server at capacity").payload(),
            );
            let _ = timeout(edge.limits().close_timeout, poll_fn(|cx| link.poll_flush(cx))).await;
            return None;
        };
        Some(Socket::new(Joined { tcp, link, instance, key, edge, slot }, &read))
    }
}
