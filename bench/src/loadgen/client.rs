//! Client sockets: the target URL, connecting from one of eight loopback addresses, and
//! helpers to read the frames a test waits for.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

pub(crate) type Ws = WebSocketStream<TcpStream>;

/// Source addresses the load comes from: 127.0.0.1 to 127.0.0.8, so one server port can take
/// more sockets than one source address has ephemeral ports.
const SOURCES: u8 = 8;

/// A `ws://HOST:PORT/path?query` URL on loopback.
#[derive(Clone, Debug)]
pub(crate) struct Target {
    pub(crate) addr: SocketAddr,
    /// Path and query, as sent in the request line.
    pub(crate) path: String,
}

impl Target {
    pub(crate) fn parse(url: &str) -> Result<Self, String> {
        let rest =
            url.strip_prefix("ws://").ok_or_else(|| format!("`{url}` is not a ws:// URL"))?;
        let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let addr: SocketAddr =
            host.parse().map_err(|_| format!("`{host}` is not an address like 127.0.0.1:8787"))?;
        let path = if path.is_empty() { "/".to_owned() } else { path.to_owned() };
        Ok(Self { addr, path })
    }

    /// The same server with another path and query.
    pub(crate) fn with_path(&self, path: String) -> Self {
        Self { addr: self.addr, path }
    }

    /// The path without its query, and the query (empty if none).
    pub(crate) fn path_and_query(&self) -> (&str, &str) {
        self.path.split_once('?').unwrap_or((&self.path, ""))
    }
}

/// Opens WebSocket `n` of a run: TCP from source address `n % 8`, then the upgrade.
pub(crate) async fn connect(target: &Target, n: usize) -> Result<Ws, String> {
    let last = u8::try_from(n % usize::from(SOURCES)).unwrap_or(0) + 1;
    let source = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)), 0);
    let socket = TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
    socket.bind(source).map_err(|e| format!("bind {source}: {e}"))?;
    let stream = socket.connect(target.addr).await.map_err(|e| format!("connect: {e}"))?;
    stream.set_nodelay(true).map_err(|e| format!("nodelay: {e}"))?;
    let url = format!("ws://{}{}", target.addr, target.path);
    // Small buffers: the generator holds up to 19,000 of these.
    let config = WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0);
    let (ws, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(config))
        .await
        .map_err(|e| format!("upgrade: {e}"))?;
    Ok(ws)
}

/// The string value of `"key":"…"` in a JSON frame, without parsing the whole frame (the
/// generator must not be the bottleneck). Values with escapes are not supported.
pub(crate) fn json_str<'a>(frame: &'a str, key: &str) -> Option<&'a str> {
    let pattern = format!("\"{key}\":\"");
    let start = frame.find(&pattern)? + pattern.len();
    let len = frame[start..].find('"')?;
    Some(&frame[start..start + len])
}

/// Runs `future`, failing with `what` after `limit`.
pub(crate) async fn within<T>(
    limit: Duration,
    what: &str,
    future: impl std::future::Future<Output = Result<T, String>>,
) -> Result<T, String> {
    tokio::time::timeout(limit, future)
        .await
        .map_err(|_| format!("{what}: not done after {limit:?}"))?
}

/// Opens `n` sockets, `concurrency` upgrades at a time; socket `i` asks for `target(i)`.
pub(crate) async fn connect_all(
    n: usize,
    concurrency: usize,
    target: impl Fn(usize) -> Target,
) -> Result<Vec<Ws>, String> {
    use futures_util::TryStreamExt;
    futures_util::stream::iter(0..n)
        .map(|i| {
            let target = target(i);
            async move { connect(&target, i).await.map_err(|e| format!("socket {i}: {e}")) }
        })
        .buffered(concurrency)
        .try_collect()
        .await
}

/// Nanoseconds since `epoch`, the clock the generator stamps messages with.
pub(crate) fn nanos_since(epoch: std::time::Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_and_json_strings() {
        let target = Target::parse("ws://127.0.0.1:8787/agents/chat-room/r?username=a").unwrap();
        assert_eq!(target.addr.port(), 8787);
        assert_eq!(target.path_and_query(), ("/agents/chat-room/r", "username=a"));
        assert_eq!(Target::parse("ws://127.0.0.1:1").unwrap().path, "/");
        assert!(Target::parse("http://127.0.0.1:1/").is_err());
        assert!(Target::parse("ws://localhost:1/").is_err());
        let frame = r#"{"text":"3:14:159","timestamp":1,"type":"message","user":"u"}"#;
        assert_eq!(json_str(frame, "text"), Some("3:14:159"));
        assert_eq!(json_str(frame, "type"), Some("message"));
        assert_eq!(json_str(frame, "id"), None);
    }
}
