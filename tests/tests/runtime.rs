//! Runtime behaviour through real sockets, with small agents made for each rule: turn order,
//! connection ids and tags, limits (frame size, outbox, state size), errors and panics, the
//! close handshake, instance lifecycle and registration.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use agents_runtime::prelude::*;
use agents_runtime::{ConnectionError, ServerBuilder, close_code};
use agents_tests::{Closed, TestServer, eventually, start};
use futures_util::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message as WsMessage;

fn text(message: &Message) -> &str {
    message.as_text().unwrap_or("")
}

// --- ordering ------------------------------------------------------------------------------

/// `on_connect` takes its time before setting the state every message then reports.
#[derive(Default)]
struct Ordered;

#[agent(connection_state = u32)]
impl Ordered {
    async fn on_connect(
        &mut self,
        _ctx: &mut Context<Self>,
        conn: &Connection<u32>,
        _c: &ConnectionContext,
    ) -> Result<()> {
        tokio::time::sleep(Duration::from_millis(50)).await;
        conn.set_state(42)?;
        Ok(())
    }

    async fn on_message(
        &mut self,
        _ctx: &mut Context<Self>,
        conn: &Connection<u32>,
        message: Message,
    ) -> Result<()> {
        let state = conn.state().map_or("none".to_owned(), |s| s.to_string());
        conn.send(format!("{}:{state}", text(&message)))?;
        Ok(())
    }
}

#[tokio::test]
async fn no_message_is_handled_before_on_connect_finishes() {
    let server = start(Server::builder().agent::<Ordered>()).await;
    let mut client = server.connect("/agents/ordered/o").await;
    for i in 0..25 {
        client.send_text(i.to_string()).await;
    }
    for i in 0..25 {
        assert_eq!(client.recv_text().await, format!("{i}:42"));
    }
}

/// `wait`'s turn waits until the test releases it.
#[derive(Default)]
struct Waiter;

static WAITING: tokio::sync::Notify = tokio::sync::Notify::const_new();
static RELEASE: tokio::sync::Notify = tokio::sync::Notify::const_new();

#[agent]
impl Waiter {
    #[callable]
    async fn wait(&mut self, _ctx: &mut Context<Self>) -> Result<u32> {
        WAITING.notify_one();
        RELEASE.notified().await;
        Ok(7)
    }
}

/// A socket's 101 leaves with its connect turn's frames, but not behind another turn that
/// waits: the upgrade completes at once, and its `on_connect` runs when that turn is done.
#[tokio::test]
async fn a_turn_that_waits_does_not_hold_back_another_sockets_upgrade() {
    let server = start(Server::builder().agent::<Waiter>()).await;
    let mut first = server.connect("/agents/waiter/w").await;
    first.send_text(r#"{"type":"rpc","id":"1","method":"wait","args":[]}"#).await;
    tokio::time::timeout(Duration::from_secs(10), WAITING.notified())
        .await
        .expect("the call's turn began");
    // `connect_raw` fails the test if no 101 comes within its wait.
    let mut second = server.connect_raw("/agents/waiter/w").await;
    RELEASE.notify_one();
    let answer = first.recv_json().await;
    assert_eq!((answer["type"].as_str(), answer["result"].as_u64()), (Some("rpc"), Some(7)));
    let identity = second.recv_json().await;
    assert_eq!(identity["type"], "cf_agent_identity", "then the second socket's connect ran");
}

/// A connection that sends nothing, or part of a request head, is closed once the request
/// head timeout has passed.
#[tokio::test]
async fn silent_connections_and_unfinished_heads_are_closed_after_the_head_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let timeout = Duration::from_millis(300);
    let server = start(Server::builder().agent::<Ordered>().request_head_timeout(timeout)).await;
    let silent = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let mut partial = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    partial.write_all(b"GET /agents/ordered/o HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    for mut tcp in [silent, partial] {
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut rest));
        assert!(closed.await.is_ok(), "the connection stayed open");
    }
    // The server still takes connections.
    let mut client = server.connect("/agents/ordered/o").await;
    client.send_text("x").await;
    assert_eq!(client.recv_text().await, "x:42");
}

// --- ids, uri and tags ---------------------------------------------------------------------

/// Tags from `?tags=a,b,c`; on connect, reports id, tags and uri.
#[derive(Default)]
struct Tagger;

#[agent]
impl Tagger {
    fn connection_tags(
        &mut self,
        _ctx: &mut Context<Self>,
        _conn: &Connection,
        conn_ctx: &ConnectionContext,
    ) -> Vec<String> {
        let tags: Vec<String> = conn_ctx
            .query("tags")
            .map(|tags| tags.split(',').map(str::to_owned).collect())
            .unwrap_or_default();
        assert!(!tags.iter().any(|tag| tag == "panic"), "tag panic");
        tags
    }

    fn on_connect(
        &mut self,
        _ctx: &mut Context<Self>,
        conn: &Connection,
        _c: &ConnectionContext,
    ) -> Result<()> {
        let tags: Vec<&str> = conn.tags().iter().map(|t| &**t).collect();
        conn.send(
            json!({ "id": conn.id(), "tags": tags, "uri": conn.uri(), "server": conn.server() }),
        )?;
        Ok(())
    }

    fn on_message(
        &mut self,
        ctx: &mut Context<Self>,
        conn: &Connection,
        message: Message,
    ) -> Result<()> {
        // `who:<id>` looks a connection up by id; `tag:<tag>` counts connections with a tag.
        let reply = if let Some(id) = text(&message).strip_prefix("who:") {
            match ctx.get_connection(id) {
                Ok(Some(found)) => format!("found {}", found.id()),
                Ok(None) => "none".to_owned(),
                Err(e) => format!("error: {e}"),
            }
        } else if let Some(tag) = text(&message).strip_prefix("tag:") {
            ctx.get_connections(Some(tag)).count().to_string()
        } else {
            return Ok(());
        };
        conn.send(reply)?;
        Ok(())
    }
}

async fn tagger() -> TestServer {
    start(Server::builder().agent::<Tagger>()).await
}

#[tokio::test]
async fn connection_id_is_pk_when_it_fits_else_random() {
    let server = tagger().await;
    let mut client = server.connect("/agents/tagger/t?_pk=my-id").await;
    let hello = client.recv_json().await;
    assert_eq!(hello["id"], "my-id");
    assert_eq!(hello["server"], "t");
    let uri = hello["uri"].as_str().expect("uri");
    assert!(
        uri.starts_with("http://127.0.0.1:") && uri.ends_with("/agents/tagger/t?_pk=my-id"),
        "{uri}"
    );

    let long_ok = "x".repeat(256);
    let mut client = server.connect(&format!("/agents/tagger/t?_pk={long_ok}")).await;
    assert_eq!(client.recv_json().await["id"], long_ok);

    let too_long = "x".repeat(257);
    for query in ["", "?_pk=", &format!("?_pk={too_long}")] {
        let mut client = server.connect(&format!("/agents/tagger/t{query}")).await;
        let id = client.recv_json().await["id"].as_str().expect("id").to_owned();
        assert_eq!(id.len(), 21, "{query}: {id}");
        assert!(id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'));
    }
}

#[tokio::test]
async fn tags_follow_the_id_and_are_looked_up() {
    let server = tagger().await;
    let nine = (1..=9).map(|i| format!("t{i}")).collect::<Vec<_>>().join(",");
    let mut client = server.connect(&format!("/agents/tagger/t?_pk=me&tags=me,{nine}")).await;
    let tags = client.recv_json().await["tags"].clone();
    assert_eq!(tags, json!(["me", "t1", "t2", "t3", "t4", "t5", "t6", "t7", "t8", "t9"]));
    let mut other = server.connect("/agents/tagger/t?_pk=you&tags=t1").await;
    other.recv_json().await;
    other.send_text("tag:t1").await;
    assert_eq!(other.recv_text().await, "2");
    other.send_text("tag:t9").await;
    assert_eq!(other.recv_text().await, "1");
    other.send_text("tag:nobody").await;
    assert_eq!(other.recv_text().await, "0");
    other.send_text("who:me").await;
    assert_eq!(other.recv_text().await, "found me");
    other.send_text("who:ghost").await;
    assert_eq!(other.recv_text().await, "none");
}

#[tokio::test]
async fn tag_rules_refuse_the_connection_with_an_error_frame_and_1011() {
    let server = tagger().await;
    let long = "a".repeat(257);
    let ten = (1..=10).map(|i| format!("t{i}")).collect::<Vec<_>>().join(",");
    for (tags, rule) in [
        (ten.as_str(), "A connection can only have 10 tags, including the default id tag."),
        ("a,,b", "A connection tag must not be an empty string."),
        (long.as_str(), "A connection tag must not exceed 256 characters"),
    ] {
        let mut client = server.connect_raw(&format!("/agents/tagger/t?tags={tags}")).await;
        assert_eq!(client.recv_json().await, json!({ "error": rule }));
        let closed = client.expect_close_now().await;
        assert_eq!(
            closed,
            Closed { code: 1011, reason: "Uncaught exception during session setup".into() }
        );
    }
    // A panic in connection_tags refuses the connection the same way.
    let mut client = server.connect_raw("/agents/tagger/t?tags=panic").await;
    assert_eq!(client.recv_json().await, json!({ "error": "a hook panicked: tag panic" }));
    assert_eq!(client.expect_close_now().await.code, 1011);
    // The instance is unharmed.
    let mut client = server.connect("/agents/tagger/t?tags=ok").await;
    assert_eq!(client.recv_json().await["tags"].as_array().map(Vec::len), Some(2));
}

#[tokio::test]
async fn a_repeated_tag_is_kept_but_indexed_once() {
    let server = tagger().await;
    let mut client = server.connect("/agents/tagger/r?_pk=me&tags=a,b,a").await;
    assert_eq!(client.recv_json().await["tags"], json!(["me", "a", "b", "a"]));
    client.send_text("tag:a").await;
    assert_eq!(client.recv_text().await, "1");
}

#[tokio::test]
async fn get_connection_refuses_to_guess_between_duplicate_ids() {
    let server = tagger().await;
    let mut first = server.connect("/agents/tagger/d?_pk=twin").await;
    first.recv_json().await;
    let mut second = server.connect("/agents/tagger/d?_pk=twin").await;
    second.recv_json().await;
    second.send_text("who:twin").await;
    assert_eq!(
        second.recv_text().await,
        "error: More than one connection found for id twin. Did you mean to use getConnections(tag) instead?"
    );
    first.close(Some((1000, ""))).await;
    second.send_text("who:twin").await;
    assert_eq!(second.recv_text().await, "found twin");
}

// --- errors and panics ---------------------------------------------------------------------

/// `fail` returns an error, `panic` panics, anything else is echoed. `on_error` reports.
#[derive(Default)]
struct Faulty;

#[agent]
impl Faulty {
    fn on_message(
        &mut self,
        _ctx: &mut Context<Self>,
        conn: &Connection,
        message: Message,
    ) -> Result<()> {
        match text(&message) {
            "fail" => Err(Error::msg("boom")),
            "fail-hard" => Err(Error::msg("hard")),
            "panic" => panic!("kaboom"),
            "badclose" => Ok(conn.close(1005, "reserved")?),
            other => Ok(conn.send(format!("echo:{other}"))?),
        }
    }

    fn on_request(&mut self, _ctx: &mut Context<Self>, request: Request) -> Result<Response> {
        match request.uri().path() {
            "/agents/faulty/f/panic" => panic!("http kaboom"),
            _ => Err(Error::msg("no such page")),
        }
    }

    fn on_error(&mut self, ctx: &mut Context<Self>, conn: Option<&Connection>, error: &Error) {
        assert_ne!(error.to_string(), "hard", "on_error gives up");
        match conn {
            Some(conn) => {
                let _ = conn.send(format!("connection error: {error}"));
                ctx.broadcast(format!("{} had: {error}", conn.id()), &[conn.id()]);
            }
            None => drop(ctx.broadcast(format!("server error: {error}"), &[])),
        }
    }
}

#[tokio::test]
async fn hook_errors_and_panics_reach_on_error_and_the_socket_stays_open() {
    let server = start(Server::builder().agent::<Faulty>()).await;
    let mut client = server.connect("/agents/faulty/f").await;
    client.send_text("fail").await;
    assert_eq!(client.recv_text().await, "connection error: boom");
    client.send_text("panic").await;
    assert_eq!(client.recv_text().await, "server error: a hook panicked: kaboom");
    client.send_text("badclose").await;
    assert_eq!(
        client.recv_text().await,
        "connection error: close code 1005 cannot be sent: use 1000-1003, 1007-1014 or 3000-4999"
    );
    // Even a panicking on_error leaves the instance running.
    client.send_text("fail-hard").await;
    client.send_text("still here").await;
    assert_eq!(client.recv_text().await, "echo:still here");

    // HTTP: an error or a panic in on_request is a 500, and the instance keeps going.
    assert_eq!(
        server.http("GET", "/agents/faulty/f/x", b"").await,
        (500, "Internal Server Error".into())
    );
    assert_eq!(
        server.http("GET", "/agents/faulty/f/panic", b"").await,
        (500, "Internal Server Error".into())
    );
    client.send_text("after http").await;
    assert_eq!(client.recv_text().await, "server error: no such page");
    assert_eq!(client.recv_text().await, "server error: a hook panicked: http kaboom");
    assert_eq!(client.recv_text().await, "echo:after http");
}

/// Answers HTTP with a text body, a binary one, one with its own type, and none.
#[derive(Default)]
struct Pages;

#[agent]
impl Pages {
    fn on_request(&mut self, _ctx: &mut Context<Self>, request: Request) -> Response {
        match request.uri().path() {
            "/agents/pages/p/text" => Response::new("héllo".into()),
            "/agents/pages/p/binary" => Response::new(vec![0xff, 0xfe, 0].into()),
            "/agents/pages/p/json" => {
                let mut response = Response::new(r#"{"a":1}"#.into());
                let json = agents_runtime::http::HeaderValue::from_static("application/json");
                response.headers_mut().insert(agents_runtime::http::header::CONTENT_TYPE, json);
                response
            }
            "/agents/pages/p/switching" => {
                let mut response = Response::new("HTTP/1.1 101 a body".into());
                *response.status_mut() = agents_runtime::http::StatusCode::SWITCHING_PROTOCOLS;
                response
            }
            _ => Response::new(Default::default()),
        }
    }
}

/// A 101 an agent answers to plain HTTP is written like any response: only the upgrade
/// route's own 101 is held back for the socket's first frames.
#[tokio::test]
async fn a_101_from_on_request_reaches_the_client() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = start(Server::builder().agent::<Pages>()).await;
    let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let get = "GET /agents/pages/p/switching HTTP/1.1\r\nHost: x\r\n\r\n";
    tcp.write_all(get.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let read = async {
        while !head.ends_with(b"\r\n\r\n") {
            head.push(tcp.read_u8().await.expect("the response head"));
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read).await.expect("a response in time");
    assert!(head.starts_with(b"HTTP/1.1 101 "), "{}", String::from_utf8_lossy(&head));
}

#[tokio::test]
async fn text_responses_get_the_content_type_workers_give_them() {
    let server = start(Server::builder().agent::<Pages>()).await;
    let get = |page: &str| {
        format!("GET /agents/pages/p/{page} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    };
    let text = server.request(get("text").as_bytes(), b"").await;
    assert_eq!((text.status, text.body.as_str()), (200, "héllo"));
    assert_eq!(text.header("content-type"), Some("text/plain;charset=UTF-8"));
    let json = server.request(get("json").as_bytes(), b"").await;
    assert_eq!(json.header("content-type"), Some("application/json"));
    for page in ["binary", "empty"] {
        let answer = server.request(get(page).as_bytes(), b"").await;
        assert_eq!((answer.status, answer.header("content-type")), (200, None), "{page}");
    }
}

/// `on_start` fails the first time it runs.
#[derive(Default)]
struct FlakyStart;

static FLAKY_STARTS: AtomicUsize = AtomicUsize::new(0);

#[agent]
impl FlakyStart {
    fn on_start(&mut self, _ctx: &mut Context<Self>) -> Result<()> {
        if FLAKY_STARTS.fetch_add(1, Ordering::SeqCst) == 0 {
            return Err(Error::msg("database not ready"));
        }
        Ok(())
    }

    fn on_connect(
        &mut self,
        _ctx: &mut Context<Self>,
        conn: &Connection,
        _c: &ConnectionContext,
    ) -> Result<()> {
        Ok(conn.send("started")?)
    }
}

#[tokio::test]
async fn a_failed_on_start_refuses_the_connection_and_is_retried() {
    let server = start(Server::builder().agent::<FlakyStart>()).await;
    let mut first = server.connect_raw("/agents/flaky-start/x").await;
    assert_eq!(first.recv_json().await, json!({ "error": "database not ready" }));
    assert_eq!(first.expect_close_now().await.code, close_code::SESSION_SETUP_FAILED);
    let mut second = server.connect("/agents/flaky-start/x").await;
    assert_eq!(second.recv_text().await, "started");
}

// --- limits --------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_upload_over_the_limit_still_gets_its_1009_close() {
    let server = start(agents_examples::server().max_message_size(1024)).await;
    let mut client = server.connect("/agents/my-agent/upload").await;
    assert_eq!(client.recv_text().await, "Welcome!");
    // 8 MiB: refused from its header; the server reads and drops the rest, so the upload
    // completes instead of being reset, and the close frame arrives.
    client.send_binary(vec![0u8; 8 << 20]).await;
    assert_eq!(
        client.expect_close_now().await,
        Closed { code: 1009, reason: "Message too big".into() }
    );
}

#[tokio::test]
async fn an_oversized_message_closes_with_1009_and_the_instance_keeps_working() {
    let server = start(agents_examples::server().max_message_size(1024)).await;
    let mut client = server.connect("/agents/my-agent/big").await;
    assert_eq!(client.recv_text().await, "Welcome!");
    client.send_text("x".repeat(1024)).await;
    assert_eq!(client.recv_text().await.len(), 1024);
    client.send_binary(vec![0u8; 1025]).await;
    assert_eq!(
        client.expect_close_now().await,
        Closed { code: 1009, reason: "Message too big".into() }
    );

    let mut again = server.connect("/agents/my-agent/big").await;
    assert_eq!(again.recv_text().await, "Welcome!");
    again.send_text("fine").await;
    assert_eq!(again.recv_text().await, "fine");
}

/// Per-connection state is a string; `set:N` tries N bytes of it.
#[derive(Default)]
struct StateCap;

#[agent(connection_state = String)]
impl StateCap {
    fn on_message(
        &mut self,
        _ctx: &mut Context<Self>,
        conn: &Connection<String>,
        message: Message,
    ) -> Result<()> {
        let reply = match text(&message).strip_prefix("set:") {
            Some(n) => match conn.set_state("x".repeat(n.parse()?)) {
                Ok(()) => "ok".to_owned(),
                Err(e @ ConnectionError::StateTooLarge { .. }) => format!("refused: {e}"),
                Err(e) => return Err(e.into()),
            },
            None => conn.with_state(|s| s.map_or(0, String::len)).to_string(),
        };
        Ok(conn.send(reply)?)
    }
}

#[tokio::test]
async fn connection_state_over_the_cap_is_refused_and_the_old_state_kept() {
    let server = start(Server::builder().agent::<StateCap>().max_connection_state_size(64)).await;
    let mut client = server.connect("/agents/state-cap/s").await;
    client.send_text("set:10").await;
    assert_eq!(client.recv_text().await, "ok");
    client.send_text("set:62").await; // 62 characters and two quotes: 64 bytes of JSON
    assert_eq!(client.recv_text().await, "ok");
    client.send_text("set:63").await;
    assert_eq!(
        client.recv_text().await,
        "refused: connection state is over the 64-byte limit once serialized"
    );
    client.send_text("len").await;
    assert_eq!(client.recv_text().await, "62");
}

/// `flood:N` sends N 64 KiB messages, yielding between them, `burst:N` N 1 KiB messages
/// without yielding (one turn); overflows are told to others.
#[derive(Default)]
struct Flood;

#[agent]
impl Flood {
    async fn on_message(
        &mut self,
        _ctx: &mut Context<Self>,
        conn: &Connection,
        message: Message,
    ) -> Result<()> {
        if let Some(n) = text(&message).strip_prefix("flood:") {
            let chunk = Message::from(vec![7u8; 64 * 1024]);
            for _ in 0..n.parse::<usize>()? {
                conn.send(chunk.clone())?;
                tokio::task::yield_now().await;
            }
        }
        if let Some(n) = text(&message).strip_prefix("burst:") {
            let chunk = Message::from(vec![7u8; 1024]);
            for _ in 0..n.parse::<usize>()? {
                conn.send(chunk.clone())?;
            }
        }
        Ok(())
    }

    fn on_error(&mut self, ctx: &mut Context<Self>, conn: Option<&Connection>, error: &Error) {
        if let Some(conn) = conn {
            ctx.broadcast(format!("{}: {error}", conn.id()), &[conn.id()]);
        }
    }
}

/// Floods a client that stopped reading until the server gives up on it; returns what the
/// other connection was told.
async fn flood_a_client_that_stops_reading(builder: ServerBuilder, flood: &str) -> String {
    let server = start(builder.agent::<Flood>().close_timeout(Duration::from_secs(30))).await;
    let mut observer = server.connect("/agents/flood/f?_pk=observer").await;
    let slow = server.connect("/agents/flood/f?_pk=slow").await;
    let mut slow = slow.into_inner();
    // Ask for far more than socket buffers hold (128 MiB), then stop reading.
    slow.send(WsMessage::text(flood)).await.expect("sends");
    let report = observer.recv_text().await;
    // Reading again: what was already in flight, then the close frame.
    let mut slow = agents_tests::Client::from_stream(slow);
    let closed = slow.expect_close().await;
    assert_eq!(
        closed,
        Closed {
            code: close_code::OUTBOX_FULL,
            reason: "Outbox full: client is not reading".into()
        }
    );
    // Others are unaffected.
    observer.send_text("flood:1").await;
    assert_eq!(observer.recv_binary().await.len(), 64 * 1024);
    report
}

/// What the others are told when the outbox of `slow` holds 16 messages.
const FULL_AT_16_MESSAGES: &str = "slow: the connection's outbox is full (16 messages or 16777216 bytes): the client is not reading";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_closed_with_1013_at_the_message_bound() {
    let report =
        flood_a_client_that_stops_reading(Server::builder().outbox_capacity(16), "flood:2000")
            .await;
    assert_eq!(report, FULL_AT_16_MESSAGES);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_turn_that_floods_a_client_is_bounded_by_the_outbox_too() {
    // 200 MiB in one turn, without yielding: what the socket does not take queues.
    let report =
        flood_a_client_that_stops_reading(Server::builder().outbox_capacity(16), "burst:200000")
            .await;
    assert_eq!(report, FULL_AT_16_MESSAGES);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_closed_with_1013_at_the_byte_bound() {
    let builder = Server::builder().outbox_capacity(100_000).max_outbox_bytes(256 * 1024);
    let report = flood_a_client_that_stops_reading(builder, "flood:2000").await;
    assert_eq!(
        report,
        "slow: the connection's outbox is full (100000 messages or 262144 bytes): the client is not reading"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_stalled_past_the_send_timeout_closes_with_1013() {
    // The outbox never fills: only the send timeout can end it.
    let builder = Server::builder()
        .outbox_capacity(100_000)
        .max_outbox_bytes(1 << 30)
        .send_timeout(Duration::from_millis(500));
    let server = start(builder.agent::<Flood>()).await;
    let slow = server.connect("/agents/flood/stall?_pk=slow").await;
    let mut slow = slow.into_inner();
    // 12.5 MiB, more than the socket buffers hold, then no reading for a while.
    slow.send(WsMessage::text("flood:200")).await.expect("sends");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut slow = agents_tests::Client::from_stream(slow);
    let closed = slow.expect_close().await;
    let timed_out = Closed {
        code: close_code::OUTBOX_FULL,
        reason: "Send timed out: client is not reading".into(),
    };
    assert_eq!(closed, timed_out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_closes_while_behind_still_gets_whole_frames_then_the_close_reply() {
    let builder = Server::builder().outbox_capacity(100_000).max_outbox_bytes(1 << 30);
    let server = start(builder.agent::<Flood>()).await;
    let client = server.connect("/agents/flood/behind").await;
    let mut ws = client.into_inner();
    // 20 MiB of small frames, more than the socket buffers hold, so some wait in the
    // server's write buffer; the client closes before reading.
    ws.send(WsMessage::text("burst:20000")).await.expect("sends");
    tokio::time::sleep(Duration::from_millis(200)).await;
    ws.close(None).await.expect("sends the close frame");
    let mut received = 0;
    let reply = loop {
        match tokio::time::timeout(Duration::from_secs(10), futures_util::StreamExt::next(&mut ws))
            .await
            .expect("in time")
        {
            Some(Ok(WsMessage::Binary(bytes))) => {
                assert_eq!(bytes.len(), 1024);
                received += 1;
            }
            Some(Ok(WsMessage::Close(reply))) => break reply,
            other => panic!("the server ended without its close reply: {other:?}"),
        }
    };
    // What the socket had taken arrives whole (what was still queued is dropped, as when
    // any client closes), then the reply: nothing is cut off mid-frame.
    assert!(received > 0 && received <= 20_000, "{received} messages");
    assert_eq!(reply.map(|frame| u16::from(frame.code)), None, "an empty close, echoed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_does_not_wait_out_the_send_timeout_of_a_client_that_stopped_reading() {
    // The send timeout stays at its 30 s default; shutdown waits at most the close timeout
    // (plus a second) for each socket to close.
    let builder = Server::builder()
        .outbox_capacity(100_000)
        .max_outbox_bytes(1 << 30)
        .close_timeout(Duration::from_millis(500));
    let server = start(builder.agent::<Flood>()).await;
    let handle = server.handle.clone();
    let client = server.connect("/agents/flood/stalled").await;
    let mut ws = client.into_inner();
    // More than the socket buffers hold, never read: the socket task waits for room.
    ws.send(WsMessage::text("burst:20000")).await.expect("sends");
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.shut_down().await;
    assert_eq!(handle.open_connections(), 0, "the stalled socket was closed within shutdown");
    drop(ws);
}

/// Answers each message after a while, in order.
#[derive(Default)]
struct Slow;

#[agent]
impl Slow {
    async fn on_message(
        &mut self,
        _ctx: &mut Context<Self>,
        conn: &Connection,
        message: Message,
    ) -> Result<()> {
        tokio::time::sleep(Duration::from_millis(5)).await;
        conn.send(message)?;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_mailbox_pauses_reading_and_loses_nothing() {
    let server = start(Server::builder().agent::<Slow>().mailbox_capacity(2)).await;
    let mut client = server.connect("/agents/slow/s").await;
    for i in 0..40 {
        client.send_text(i.to_string()).await;
    }
    for i in 0..40 {
        assert_eq!(client.recv_text().await, i.to_string());
    }
}

/// Keeps every connection it is given, as an agent may.
#[derive(Default)]
struct Keeper {
    kept: Vec<Connection>,
}

#[agent]
impl Keeper {
    async fn on_connect(
        &mut self,
        _ctx: &mut Context<Self>,
        conn: &Connection,
        _c: &ConnectionContext,
    ) -> Result<()> {
        self.kept.push(conn.clone());
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_connection_does_not_keep_its_socket_open() {
    use tokio::io::AsyncReadExt;
    let server = start(Server::builder().agent::<Keeper>()).await;
    let mut client = server.connect("/agents/keeper/k").await;
    // The handshake over, the server closes TCP at once although the agent holds the
    // Connection (not when the idle instance leaves memory, 10 s later).
    let closing = async {
        assert_eq!(client.close(Some((1000, "bye"))).await.code, 1000);
        let mut tcp = match client.into_inner().into_inner() {
            tokio_tungstenite::MaybeTlsStream::Plain(tcp) => tcp,
            _ => unreachable!("plain TCP in tests"),
        };
        tcp.read_to_end(&mut Vec::new()).await
    };
    let read = tokio::time::timeout(Duration::from_secs(2), closing).await;
    assert!(matches!(read, Ok(Ok(0))), "the server closed the socket: {read:?}");
}

// --- close handshake -----------------------------------------------------------------------

/// Tells everyone else how each connection closed; `close` makes the server close first.
#[derive(Default)]
struct Closer;

#[agent]
impl Closer {
    fn on_message(
        &mut self,
        _ctx: &mut Context<Self>,
        conn: &Connection,
        message: Message,
    ) -> Result<()> {
        if text(&message) == "close" {
            conn.close(4002, "server says bye")?;
        }
        Ok(())
    }

    fn on_close(
        &mut self,
        ctx: &mut Context<Self>,
        conn: &Connection,
        code: u16,
        reason: &str,
        was_clean: bool,
    ) {
        // The closed connection is already out of the list.
        let left = ctx.get_connections(None).count();
        ctx.broadcast(
            format!("{} closed {code} '{reason}' clean={was_clean} left={left}", conn.id()),
            &[],
        );
    }

    fn on_error(&mut self, ctx: &mut Context<Self>, conn: Option<&Connection>, error: &Error) {
        let id = conn.map_or("server", |conn| conn.id());
        ctx.broadcast(format!("{id} error: {error}"), &[]);
    }
}

#[tokio::test]
async fn on_close_gets_code_reason_and_cleanliness() {
    let server = start(Server::builder().agent::<Closer>()).await;
    let mut observer = server.connect("/agents/closer/c?_pk=observer").await;

    let mut client = server.connect("/agents/closer/c?_pk=a").await;
    assert_eq!(
        client.close(Some((4003, "client bye"))).await,
        Closed { code: 4003, reason: "client bye".into() }
    );
    assert_eq!(observer.recv_text().await, "a closed 4003 'client bye' clean=true left=1");

    let mut client = server.connect("/agents/closer/c?_pk=b").await;
    client.send_text("close").await;
    assert_eq!(
        client.expect_close_now().await,
        Closed { code: 4002, reason: "server says bye".into() }
    );
    // tungstenite's client answers with the same frame.
    assert_eq!(observer.recv_text().await, "b closed 4002 'server says bye' clean=true left=1");

    // TCP gone without a close frame: a disconnect (1006), not an error.
    let client = server.connect("/agents/closer/c?_pk=c").await;
    drop(client.into_inner());
    assert_eq!(observer.recv_text().await, "c closed 1006 '' clean=false left=1");
}

#[tokio::test]
async fn a_close_the_client_never_answers_ends_after_the_close_timeout() {
    let builder = Server::builder().agent::<Closer>().close_timeout(Duration::from_millis(300));
    let server = start(builder).await;
    let mut observer = server.connect("/agents/closer/t?_pk=observer").await;
    let mut client = server.connect("/agents/closer/t?_pk=mute").await;
    client.send_text("close").await;
    // The client reads nothing more, so it never answers the server's close frame.
    let started = std::time::Instant::now();
    assert_eq!(observer.recv_text().await, "mute closed 1006 '' clean=false left=1");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(250), "ended after {waited:?}");
    assert!(waited < Duration::from_secs(5), "ended after {waited:?}");
    drop(client);
}

/// A client whose message was refused (1009) and who answers the close as clients do: the
/// refused frame's bytes are read past, and `on_close` hears the client's reply, a clean close
/// with the code it was sent. So does one whose text was not UTF-8 (1007).
#[tokio::test]
async fn on_close_after_a_refused_message_gets_the_clients_reply() {
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

    let server = start(Server::builder().agent::<Closer>().max_message_size(1024)).await;
    let mut observer = server.connect("/agents/closer/r?_pk=observer").await;
    for (id, size) in [("small", 2000), ("large", 300_000)] {
        let mut client = server.connect(&format!("/agents/closer/r?_pk={id}")).await;
        client.send_binary(vec![7u8; size]).await;
        assert_eq!(
            client.expect_close_now().await,
            Closed { code: 1009, reason: "Message too big".into() },
            "{size} bytes"
        );
        let error = observer.recv_text().await;
        assert_eq!(error, format!("{id} error: message over the 1024-byte limit: {size} bytes"));
        assert_eq!(
            observer.recv_text().await,
            format!("{id} closed 1009 'Message too big' clean=true left=1")
        );
    }
    // In fragments: refused at the second, and the rest of them dropped as they come.
    let mut client = server.connect("/agents/closer/r?_pk=fragments").await.into_inner();
    for (opcode, fin) in [(Data::Binary, false), (Data::Continue, false), (Data::Continue, true)] {
        let frame = Frame::message(vec![7u8; 600], OpCode::Data(opcode), fin);
        client.send(WsMessage::Frame(frame)).await.expect("sends the raw frame");
    }
    let mut client = agents_tests::Client::from_stream(client);
    let refused = Closed { code: 1009, reason: "Message too big".into() };
    assert_eq!(client.expect_close_now().await, refused);
    assert!(observer.recv_text().await.starts_with("fragments error: "));
    let closed = observer.recv_text().await;
    assert_eq!(closed, "fragments closed 1009 'Message too big' clean=true left=1");
    let mut client = server.connect("/agents/closer/r?_pk=utf8").await.into_inner();
    let frame = Frame::message(vec![0xff, 0xfe], OpCode::Data(Data::Text), true);
    client.send(WsMessage::Frame(frame)).await.expect("sends the raw frame");
    let mut client = agents_tests::Client::from_stream(client);
    assert_eq!(
        client.expect_close_now().await,
        Closed { code: 1007, reason: "Invalid UTF-8".into() }
    );
    assert!(observer.recv_text().await.starts_with("utf8 error: "));
    assert_eq!(observer.recv_text().await, "utf8 closed 1007 'Invalid UTF-8' clean=true left=1");
}

// --- lifecycle and registration --------------------------------------------------------------

/// Counts its starts in a static, and remembers in memory which start it is.
#[derive(Default)]
struct Restartable {
    start: usize,
}

static RESTARTS: AtomicUsize = AtomicUsize::new(0);

#[agent]
impl Restartable {
    fn on_start(&mut self, _ctx: &mut Context<Self>) {
        self.start = RESTARTS.fetch_add(1, Ordering::SeqCst) + 1;
    }

    fn on_connect(
        &mut self,
        _ctx: &mut Context<Self>,
        conn: &Connection,
        _c: &ConnectionContext,
    ) -> Result<()> {
        Ok(conn.send(format!("start {}", self.start))?)
    }
}

#[tokio::test]
async fn an_idle_instance_leaves_memory_and_starts_again() {
    let server =
        start(Server::builder().agent::<Restartable>().hibernate_after(Duration::from_millis(100)))
            .await;
    let mut client = server.connect("/agents/restartable/r").await;
    assert_eq!(client.recv_text().await, "start 1");
    let mut second = server.connect("/agents/restartable/r").await;
    assert_eq!(second.recv_text().await, "start 1"); // same live instance
    // In memory, or hibernated since (both sockets are idle): one instance either way.
    let hosted = |h: &agents_runtime::ServerHandle| h.live_instances() + h.hibernated_instances();
    assert_eq!(hosted(&server.handle), 1);
    client.close(Some((1000, ""))).await;
    second.close(Some((1000, ""))).await;
    let handle = server.handle.clone();
    eventually("the idle instance is dropped", || hosted(&handle) == 0).await;
    let mut client = server.connect("/agents/restartable/r").await;
    assert_eq!(client.recv_text().await, "start 2"); // on_start ran again, fields were reset
}

/// Registered only through `inventory`; its route follows Cloudflare's kebab rule.
#[derive(Default)]
struct AIAssistant;

#[agent]
impl AIAssistant {
    fn on_request(&mut self, ctx: &mut Context<Self>, _request: Request) -> Response {
        Response::new(format!("{} {}", ctx.agent(), ctx.name()).into())
    }
}

/// Registered only through `inventory`, under a chosen route name.
#[derive(Default)]
struct Renamed;

#[agent(name = "custom-route")]
impl Renamed {
    fn on_request(&mut self, ctx: &mut Context<Self>, _request: Request) -> Response {
        Response::new(ctx.agent().into())
    }
}

#[tokio::test]
async fn agents_register_themselves_and_keep_their_names() {
    let server = start(Server::builder()).await;
    assert_eq!(
        server.http("GET", "/agents/a-i-assistant/my%20room", b"").await,
        (200, "a-i-assistant my%20room".into())
    );
    assert_eq!(
        server.http("GET", "/agents/custom-route/x", b"").await,
        (200, "custom-route".into())
    );
    assert_eq!(server.http("GET", "/agents/renamed/x", b"").await.0, 400);
}

#[tokio::test]
async fn bad_server_configuration_is_an_error() {
    let error =
        Server::builder().outbox_capacity(1).bind("127.0.0.1:0").await.err().expect("refused");
    assert_eq!(error.to_string(), "outbox_capacity must be at least 2");
    let error =
        Server::builder().max_instances(0).bind("127.0.0.1:0").await.err().expect("refused");
    assert_eq!(error.to_string(), "max_instances must be at least 1");
}

// --- upgrade requests --------------------------------------------------------------------------

#[tokio::test]
async fn malformed_upgrade_requests_are_answered() {
    let server = start(Server::builder().agent::<Tagger>()).await;
    let head = |version: &str, key: &str| {
        format!(
            "GET /agents/tagger/t HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: {version}\r\n{key}\r\n"
        )
    };
    let (status, body) = server
        .raw_http(head("12", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n").as_bytes(), b"")
        .await;
    assert_eq!((status, body.as_str()), (426, "Unsupported WebSocket version: use 13"));
    let (status, body) = server.raw_http(head("13", "").as_bytes(), b"").await;
    assert_eq!(
        (status, body.as_str()),
        (400, "Invalid WebSocket upgrade: `Sec-WebSocket-Key` is missing")
    );
    let no_connection = "GET /agents/tagger/t HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
                         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    let (status, body) = server.raw_http(no_connection.as_bytes(), b"").await;
    assert_eq!(
        (status, body.as_str()),
        (400, "Invalid WebSocket upgrade: `Connection: upgrade` is missing")
    );
    // RFC 6455 §4.2.1: the key is 16 random bytes in base64; anything else is refused.
    for key in
        ["", "x", "not base64 at all!!!!!!!", "dGhlIHNhbXBsZSBub25jZQ", "dGhlIHNhbXBsZSBub25jZR=="]
    {
        let (status, body) = server
            .raw_http(head("13", &format!("Sec-WebSocket-Key: {key}\r\n")).as_bytes(), b"")
            .await;
        assert_eq!(
            (status, body.as_str()),
            (400, "Invalid WebSocket upgrade: `Sec-WebSocket-Key` must be 16 bytes in base64"),
            "key {key:?}"
        );
    }
    assert_eq!(server.handle.open_connections(), 0);
    let post = "POST /agents/tagger/t HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nContent-Length: 0\r\n\r\n";
    let (status, body) = server.raw_http(post.as_bytes(), b"").await;
    assert_eq!((status, body.as_str()), (400, "Invalid WebSocket upgrade: the method must be GET"));
}

#[tokio::test]
async fn a_request_head_over_its_limit_gets_431() {
    let server = start(Server::builder().agent::<Tagger>()).await;
    let head = |bytes: usize| {
        let filler = "x".repeat(bytes);
        format!(
            "GET /agents/tagger/t HTTP/1.1\r\nHost: x\r\nX-Filler: {filler}\r\nConnection: close\r\n\r\n"
        )
    };
    assert_eq!(server.raw_http(head(100 * 1024).as_bytes(), b"").await.0, 431);
    // Within the limit, the same request is served (the agent has no on_request: 404).
    assert_eq!(server.raw_http(head(16 * 1024).as_bytes(), b"").await.0, 404);
    let error = Server::builder().max_request_head_size(100).bind("127.0.0.1:0").await.err();
    assert_eq!(error.expect("refused").to_string(), "max_request_head_size must be at least 8192");
}

// --- env ---------------------------------------------------------------------------------------

/// Shared configuration handed to the server builder.
struct Greeting(&'static str);

/// Reads `env` on HTTP: the greeting, and the error for a type nobody provided.
#[derive(Default)]
struct EnvReader;

#[agent]
impl EnvReader {
    fn on_request(&mut self, ctx: &mut Context<Self>, _request: Request) -> Result<Response> {
        let greeting = ctx.env().require::<Greeting>()?.0;
        let missing = ctx.env().require::<u64>().err().map(|e| e.to_string()).unwrap_or_default();
        Ok(Response::new(format!("{greeting} / {missing}").into()))
    }
}

#[tokio::test]
async fn env_gives_hooks_the_builders_resources() {
    let server = start(Server::builder().agent::<EnvReader>().env(Greeting("hello"))).await;
    assert_eq!(
        server.http("GET", "/agents/env-reader/e", b"").await,
        (200, "hello / env has no value of type `u64`: pass one to ServerBuilder::env".into())
    );
}

// --- malformed frames --------------------------------------------------------------------------

#[tokio::test]
async fn malformed_frames_close_with_1007_or_1002_and_reach_on_error() {
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

    let server = start(Server::builder().agent::<Faulty>()).await;
    let mut observer = server.connect("/agents/faulty/m?_pk=observer").await;
    for (id, opcode, payload, code, reason, error) in [
        (
            "bad-utf8",
            Data::Text,
            vec![0xff, 0xfe],
            1007,
            "Invalid UTF-8",
            "a text frame was not valid UTF-8",
        ),
        (
            "bad-opcode",
            Data::Reserved(3),
            b"x".to_vec(),
            1002,
            "Protocol error",
            "websocket protocol error",
        ),
    ] {
        let mut client = server.connect(&format!("/agents/faulty/m?_pk={id}")).await.into_inner();
        let frame = Frame::message(payload, OpCode::Data(opcode), true);
        client.send(WsMessage::Frame(frame)).await.expect("sends the raw frame");
        let mut client = agents_tests::Client::from_stream(client);
        assert_eq!(client.expect_close_now().await, Closed { code, reason: reason.into() });
        let report = observer.recv_text().await;
        assert!(report.starts_with(&format!("{id} had: {error}")), "{report}");
    }
    // The instance is still serving.
    observer.send_text("ok").await;
    assert_eq!(observer.recv_text().await, "echo:ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fragmented_messages_are_joined_and_pings_between_them_answered() {
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

    let server = start(Server::builder().agent::<Faulty>()).await;
    let mut client = server.connect("/agents/faulty/f").await.into_inner();
    let parts = [
        Frame::message("hé".as_bytes().to_vec(), OpCode::Data(Data::Text), false),
        Frame::ping(b"still there?".to_vec()),
        Frame::message("llo".as_bytes().to_vec(), OpCode::Data(Data::Continue), true),
    ];
    for frame in parts {
        client.send(WsMessage::Frame(frame)).await.expect("sends the raw frame");
    }
    let mut next = async || {
        let next = tokio::time::timeout(
            Duration::from_secs(5),
            futures_util::StreamExt::next(&mut client),
        );
        next.await.expect("in time").expect("open").expect("healthy")
    };
    // The pong is written when the ping is read, before the message is whole.
    assert_eq!(next().await, WsMessage::Pong(b"still there?".to_vec().into()));
    assert_eq!(next().await, WsMessage::text("echo:héllo"));
}

// --- refused connections are not heard -------------------------------------------------------

/// Refuses connections without `?token=`; every message heard is told to everyone.
#[derive(Default)]
struct Gate;

#[agent]
impl Gate {
    fn on_connect(
        &mut self,
        _ctx: &mut Context<Self>,
        conn: &Connection,
        conn_ctx: &ConnectionContext,
    ) -> Result<()> {
        if conn_ctx.query("token").is_none() {
            conn.close(4001, "Unauthorized")?;
        }
        Ok(())
    }

    fn on_message(&mut self, ctx: &mut Context<Self>, _conn: &Connection, message: Message) {
        ctx.broadcast(format!("heard: {}", text(&message)), &[]);
    }
}

#[tokio::test]
async fn messages_from_a_refused_connection_never_reach_on_message() {
    let server = start(Server::builder().agent::<Gate>()).await;
    let mut member = server.connect("/agents/gate/g?token=t").await;
    let mut intruder = server.connect("/agents/gate/g").await;
    intruder.send_text("sneaky").await;
    assert_eq!(intruder.expect_close_now().await.code, 4001);
    // Turns run in order: had "sneaky" been handled, its broadcast would come first.
    member.send_text("probe").await;
    assert_eq!(member.recv_text().await, "heard: probe");
}

// --- connection and instance caps ------------------------------------------------------------

#[tokio::test]
async fn connections_over_the_cap_get_503_until_one_closes() {
    let server = start(Server::builder().agent::<Gate>().max_connections(1)).await;
    let mut first = server.connect("/agents/gate/g?token=t").await;
    assert_eq!(
        server.refused_upgrade("/agents/gate/g?token=t").await,
        (503, "Too many connections".into())
    );
    first.close(Some((1000, ""))).await;
    let handle = server.handle.clone();
    eventually("the slot is freed", || handle.open_connections() == 0).await;
    let mut again = server.connect("/agents/gate/g?token=t").await;
    again.send_text("back").await;
    assert_eq!(again.recv_text().await, "heard: back");
}

#[tokio::test]
async fn instances_over_the_cap_are_refused() {
    let server = start(
        Server::builder().agent::<EnvReader>().agent::<Gate>().env(Greeting("hi")).max_instances(1),
    )
    .await;
    assert_eq!(server.http("GET", "/agents/env-reader/one", b"").await.0, 200);
    assert_eq!(server.http("GET", "/agents/env-reader/one", b"").await.0, 200); // live already
    assert_eq!(
        server.http("GET", "/agents/env-reader/two", b"").await,
        (503, "Agent unavailable".into())
    );
    let mut refused = server.connect_raw("/agents/gate/two?token=t").await;
    assert_eq!(
        refused.expect_close_now().await,
        Closed { code: 1013, reason: "Server at capacity".into() }
    );
}

// --- a hand-written Agent impl ---------------------------------------------------------------

/// Implements `Agent` directly, without `#[agent]`, and is registered on the builder.
#[derive(Default)]
struct Manual;

impl agents_runtime::Agent for Manual {
    const NAME: &'static str = "manual";
    type ConnectionState = ();
    type State = ();

    fn create() -> Self {
        Manual
    }

    fn initial_state() {}

    async fn on_message(
        &mut self,
        _ctx: &mut Context<Self>,
        conn: &Connection,
        message: Message,
    ) -> Result<()> {
        conn.send(format!("manual:{}", text(&message)))?;
        Ok(())
    }
}

#[tokio::test]
async fn a_hand_written_agent_registered_explicitly_is_served() {
    let server = start(Server::builder().agent::<Manual>()).await;
    let mut client = server.connect("/agents/manual/m").await;
    client.send_text("hi").await;
    assert_eq!(client.recv_text().await, "manual:hi");
    assert_eq!(server.http("GET", "/agents/manual/m", b"").await, (404, "Not implemented".into()));
}
