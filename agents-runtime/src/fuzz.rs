//! Entry points for the cargo-fuzz targets in `fuzz/` (feature `fuzzing`); not part of the
//! API. Each takes whatever bytes the fuzzer makes, feeds them to one parser of client input,
//! and checks what must hold of its answer; a panic is a finding.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::instance::rpc::decode_arg;
use crate::wire::budget::InputBudget;
use crate::wire::protocol::{ClientFrame, ServerFrame, server_frame_kind};
use crate::wire::read::{Incoming, Reader};

/// The message limit the reader runs with here: small, so the fuzzer reaches it.
const LIMIT: usize = 4096;

/// The frame reader: the first byte says how the rest is split into reads (1 to 256 bytes
/// each), as a client's bytes arrive in any chunks. Every message is within the limit, and a
/// text message is UTF-8 (the reader's own type guarantees it).
pub fn read_frames(data: &[u8]) {
    let Some((&step, bytes)) = data.split_first() else { return };
    let budget = InputBudget::new(usize::MAX, Duration::from_secs(30), LIMIT, 4096);
    let mut reader = Reader::new(&[], Arc::new(budget));
    for chunk in bytes.chunks(usize::from(step) + 1) {
        reader.feed(chunk);
        loop {
            match reader.next() {
                Ok(Some(Incoming::Text(text))) => assert!(text.len() <= LIMIT),
                Ok(Some(Incoming::Binary(bytes))) => assert!(bytes.len() <= LIMIT),
                Ok(Some(Incoming::Ping(payload))) => assert!(payload.len() <= 125),
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
}

/// The protocol's frames, as the server reads a client's text and as the Rust client reads
/// the server's: never a panic, and a frame the server reads has the type it says.
pub fn parse_protocol(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = ClientFrame::parse(text);
    let _ = ServerFrame::parse(text);
    let _ = server_frame_kind(&crate::Message::from(text.to_owned()));
}

/// A struct argument, as a `#[callable]` might take.
#[derive(Debug, Deserialize)]
#[allow(dead_code)] // read by `Debug` only: decoding is what is fuzzed
struct Point {
    x: f64,
    y: Option<i32>,
    label: String,
}

/// RPC arguments (a JSON array, as in `{"args": [...]}`) decoded as callables decode them,
/// into several types: a value or an error naming the argument, never a panic.
pub fn decode_args(data: &[u8]) {
    let Ok(args) = serde_json::from_slice::<Vec<Value>>(data) else { return };
    let mut args = args.into_iter();
    let errors = [
        decode_arg::<i64>(&mut args, "m", 0, "a").err(),
        decode_arg::<u8>(&mut args, "m", 1, "b").err(),
        decode_arg::<String>(&mut args, "m", 2, "c").err(),
        decode_arg::<Vec<Option<f64>>>(&mut args, "m", 3, "d").err(),
        decode_arg::<Point>(&mut args, "m", 4, "e").err(),
        decode_arg::<Value>(&mut args, "m", 5, "f").err(),
    ];
    for error in errors.into_iter().flatten() {
        assert!(error.starts_with("Invalid argument "), "{error}");
        assert!(error.len() < 1024, "an error quotes at most a clip of the value");
    }
}

/// Connection tags, as `connection_tags` returns them (NUL-separated here): taken exactly
/// when they follow the rules, the connection id first.
pub fn prepare_tags(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let tags: Vec<String> = text.split('\0').map(str::to_owned).collect();
    let id: Arc<str> = "conn-id".into();
    if let Ok(prepared) = crate::instance::tags::prepare(&id, tags) {
        assert_eq!(&*prepared[0], "conn-id");
        assert!(prepared.iter().all(|tag| !tag.is_empty()));
    }
}

/// A request path and query: the agent route (`/agents/{agent}/{name}`), the query's
/// parameters, and a `Sec-WebSocket-Key`. A route's segments are whole segments.
pub fn parse_route(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (path, query) = text.split_once('?').unwrap_or((&text, ""));
    if let Some((agent, name)) = crate::transport::agent_and_name(path) {
        assert!(!agent.is_empty() && !agent.contains('/'));
        assert!(!name.is_empty() && !name.contains('/'));
    }
    for key in ["_pk", "username", "readonly", ""] {
        let _ = crate::request::query_param(Some(query), key);
    }
    let _ = crate::wire::handshake::is_valid_key(data);
}
