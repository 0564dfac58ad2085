//! The WebSocket upgrade: the request checked and answered (101), the socket admitted, and its
//! connect event delivered before its task starts relaying.

use std::future::poll_fn;
use std::sync::Arc;

use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use hyper::upgrade::OnUpgrade;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use warp::reply::Reply;

use crate::instance::{AgentClass, ConnectRequest, ConnectionParts, Event, connection_id};
use crate::outbox::{Link, LinkHandle, SocketSlot};
use crate::request::{ConnectionContext, query_param};
use crate::transport::edge::Edge;
use crate::transport::reply::text;
use crate::transport::socket::{Joined, Socket, serve};
use crate::transport::stream::HttpStream;
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

/// Answers the upgrade (101) and starts the socket task, or says what is wrong with it.
pub(super) fn upgrade(
    edge: Arc<Edge>,
    class: AgentClass,
    name: String,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    on_upgrade: Option<OnUpgrade>,
) -> warp::reply::Response {
    let bad = |why: &'static str| text(StatusCode::BAD_REQUEST, why);
    if method != Method::GET {
        return bad("Invalid WebSocket upgrade: the method must be GET");
    }
    let has_upgrade_token = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    if !has_upgrade_token {
        return bad("Invalid WebSocket upgrade: `Connection: upgrade` is missing");
    }
    if headers.get(header::SEC_WEBSOCKET_VERSION).map(HeaderValue::as_bytes) != Some(b"13") {
        let mut response =
            text(StatusCode::UPGRADE_REQUIRED, "Unsupported WebSocket version: use 13");
        response
            .headers_mut()
            .insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        return response;
    }
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
        return bad("Invalid WebSocket upgrade: `Sec-WebSocket-Key` is missing");
    };
    if !is_valid_key(key.as_bytes()) {
        return bad("Invalid WebSocket upgrade: `Sec-WebSocket-Key` must be 16 bytes in base64");
    }
    let Some(on_upgrade) = on_upgrade else {
        return bad("Invalid WebSocket upgrade: the connection cannot be upgraded");
    };
    let Some(slot) = edge.admit_connection() else {
        tracing::warn!("refusing a WebSocket: max_connections reached");
        return text(StatusCode::SERVICE_UNAVAILABLE, "Too many connections");
    };
    let accept = derive_accept_key(key.as_bytes());
    let id = connection_id(query_param(uri.query(), "_pk").as_deref());
    let conn_ctx = ConnectionContext::new(method, uri, headers);
    let opening = Box::new(Opening { slot, on_upgrade, edge, class, name, id, conn_ctx });
    tokio::spawn(async move {
        // The task keeps only the relay for the socket's life: setting up runs in an
        // allocation of its own, freed before the relay starts.
        let Some(socket) = Box::pin(opening.open()).await else { return };
        serve(socket).await;
    });
    let mut response = http::Response::new(bytes::Bytes::new());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(accept) = HeaderValue::from_str(&accept) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    response.into_response()
}

/// What an accepted upgrade needs until its socket joins the instance.
struct Opening {
    slot: SocketSlot,
    on_upgrade: OnUpgrade,
    edge: Arc<Edge>,
    class: AgentClass,
    name: String,
    id: Arc<str>,
    conn_ctx: ConnectionContext,
}

impl Opening {
    /// Finishes the upgrade and delivers the connect event; `None` if the socket went away or
    /// the instance could not take it (the client is told to try again later).
    async fn open(self: Box<Self>) -> Option<Socket> {
        let Opening { mut slot, on_upgrade, edge, class, name, id, conn_ctx } = *self;
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(e) => {
                tracing::debug!("websocket upgrade failed: {e}");
                return None;
            }
        };
        // The server only serves TCP: this is the stream `transport::serve` gave hyper.
        let parts = match upgraded.downcast::<HttpStream>() {
            Ok(parts) => parts,
            Err(_) => {
                tracing::error!("websocket upgrade over a stream that is not TCP");
                return None;
            }
        };
        let (tcp, switching) = parts.io.into_parts();
        let tcp = Arc::new(tcp);
        let limits = edge.limits();
        let link = Arc::new(Link::new(limits.outbox_capacity, Some(tcp.clone())));
        // The 101 leaves with the connect turn's first frames (or ahead of anything else
        // written to the socket before that turn).
        link.hold_response(&switching);
        slot.list(&link);
        // Bytes the client sent right after the request head are its first frames.
        let read = parts.read_buf;
        let key = edge.directory.next_connection_key();
        let parts = ConnectionParts {
            key,
            id,
            uri: conn_ctx.url().into(),
            link: LinkHandle::new(link.clone()),
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
