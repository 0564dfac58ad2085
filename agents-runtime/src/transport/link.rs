//! The upgrade another node of the cluster dials for its link to this one (see
//! `cluster::peers`): checked against the cluster's secret, answered with 101, and the stream
//! handed to the node's links.

use std::sync::Arc;

use http::{HeaderMap, HeaderValue, StatusCode, header};
use warp::reply::Reply;

use crate::cluster::peers::LINK_PROTOCOL;
use crate::transport::edge::Edge;
use crate::transport::reply::text;
use crate::transport::stream::HttpStream;
use crate::transport::upgrade::Upgrade;

/// Answers a node's link upgrade: 404 outside cluster mode, 403 without the cluster's secret.
pub(super) fn accept(
    edge: &Arc<Edge>,
    headers: &HeaderMap,
    upgrade: Upgrade,
) -> warp::reply::Response {
    let Some(cluster) = &edge.directory.cluster else {
        return text(StatusCode::NOT_FOUND, "Not found");
    };
    let asked = headers.get(header::UPGRADE).and_then(|v| v.to_str().ok());
    if asked != Some(LINK_PROTOCOL) {
        return text(StatusCode::BAD_REQUEST, "Invalid request");
    }
    let Some(gateway) = cluster.peers.check(headers) else {
        tracing::warn!("refused a node link without the cluster's secret");
        return text(StatusCode::FORBIDDEN, "Forbidden");
    };
    let Some(on_upgrade) = upgrade.on_upgrade else {
        return text(StatusCode::BAD_REQUEST, "Invalid request");
    };
    let peers = cluster.peers.clone();
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else { return };
        let Ok(parts) = upgraded.downcast::<HttpStream>() else {
            tracing::error!("a node link over a stream that is not TCP");
            return;
        };
        let (tcp, _, unread) = parts.io.into_parts();
        let read = [&parts.read_buf[..], unread.as_slice()].concat();
        peers.serve(gateway, tcp, read);
    });
    let mut response = http::Response::new(bytes::Bytes::new());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    response.headers_mut().insert(header::UPGRADE, HeaderValue::from_static(LINK_PROTOCOL));
    response.into_response()
}
