//! The network edge, and the only module that knows warp: accept loop, routing
//! `/agents/{agent}/{name}[/...]`, HTTP requests to `on_request`, WebSocket upgrades.

mod io;
mod park;
mod reader;
mod socket;

pub(crate) use park::ParkingLot;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use http::{HeaderMap, Method, StatusCode, Uri};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use warp::Filter;
use warp::filters::path::FullPath;
use warp::reply::Reply;

use crate::host::Event;
use crate::server::Shared;

/// The first path segment of every agent route.
const PREFIX: &str = "agents";

/// How long a client may take to send a request's head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Accepts connections until `shutdown` completes.
pub(crate) async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    // Accepted sockets inherit these from the listener (Linux copies the listening socket's
    // options): set once here instead of five `setsockopt` calls per connection.
    if let Err(e) = socket_options(&listener) {
        tracing::warn!("could not set TCP_NODELAY and keepalive on the listener: {e}");
    }
    // The loop runs in a task of its own, not in the caller's: under `#[tokio::main]` that is
    // the main thread's `block_on`, which is no worker. There every accepted socket's
    // registration would be allocated in the main thread's arena, where nothing else reuses
    // the gaps its alignment leaves (about 200 bytes per connection), and every connection
    // task would be spawned from outside the workers.
    let (stop, stopped) = oneshot::channel();
    let mut accepting = tokio::spawn(accept(listener, shared, stopped));
    tokio::select! {
        () = shutdown => {}
        // The loop only ends when told to: this is a panic, which the caller hears of at once.
        ended = &mut accepting => return ended.map_err(std::io::Error::other),
    }
    // Dropping `stop` would end the loop too (its receiver then resolves with an error).
    let _ = stop.send(());
    accepting.await.map_err(std::io::Error::other)
}

/// Accepts connections and serves each in a task of its own, until `stop` says so.
async fn accept(listener: TcpListener, shared: Arc<Shared>, stop: oneshot::Receiver<()>) {
    let service = warp::service(routes(shared));
    let mut stop = std::pin::pin!(stop);
    loop {
        let (stream, _peer) = tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let service = TowerToHyperService::new(service.clone());
        tokio::spawn(async move {
            let served = hyper::server::conn::http1::Builder::new()
                // Slow or stalled request heads are cut off (hyper answers 408).
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await;
            if let Err(e) = served {
                tracing::debug!("http connection ended: {e}");
            }
        });
    }
}

/// Frames are small and latency matters more than packet count: no Nagle. Keepalive finds
/// peers that vanished without a FIN, so their connections do not stay open forever.
fn socket_options(socket: &impl std::os::fd::AsFd) -> std::io::Result<()> {
    let socket = socket2::SockRef::from(socket);
    socket.set_tcp_nodelay(true)?;
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(60))
        .with_interval(Duration::from_secs(10))
        .with_retries(3);
    socket.set_tcp_keepalive(&keepalive)
}

fn routes(
    shared: Arc<Shared>,
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
        .and(warp::body::stream())
        .then(move |method, path: FullPath, query: String, headers, upgrade, body| {
            let shared = shared.clone();
            async move {
                let uri = match build_uri(path.as_str(), &query) {
                    Ok(uri) => uri,
                    Err(()) => return text(StatusCode::BAD_REQUEST, "Invalid request"),
                };
                handle(shared, method, uri, headers, upgrade, body).await
            }
        })
}

async fn handle<B: Buf>(
    shared: Arc<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    upgrade: Option<OnUpgrade>,
    body: impl Stream<Item = Result<B, warp::Error>> + Send,
) -> warp::reply::Response {
    let Some(route) = Route::parse(uri.path()) else {
        // Assets are plain HTTP: an upgrade there is answered like any other unknown path.
        if !socket::is_upgrade(&headers)
            && let Some(asset) = shared.assets.respond(&method, uri.path(), &headers)
        {
            return asset.into_response();
        }
        return text(StatusCode::NOT_FOUND, "Not found");
    };
    let Some(class) = shared.classes.get(route.agent).copied() else {
        // Clients choose the path: not worth more than a debug line.
        tracing::debug!(agent = route.agent, "no agent is registered under this name");
        return text(StatusCode::BAD_REQUEST, "Invalid request");
    };
    let name = route.name.to_owned();
    if socket::is_upgrade(&headers) {
        return socket::upgrade(shared, class, name, method, uri, headers, upgrade);
    }
    let body = match read_body(&headers, body, shared.limits.max_request_body_size).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let mut request = crate::Request::new(body);
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.headers_mut() = headers;
    let (reply, response) = oneshot::channel();
    let event = Event::Request { request: Box::new(request), reply };
    if shared.instances.dispatch(&class, &name, &shared, event).await.is_none() {
        return text(StatusCode::SERVICE_UNAVAILABLE, "Agent unavailable");
    }
    match response.await {
        Ok(response) => response.into_response(),
        // The instance dropped the request: its hook panicked.
        Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error"),
    }
}

/// `/agents/{agent}/{name}[/sub/path]`, raw (percent-encoded) segments, empty ones skipped.
#[derive(Debug, PartialEq, Eq)]
struct Route<'a> {
    agent: &'a str,
    name: &'a str,
}

impl<'a> Route<'a> {
    fn parse(path: &'a str) -> Option<Self> {
        let mut parts = path.split('/').filter(|part| !part.is_empty());
        if parts.next()? != PREFIX {
            return None;
        }
        Some(Self { agent: parts.next()?, name: parts.next()? })
    }
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

fn text(status: StatusCode, body: &'static str) -> warp::reply::Response {
    let mut response = http::Response::new(Bytes::from_static(body.as_bytes()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response.into_response()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{Route, socket_options};

    /// The options are set on the listener only: an accepted socket must have them too.
    #[tokio::test]
    async fn accepted_sockets_inherit_nodelay_and_keepalive_from_the_listener() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        socket_options(&listener).unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        let accepted = socket2::SockRef::from(&accepted);
        assert!(accepted.tcp_nodelay().unwrap());
        assert!(accepted.keepalive().unwrap());
        assert_eq!(accepted.tcp_keepalive_time().unwrap(), Duration::from_secs(60));
        assert_eq!(accepted.tcp_keepalive_interval().unwrap(), Duration::from_secs(10));
    }

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
}
