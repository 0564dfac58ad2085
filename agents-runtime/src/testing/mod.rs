//! Helpers for testing agents over real sockets: start a server with the agents you choose on
//! an ephemeral loopback port inside a test, connect raw, protocol-aware or typed clients, and
//! wait for frames with timeouts. Enabled by the `testing` feature, for dev-dependencies:
//!
//! ```toml
//! [dev-dependencies]
//! agents-runtime = { version = "0.1", features = ["testing"] } # or a path/git dependency
//! ```
//!
//! Every wait is bounded by [`WAIT`]; like an assertion, a helper panics with a message saying
//! what did not happen, so a broken agent fails its test instead of hanging it.
//!
//! ```no_run
//! use agents_runtime::prelude::*;
//! use agents_runtime::testing;
//!
//! #[derive(Default)]
//! struct Echo;
//!
//! #[agent]
//! impl Echo {
//!     fn on_message(&mut self, _ctx: &mut Context<Self>, conn: &Connection, message: Message) -> Result<()> {
//!         conn.send(message)?;
//!         Ok(())
//!     }
//! }
//!
//! # async fn test() {
//! let server = testing::start(Server::builder().agent::<Echo>()).await;
//! let mut client = server.connect("/agents/echo/room-1").await;
//! client.send_text("hello").await;
//! assert_eq!(client.recv_text().await, "hello");
//! # }
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

mod postgres;
mod skips;
mod temp_dir;

pub use postgres::Postgres;
pub use skips::{postgres, ran, skip, skipped_checks};
pub use temp_dir::TempDir;

use crate::client::AgentClient;
use crate::{ServerBuilder, ServerHandle};

/// How long any single wait in a test may take before the test fails (not a timing check:
/// a generous bound so a broken server fails the test instead of hanging it).
pub const WAIT: Duration = Duration::from_secs(10);

/// A server running in the test's runtime on 127.0.0.1 and a free port. It dereferences to
/// its [`Endpoint`] for connecting.
pub struct TestServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// For observing instances.
    pub handle: ServerHandle,
    endpoint: Endpoint,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    running: Option<tokio::task::JoinHandle<crate::Result<()>>>,
}

impl TestServer {
    /// Shuts the server down as SIGTERM would (sockets close with 1001, the store is flushed)
    /// and waits until it has. Its data directory can then be opened again, provided nothing
    /// else still holds the server: a clone of [`handle`](Self::handle), an `AgentStub` from
    /// it, or an idle keep-alive HTTP connection (the helpers' requests use
    /// `Connection: close`). Dropping a `TestServer` instead leaves the server running until
    /// the test's runtime ends.
    pub async fn shut_down(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(running) = self.running.take() {
            let ended = tokio::time::timeout(WAIT * 2, running).await;
            let result = ended.expect("the server shuts down in time");
            result.expect("the server task ran").expect("the server shuts down cleanly");
        }
    }
}

impl std::ops::Deref for TestServer {
    type Target = Endpoint;

    fn deref(&self) -> &Endpoint {
        &self.endpoint
    }
}

/// Where a server listens (in this process or another): WebSocket and HTTP clients for it.
#[derive(Clone, Copy, Debug)]
pub struct Endpoint {
    /// The server's address.
    pub addr: SocketAddr,
}

/// Binds `builder` on 127.0.0.1:0 and runs it in the background. Its data is kept in memory
/// unless the builder names a data directory or a store ([`ServerBuilder::in_memory`]).
pub async fn start(mut builder: ServerBuilder) -> TestServer {
    if !builder.names_its_storage() {
        builder = builder.in_memory();
    }
    let server = builder.bind("127.0.0.1:0").await.expect("the test server binds");
    let addr = server.local_addr();
    let handle = server.handle();
    let (shutdown, requested) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(server.run_until(async move {
        // Only an explicit `shut_down` stops it, not a dropped `TestServer`.
        if requested.await.is_err() {
            std::future::pending::<()>().await;
        }
    }));
    TestServer {
        addr,
        handle,
        endpoint: Endpoint { addr },
        shutdown: Some(shutdown),
        running: Some(running),
    }
}

impl Endpoint {
    /// `ws://addr{path}`.
    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    /// Opens a WebSocket to `path` (which includes any query string) and reads the protocol
    /// frames every agent sends first: identity, the state when `stateFollows`, MCP servers.
    /// They are kept in [`Client::identity`] and [`Client::initial_state`].
    pub async fn connect(&self, path: &str) -> Client {
        let mut client = self.connect_raw(path).await;
        let identity = client.recv_json().await;
        assert_eq!(identity["type"], "cf_agent_identity", "the first frame is the identity");
        if identity["stateFollows"] == true {
            let state = client.recv_json().await;
            assert_eq!(state["type"], "cf_agent_state", "the state follows the identity");
            client.initial_state = Some(state["state"].clone());
        }
        let mcp = client.recv_json().await;
        assert_eq!(mcp["type"], "cf_agent_mcp_servers", "the MCP frame ends the preamble");
        client.initial_mcp = Some(mcp["mcp"].clone());
        client.identity = Some(identity);
        client
    }

    /// Connects the Rust [`AgentClient`] to `path` and waits until it is ready (identity and
    /// state received). Wrap it in a generated `{Agent}Client` for typed calls:
    /// `CounterClient::new(server.agent_client("/agents/counter/c1").await)`.
    pub async fn agent_client(&self, path: &str) -> AgentClient {
        let url = self.ws_url(path);
        tokio::time::timeout(WAIT, AgentClient::connect(&url))
            .await
            .unwrap_or_else(|_| panic!("connecting to {url} timed out"))
            .unwrap_or_else(|e| panic!("connecting to {url} failed: {e}"))
    }

    /// Opens a WebSocket to `path` and reads nothing: the test sees every frame.
    pub async fn connect_raw(&self, path: &str) -> Client {
        let url = self.ws_url(path);
        let (ws, response) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(&url))
            .await
            .unwrap_or_else(|_| panic!("connecting to {url} timed out"))
            .unwrap_or_else(|e| panic!("connecting to {url} failed: {e}"));
        assert_eq!(response.status(), 101);
        Client { ws, identity: None, initial_state: None, initial_mcp: None }
    }

    /// Tries a WebSocket upgrade that is expected to be refused; returns status and body.
    pub async fn refused_upgrade(&self, path: &str) -> (u16, String) {
        let url = self.ws_url(path);
        let attempt = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(&url));
        match attempt.await.unwrap_or_else(|_| panic!("the upgrade to {url} timed out")) {
            Ok(_) => panic!("the upgrade to {url} was accepted"),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                let body = response.body().as_deref().map(String::from_utf8_lossy);
                (response.status().as_u16(), body.unwrap_or_default().into_owned())
            }
            Err(other) => panic!("unexpected error from {url}: {other}"),
        }
    }

    /// Sends one HTTP/1.1 request and returns status and body.
    pub async fn http(&self, method: &str, path: &str, body: &[u8]) -> (u16, String) {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.addr,
            body.len()
        );
        self.raw_http(head.as_bytes(), body).await
    }

    /// Sends `head` (request line and headers, ending in an empty line) and `body` as they
    /// are, and returns status and body of the answer.
    pub async fn raw_http(&self, head: &[u8], body: &[u8]) -> (u16, String) {
        let response = self.request(head, body).await;
        (response.status, response.body)
    }

    /// Like [`raw_http`](Self::raw_http), with the answer's headers too.
    pub async fn request(&self, head: &[u8], body: &[u8]) -> HttpResponse {
        let mut stream = TcpStream::connect(self.addr).await.expect("connects");
        stream.write_all(head).await.expect("writes the head");
        // The server may answer (413) before reading a body it refuses.
        let _ = stream.write_all(body).await;
        let bodiless_request = head.starts_with(b"HEAD ");
        tokio::time::timeout(WAIT, read_response(&mut stream, bodiless_request))
            .await
            .expect("the response arrives in time")
    }
}

/// An HTTP answer, as [`Endpoint::request`] read it.
#[derive(Debug)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// The header lines, names in lower case.
    pub headers: Vec<(String, String)>,
    /// The body, as text.
    pub body: String,
}

impl HttpResponse {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }
}

/// Reads one HTTP/1.1 response: headers, then `Content-Length` bytes of body (none for an
/// answer to HEAD, or a 1xx, 204 or 304).
async fn read_response(stream: &mut TcpStream, bodiless_request: bool) -> HttpResponse {
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = stream.read(&mut buf).await.expect("reads the response");
        assert!(n > 0, "the connection closed before the response headers ended");
        raw.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).into_owned();
    let mut lines = head.lines();
    let status_line = lines.next().unwrap_or_default();
    let status: u16 =
        status_line.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("a status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    let bodiless = bodiless_request || status < 200 || status == 204 || status == 304;
    let length: usize = if bodiless {
        0
    } else {
        let declared = headers.iter().find(|(name, _)| name == "content-length");
        declared.and_then(|(_, v)| v.parse().ok()).unwrap_or(0)
    };
    while raw.len() < head_end + length {
        let n = stream.read(&mut buf).await.expect("reads the body");
        assert!(n > 0, "the connection closed before the body ended");
        raw.extend_from_slice(&buf[..n]);
    }
    let body = String::from_utf8_lossy(&raw[head_end..head_end + length]).into_owned();
    HttpResponse { status, headers, body }
}

/// A WebSocket client for tests; every wait is bounded by [`WAIT`].
pub struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// The `cf_agent_identity` frame [`Endpoint::connect`] read.
    pub identity: Option<serde_json::Value>,
    /// The state of the `cf_agent_state` frame that followed the identity, if any.
    pub initial_state: Option<serde_json::Value>,
    /// The `mcp` of the `cf_agent_mcp_servers` frame that ended the preamble.
    pub initial_mcp: Option<serde_json::Value>,
}

/// What the client saw when the server closed.
#[derive(Debug, PartialEq, Eq)]
pub struct Closed {
    /// Close code (1005 when the frame had none).
    pub code: u16,
    /// Close reason.
    pub reason: String,
}

impl Client {
    /// The next data message; fails on close, error or timeout.
    pub async fn recv(&mut self) -> WsMessage {
        loop {
            let next = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("a message arrives in time")
                .expect("the socket is open")
                .expect("the socket is healthy");
            match next {
                WsMessage::Text(_) | WsMessage::Binary(_) => return next,
                WsMessage::Close(frame) => panic!("closed while waiting for a message: {frame:?}"),
                _ => {}
            }
        }
    }

    /// The next message, which must be text.
    pub async fn recv_text(&mut self) -> String {
        match self.recv().await {
            WsMessage::Text(text) => text.as_str().to_owned(),
            other => panic!("expected text, got {other:?}"),
        }
    }

    /// The next message, which must be a JSON text.
    pub async fn recv_json(&mut self) -> serde_json::Value {
        let text = self.recv_text().await;
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
    }

    /// The next JSON message that is not a `cf_agent_state` broadcast.
    pub async fn recv_json_skipping_state(&mut self) -> serde_json::Value {
        loop {
            let json = self.recv_json().await;
            if json["type"] != "cf_agent_state" {
                return json;
            }
        }
    }

    /// Sends a WebSocket ping and waits for its pong (data messages before it are dropped).
    pub async fn ping(&mut self, payload: &[u8]) {
        self.ws.send(WsMessage::Ping(payload.to_vec().into())).await.expect("sends a ping");
        loop {
            let next = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("a pong arrives in time")
                .expect("the socket is open")
                .expect("the socket is healthy");
            if let WsMessage::Pong(answer) = next {
                assert_eq!(&answer[..], payload, "the pong echoes the ping");
                return;
            }
        }
    }

    /// Fails if a data message arrives within `quiet` (a check that something is held back).
    pub async fn expect_silence(&mut self, quiet: Duration) {
        if let Ok(next) = tokio::time::timeout(quiet, self.ws.next()).await {
            panic!("expected nothing for {quiet:?}, got {next:?}");
        }
    }

    /// The next message, which must be binary.
    pub async fn recv_binary(&mut self) -> Vec<u8> {
        match self.recv().await {
            WsMessage::Binary(bytes) => bytes.to_vec(),
            other => panic!("expected binary, got {other:?}"),
        }
    }

    /// Sends a text message.
    pub async fn send_text(&mut self, text: impl Into<String>) {
        self.ws.send(WsMessage::text(text.into())).await.expect("sends text");
    }

    /// Sends a JSON value as a text message.
    pub async fn send_json(&mut self, value: serde_json::Value) {
        self.send_text(value.to_string()).await;
    }

    /// Sends an RPC frame as the official client builds it.
    pub async fn send_rpc(&mut self, id: &str, method: &str, args: serde_json::Value) {
        let frame = serde_json::json!({ "args": args, "id": id, "method": method, "type": "rpc" });
        self.send_json(frame).await;
    }

    /// Sends a binary message.
    pub async fn send_binary(&mut self, bytes: impl Into<Vec<u8>>) {
        self.ws.send(WsMessage::binary(bytes.into())).await.expect("sends binary");
    }

    /// Reads (and drops data) until the server's close frame; returns its code and reason.
    pub async fn expect_close(&mut self) -> Closed {
        loop {
            let next = tokio::time::timeout(WAIT, self.ws.next()).await.expect("a close in time");
            match next {
                Some(Ok(WsMessage::Close(frame))) => return self.finish(frame).await,
                Some(Ok(_)) => {}
                other => panic!("the socket ended without a close frame: {other:?}"),
            }
        }
    }

    /// Like [`expect_close`](Self::expect_close), but fails on any data message before it.
    pub async fn expect_close_now(&mut self) -> Closed {
        let next = tokio::time::timeout(WAIT, self.ws.next()).await.expect("a close in time");
        match next {
            Some(Ok(WsMessage::Close(frame))) => self.finish(frame).await,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }

    /// Drives the stream to its end so the close reply goes out, as a real client's does.
    async fn finish(&mut self, frame: Option<CloseFrame>) -> Closed {
        let _ = tokio::time::timeout(WAIT, async { while self.ws.next().await.is_some() {} }).await;
        closed(frame)
    }

    /// Starts a close handshake (`None` sends an empty close frame) and returns the server's
    /// answering close frame.
    pub async fn close(&mut self, frame: Option<(u16, &str)>) -> Closed {
        let frame = frame.map(|(code, reason)| CloseFrame {
            code: CloseCode::from(code),
            reason: reason.into(),
        });
        self.ws.close(frame).await.expect("sends the close frame");
        self.expect_close().await
    }

    /// Like [`close`](Self::close), but fails if any data message arrives before the answer:
    /// proves the client was sent nothing more.
    pub async fn close_expecting_nothing(&mut self) -> Closed {
        let frame = CloseFrame { code: CloseCode::Normal, reason: "".into() };
        self.ws.close(Some(frame)).await.expect("sends the close frame");
        self.expect_close_now().await
    }

    /// Wraps a raw stream taken with [`into_inner`](Self::into_inner).
    pub fn from_stream(ws: WebSocketStream<MaybeTlsStream<TcpStream>>) -> Self {
        Self { ws, identity: None, initial_state: None, initial_mcp: None }
    }

    /// The raw stream, for tests that need to stop reading.
    pub fn into_inner(self) -> WebSocketStream<MaybeTlsStream<TcpStream>> {
        self.ws
    }
}

fn closed(frame: Option<CloseFrame>) -> Closed {
    match frame {
        Some(frame) => {
            Closed { code: u16::from(frame.code), reason: frame.reason.as_str().to_owned() }
        }
        None => Closed { code: crate::close_code::NO_STATUS_RECEIVED, reason: String::new() },
    }
}

/// Waits until `condition` holds, checking every few milliseconds, for at most [`WAIT`].
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
