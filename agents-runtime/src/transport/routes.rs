//! HTTP on the agent routes: `/agents/{agent}/{name}[/...]` to `on_request` or a WebSocket
//! upgrade, other paths to the static assets.

use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use http::{HeaderMap, Method, StatusCode, Uri};
use hyper::upgrade::OnUpgrade;
use tokio::sync::oneshot;
use warp::Filter;
use warp::filters::path::FullPath;
use warp::reply::Reply;

use crate::instance::Event;
use crate::request::Request;
use crate::transport::edge::Edge;
use crate::transport::reply::{text, with_default_content_type};
use crate::transport::stream::Switching;
use crate::transport::upgrade::{self, Upgrade};
use crate::wire::AGENT_UNAVAILABLE;

/// The first path segment of every agent route.
const PREFIX: &str = "agents";

pub(super) fn routes(
    edge: Arc<Edge>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = warp::Rejection>
+ Clone
+ Send
+ Sync
+ 'static {
    let query = warp::query::raw().or(warp::any().map(String::new)).unify();
    warp::method()
        .and(warp::path::full())
        .and(query)
        .and(warp::header::headers_cloned())
        .and(warp::ext::optional::<OnUpgrade>())
        .and(warp::ext::optional::<Switching>())
        .and(warp::body::stream())
        .then(move |method, path: FullPath, query: String, headers, upgrade, switching, body| {
            let edge = edge.clone();
            async move {
                let uri = match build_uri(path.as_str(), &query) {
                    Ok(uri) => uri,
                    Err(()) => return text(StatusCode::BAD_REQUEST, "Invalid request"),
                };
                let upgrade = Upgrade { on_upgrade: upgrade, switching };
                handle(edge, method, uri, headers, upgrade, body).await
            }
        })
}

async fn handle<B: Buf>(
    edge: Arc<Edge>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    upgrade: Upgrade,
    body: impl Stream<Item = Result<B, warp::Error>> + Send,
) -> warp::reply::Response {
    if uri.path() == crate::cluster::peers::LINK_PATH {
        return crate::transport::link::accept(&edge, &headers, upgrade);
    }
    let Some(route) = Route::parse(uri.path()) else {
        // Assets are plain HTTP: an upgrade there is answered like any other unknown path.
        if !upgrade::is_upgrade(&headers)
            && let Some(asset) = edge.assets.respond(&method, uri.path(), &headers)
        {
            return asset.into_response();
        }
        return text(StatusCode::NOT_FOUND, "Not found");
    };
    let Some(class) = edge.directory.classes.get(route.agent).copied() else {
        // Clients choose the path: not worth more than a debug line.
        tracing::debug!(agent = route.agent, "no agent is registered under this name");
        return text(StatusCode::BAD_REQUEST, "Invalid request");
    };
    let name = route.name.to_owned();
    if upgrade::is_upgrade(&headers) {
        return upgrade::upgrade(edge, class, name, method, uri, headers, upgrade);
    }
    let body = match read_body(&headers, body, edge.limits().max_request_body_size).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let mut request = Request::new(body);
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.headers_mut() = headers;
    let (reply, response) = oneshot::channel();
    let event = Event::Request { request: Box::new(request), reply };
    if edge.directory.dispatch(&class, &name, event).await.is_none() {
        return text(StatusCode::SERVICE_UNAVAILABLE, AGENT_UNAVAILABLE);
    }
    match response.await {
        Ok(response) => with_default_content_type(response).into_response(),
        // The instance dropped the request: its hook panicked.
        Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error"),
    }
}

/// `/agents/{agent}/{name}[/sub/path]`, raw (percent-encoded) segments, empty ones skipped.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Route<'a> {
    pub(super) agent: &'a str,
    pub(super) name: &'a str,
}

impl<'a> Route<'a> {
    pub(super) fn parse(path: &'a str) -> Option<Self> {
        let mut parts = path.split('/').filter(|part| !part.is_empty());
        if parts.next()? != PREFIX {
            return None;
        }
        Some(Self { agent: parts.next()?, name: parts.next()? })
    }
}

/// The agent and instance name of `path`, if it is an agent's route (for the fuzz targets).
#[cfg(feature = "fuzzing")]
pub(crate) fn agent_and_name(path: &str) -> Option<(&str, &str)> {
    Route::parse(path).map(|route| (route.agent, route.name))
}

fn build_uri(path: &str, query: &str) -> Result<Uri, ()> {
    let target = if query.is_empty() { path.to_owned() } else { format!("{path}?{query}") };
    target.parse().map_err(|_| ())
}

async fn read_body<B: Buf>(
    headers: &HeaderMap,
    body: impl Stream<Item = Result<B, warp::Error>> + Send,
    limit: usize,
) -> Result<Bytes, warp::reply::Response> {
    let too_large = || text(StatusCode::PAYLOAD_TOO_LARGE, "Payload Too Large");
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(too_large());
    }
    let mut body = std::pin::pin!(body);
    let mut collected = BytesMut::new();
    while let Some(chunk) = body.next().await {
        let mut chunk =
            chunk.map_err(|_| text(StatusCode::BAD_REQUEST, "Could not read the request body"))?;
        if collected.len() + chunk.remaining() > limit {
            return Err(too_large());
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            collected.extend_from_slice(part);
            let n = part.len();
            chunk.advance(n);
        }
    }
    Ok(collected.freeze())
}

#[cfg(test)]
mod tests {
    use super::Route;

    #[test]
    fn routes_need_prefix_agent_and_name() {
        let r = |agent, name| Some(Route { agent, name });
        assert_eq!(Route::parse("/agents/chat-room/r1"), r("chat-room", "r1"));
        assert_eq!(Route::parse("/agents/chat-room/r1/sub/path"), r("chat-room", "r1"));
        assert_eq!(Route::parse("/agents/a/my%20room"), r("a", "my%20room"));
        assert_eq!(Route::parse("//agents//a//b"), r("a", "b"));
        for outside in ["/", "/agents", "/agents/", "/agents/chat-room", "/api/x/y", "/Agents/a/b"]
        {
            assert_eq!(Route::parse(outside), None, "{outside}");
        }
    }

    mod properties {
        use proptest::prelude::*;

        use super::Route;

        proptest! {
            /// Any path is a route or not, never a panic; a route has an agent and a name,
            /// each one segment.
            #[test]
            fn any_path_parses_to_segments_or_nothing(path in "[/a-z%0-9.-]{0,60}|.{0,60}") {
                if let Some(route) = Route::parse(&path) {
                    for part in [route.agent, route.name] {
                        prop_assert!(!part.is_empty() && !part.contains('/'));
                    }
                    prop_assert!(path.contains("agents"));
                }
            }

            /// `/agents/{agent}/{name}[/rest]` is that agent and name, whatever follows.
            #[test]
            fn agent_routes_keep_their_segments(
                agent in "[a-z][a-z0-9-]{0,20}",
                name in "[A-Za-z0-9%._~-]{1,30}",
                rest in "(/[a-z0-9]{0,8}){0,3}",
            ) {
                let path = format!("/agents/{agent}/{name}{rest}");
                prop_assert_eq!(Route::parse(&path), Some(Route { agent: &agent, name: &name }));
            }
        }
    }
}
