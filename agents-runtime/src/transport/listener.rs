//! The accept loop: every accepted TCP connection is an upgrade taken at once (see
//! [`direct`](super::direct)), or is served over HTTP/1.1 by hyper, with the routes of
//! [`routes`](super::routes).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::{self, Either};
use hyper::body::Incoming;
use hyper::service::Service;
use hyper_util::rt::TokioTimer;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

use crate::transport::direct::{self, First};
use crate::transport::edge::Edge;
use crate::transport::routes::routes;
use crate::transport::stream::HttpStream;

/// How many finished TCP handshakes may wait for `accept` (Linux caps it at
/// `net.core.somaxconn`, 4096 by default). The standard library's 128 overflows in a reconnect
/// storm: a client whose handshake finds the queue full is dropped and retries its SYN a
/// second later.
const BACKLOG: u32 = 4096;

/// Binds a listener on the first of `addr`'s addresses that takes it, with [`BACKLOG`] and
/// `SO_REUSEADDR` (a restarted server binds while its old connections are in `TIME_WAIT`).
pub(crate) async fn bind(addr: impl tokio::net::ToSocketAddrs) -> std::io::Result<TcpListener> {
    let mut last = None;
    for addr in tokio::net::lookup_host(addr).await? {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()
        } else {
            tokio::net::TcpSocket::new_v6()
        };
        let bound = socket.and_then(|socket| {
            socket.set_reuseaddr(true)?;
            socket.bind(addr)?;
            socket.listen(BACKLOG)
        });
        match bound {
            Ok(listener) => return Ok(listener),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "the address resolved to nothing")
    }))
}

/// Accepts connections until `shutdown` completes.
pub(crate) async fn serve(
    listener: TcpListener,
    edge: Arc<Edge>,
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
    // the gaps its alignment leaves, and every connection
    // task would be spawned from outside the workers.
    let (stop, stopped) = oneshot::channel();
    let mut accepting = tokio::spawn(accept(listener, edge, stopped));
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
async fn accept(listener: TcpListener, edge: Arc<Edge>, stop: oneshot::Receiver<()>) {
    let mut stop = std::pin::pin!(stop);
    let mut failures = AcceptFailures::default();
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => match accepted {
                Ok(pair) => {
                    failures.recovered();
                    pair
                }
                Err(e) => {
                    // Out of file descriptors (EMFILE, ENFILE) or memory: the connection waits
                    // in the backlog while the loop backs off, instead of spinning.
                    let pause = failures.failed(&e);
                    tokio::time::sleep(pause).await;
                    continue;
                }
            },
        };
        if let Err(e) = keep_alive(&stream, peer) {
            tracing::debug!("could not turn keepalive on for {peer}: {e}");
        }
        tokio::spawn(connection(stream, edge.clone()));
    }
}

/// One connection: an upgrade taken without hyper ([`direct`]), or else HTTP/1.1 served by
/// hyper, with the routes of [`routes`]. Its first bytes are waited for here, within the
/// request head timeout (a client sends its request right after connecting, usually after
/// the server accepted). Built from combinators, not as one `async fn`: the task of an
/// upgraded socket is then the size of its relay, where an `async fn` would also keep room
/// for the wait and its arguments for the socket's life.
fn connection(stream: TcpStream, edge: Arc<Edge>) -> impl Future<Output = ()> + Send {
    let now = tokio::time::Instant::now();
    // A timeout too large to add (`Duration::MAX`) is a year: no panic in the accept loop.
    let deadline = now
        .checked_add(edge.limits().request_head_timeout)
        .unwrap_or_else(|| now + Duration::from_secs(365 * 24 * 3600));
    async move {
        let (mut stream, mut edge) = (stream, edge);
        loop {
            // Nothing in time (hyper would have closed it too), or the socket failed.
            let Ok(Ok(())) = tokio::time::timeout_at(deadline, stream.readable()).await else {
                return First::Gone;
            };
            // A new socket can read as readable before anything came.
            match direct::first_read(stream, edge) {
                Ok(first) => return first,
                Err(nothing_yet) => (stream, edge) = nothing_yet,
            }
        }
    }
    .then(|first| match first {
        First::Upgrade(opening) => Either::Left(opening.run()),
        First::Http(stream, read, edge) => Either::Right(http(HttpStream::new(stream, read), edge)),
        First::Gone => Either::Right(Box::pin(future::ready(())) as Pin<Box<_>>),
    })
}

/// Serves `stream` over HTTP/1.1 (boxed: hyper's connection is large, and the task of a
/// socket [`direct`] upgrades does not carry it).
fn http(stream: HttpStream, edge: Arc<Edge>) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(serve_http(stream, edge))
}

async fn serve_http(stream: HttpStream, edge: Arc<Edge>) {
    let limits = edge.limits();
    let (max_head, head_timeout) = (limits.max_request_head_size, limits.request_head_timeout);
    let routes = TowerToHyperService::new(warp::service(routes(edge)));
    // Every request carries the stream's flag, which the upgrade route raises with its 101.
    let switching = stream.switching();
    let service = hyper::service::service_fn(move |mut request: http::Request<Incoming>| {
        request.extensions_mut().insert(switching.clone());
        routes.call(request)
    });
    let served = hyper::server::conn::http1::Builder::new()
        // Slow or stalled request heads are cut off (hyper answers 408).
        .timer(TokioTimer::new())
        .header_read_timeout(head_timeout)
        // A request head past this gets 431, and no more of it is kept.
        .max_header_size(max_head)
        .max_buf_size(max_head)
        .serve_connection(stream, service)
        .with_upgrades()
        .await;
    if let Err(e) = served {
        tracing::debug!("http connection ended: {e}");
    }
}

/// Accept errors in a row: how long to pause, and a log line at most once a second.
#[derive(Default)]
struct AcceptFailures {
    /// Failures in a row; 0 while accepting works.
    in_a_row: u32,
    /// When the last line was logged, and the failures since then.
    logged: Option<std::time::Instant>,
    unlogged: u64,
}

impl AcceptFailures {
    /// One more failure: logs it unless a line went out less than a second ago, and returns
    /// the pause before the next try (10 ms, doubling up to 1 s while the failures go on).
    fn failed(&mut self, error: &std::io::Error) -> Duration {
        self.in_a_row = self.in_a_row.saturating_add(1);
        self.unlogged += 1;
        let now = std::time::Instant::now();
        if self.logged.is_none_or(|at| now - at >= Duration::from_secs(1)) {
            let failures = std::mem::take(&mut self.unlogged);
            tracing::warn!(
                failures,
                "accept failed: {error} (new connections wait in the backlog)"
            );
            self.logged = Some(now);
        }
        Duration::from_millis(10 << self.in_a_row.min(7).saturating_sub(1))
            .min(Duration::from_secs(1))
    }

    /// Accepting works again.
    fn recovered(&mut self) {
        if self.in_a_row > 0 {
            tracing::info!(failures = self.unlogged, "accepting connections again");
            *self = Self::default();
        }
    }
}

/// Frames are small and latency matters more than packet count: no Nagle. Keepalive's
/// timing (60 s idle, then a probe every 10 s, 3 unanswered close the connection) is set
/// here for accepted sockets to inherit, but not keepalive itself: [`keep_alive`] turns it
/// on for the peers that need it.
fn socket_options(socket: &impl std::os::fd::AsFd) -> std::io::Result<()> {
    let socket = socket2::SockRef::from(socket);
    socket.set_tcp_nodelay(true)?;
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(60))
        .with_interval(Duration::from_secs(10))
        .with_retries(3);
    socket.set_tcp_keepalive(&keepalive)?;
    socket.set_keepalive(false)
}

/// Keepalive finds peers that vanished without a FIN (a machine switched off, a network
/// gone), so their connections do not stay open forever. A peer on this machine (loopback: a
/// proxy on the same host, a test, a benchmark) cannot vanish that way, since the kernel
/// closes its end, so its socket gets no probes. This matters: sockets that connected in the
/// same second (a reconnect storm) send their probes in the same second, and over loopback
/// the kernel drops the packets past `net.core.netdev_max_backlog` (1,000), then closes live
/// connections whose probes all went unanswered.
fn keep_alive(socket: &impl std::os::fd::AsFd, peer: std::net::SocketAddr) -> std::io::Result<()> {
    if peer.ip().to_canonical().is_loopback() {
        return Ok(());
    }
    socket2::SockRef::from(socket).set_keepalive(true)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{bind, keep_alive, socket_options};

    /// A reconnect storm must not find the accept queue full: the listener's backlog is
    /// [`BACKLOG`](super::BACKLOG), not the standard library's 128.
    #[tokio::test]
    async fn the_listener_queues_a_storm_of_handshakes() {
        let listener = bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // Nothing accepts: every handshake completes into the queue.
        let mut clients = Vec::new();
        for n in 0..600 {
            // A dropped SYN is retried after a second: with a short queue, this times out.
            let connect = tokio::net::TcpStream::connect(addr);
            let client = tokio::time::timeout(Duration::from_millis(500), connect).await;
            clients.push(client.unwrap_or_else(|_| panic!("handshake {n} was dropped")).unwrap());
        }
        let mut accepted = 0;
        while let Ok(Ok(_)) =
            tokio::time::timeout(Duration::from_millis(200), listener.accept()).await
        {
            accepted += 1;
        }
        assert_eq!(accepted, 600);
    }

    /// The options are set on the listener only: an accepted socket must have them too.
    /// Keepalive itself is on for remote peers only.
    #[tokio::test]
    async fn accepted_sockets_inherit_nodelay_and_keepalive_timing_from_the_listener() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        socket_options(&listener).unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (accepted, peer) = listener.accept().await.unwrap();
        keep_alive(&accepted, peer).unwrap();
        let socket = socket2::SockRef::from(&accepted);
        assert!(socket.tcp_nodelay().unwrap());
        assert!(!socket.keepalive().unwrap(), "a loopback peer gets no probes");
        // As a remote peer would: the timing set on the listener applies.
        let remote = "192.0.2.1:40000".parse().unwrap();
        keep_alive(&accepted, remote).unwrap();
        assert!(socket.keepalive().unwrap());
        assert_eq!(socket.tcp_keepalive_time().unwrap(), Duration::from_secs(60));
        assert_eq!(socket.tcp_keepalive_interval().unwrap(), Duration::from_secs(10));
        assert_eq!(socket.tcp_keepalive_retries().unwrap(), 3);
        let mapped = "[::ffff:127.0.0.1]:40000".parse().unwrap();
        socket.set_keepalive(false).unwrap();
        keep_alive(&accepted, mapped).unwrap();
        assert!(!socket.keepalive().unwrap(), "IPv4 loopback, mapped into IPv6");
    }
}
