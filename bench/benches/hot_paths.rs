//! Micro-benchmarks of the per-message hot paths (criterion): frame encode and decode, a
//! broadcast to 10,000 outboxes, and an RPC dispatched to an agent in process.
//!
//! `cargo bench -p agents-bench --bench hot_paths`

// criterion_group! writes an undocumented `pub fn benches`.
#![allow(missing_docs)]

use std::hint::black_box;

use agents_examples::{Counter, CounterClient, JsNumber};
use agents_runtime::Message;
use agents_runtime::bench::{Room, parse_client_frame, rpc_result, write_frame};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use serde_json::json;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::{Frame, FrameHeader};

const CHAT: &str = r#"{"text":"hello, everyone in the room","timestamp":1763800000000,"type":"message","user":"alice"}"#;
const RPC: &str = r#"{"type":"rpc","id":"d7f3a9","method":"add","args":[1.5,1]}"#;

/// `ChatRoom`'s message frame, typed as the room builds it.
#[derive(serde::Serialize)]
struct ChatFrame<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    user: &'a str,
    text: &'a str,
    timestamp: u64,
}

fn frames(c: &mut Criterion) {
    let mut group = c.benchmark_group("frame");
    group.throughput(Throughput::Elements(1));
    group.bench_function("encode and write a text frame (server to client)", |b| {
        let message = Message::from(CHAT);
        b.iter(|| black_box(write_frame(black_box(&message))));
    });
    group.bench_function("decode masked text frame (client to server)", |b| {
        let mut frame = Frame::message(RPC.as_bytes().to_vec(), OpCode::Data(Data::Text), true);
        frame.header_mut().mask = Some([1, 2, 3, 4]);
        let mut wire = Vec::new();
        frame.format(&mut wire).expect("a Vec takes it");
        b.iter(|| {
            let mut cursor = std::io::Cursor::new(black_box(&wire[..]));
            let (header, len) = FrameHeader::parse(&mut cursor).expect("valid").expect("whole");
            let start = cursor.position() as usize;
            let mut payload = wire[start..start + len as usize].to_vec();
            if let Some(mask) = header.mask {
                for (i, byte) in payload.iter_mut().enumerate() {
                    *byte ^= mask[i & 3];
                }
            }
            black_box(payload)
        });
    });
    group.bench_function("read a client frame: protocol RPC", |b| {
        b.iter(|| black_box(parse_client_frame(black_box(RPC))))
    });
    group.bench_function("read a client frame: plain chat text", |b| {
        b.iter(|| black_box(parse_client_frame(black_box("hello, everyone in the room"))))
    });
    group.bench_function("build a chat frame once (serde_json Value)", |b| {
        b.iter_batched(
            || json!({"type": "message", "user": "alice", "text": "hello", "timestamp": 1}),
            |frame| black_box(Message::from(frame)),
            BatchSize::SmallInput,
        );
    });
    group.bench_function("build a chat frame once (typed, Message::json)", |b| {
        b.iter(|| {
            let frame = ChatFrame { kind: "message", user: "alice", text: "hello", timestamp: 1 };
            black_box(Message::json(black_box(&frame)).expect("serializes"))
        });
    });
    group.bench_function("build an RPC answer frame", |b| {
        let result = json!(2.5);
        b.iter(|| black_box(rpc_result(black_box("d7f3a9"), &result)))
    });
    group.finish();
}

fn broadcast(c: &mut Criterion) {
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio");
    let _entered = runtime.enter();
    let room = Room::new(10_000);
    let message = Message::from(CHAT);
    let mut group = c.benchmark_group("broadcast");
    group.throughput(Throughput::Elements(10_000));
    group.bench_function("to 10,000 outboxes (queue, then take)", |b| {
        b.iter(|| {
            let queued = room.broadcast(&message);
            assert_eq!(queued, 10_000);
            black_box(room.drain())
        });
    });
    let sockets = Room::with_sockets(10_000);
    let one = [message.clone()];
    group.bench_function("to 10,000 sockets in one turn (cork, then one write each)", |b| {
        b.iter(|| black_box(sockets.broadcast_in_turn(&one)));
    });
    // Eight messages of their own (as chat 1000x1's turns gather about eight): each socket is
    // listed by the first, and the other seven only extend its run in the cork log.
    let eight: Vec<Message> = (0..8).map(|i| Message::from(format!("{CHAT}{i}"))).collect();
    group.throughput(Throughput::Elements(80_000));
    group.bench_function("8 messages to 10,000 sockets in one turn", |b| {
        b.iter(|| black_box(sockets.broadcast_in_turn(&eight)));
    });
    // Chat 32x32's shape: a small room whose pass gathers a few senders' messages (five, on
    // average), all in cache; what is left is the work per delivery and per socket.
    let room32 = Room::with_sockets(32);
    let five: Vec<Message> = (0..5).map(|i| Message::from(format!("{CHAT}{i}"))).collect();
    group.throughput(Throughput::Elements(160));
    group.bench_function("5 messages to 32 sockets in one turn", |b| {
        b.iter(|| black_box(room32.broadcast_in_turn(&five)));
    });
    group.finish();
}

fn rpc(c: &mut Criterion) {
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio");
    let handle = runtime.block_on(async {
        let server = agents_runtime::Server::builder()
            .agent::<Counter>()
            .in_memory()
            .bind("127.0.0.1:0")
            .await
            .expect("binds on loopback");
        let handle = server.handle();
        tokio::spawn(server.run());
        handle
    });
    let counter = CounterClient::new(handle.get_agent_by_name::<Counter>("bench").expect("hosted"));
    let mut group = c.benchmark_group("rpc");
    group.throughput(Throughput::Elements(1));
    group.bench_function("dispatch add(1.5, 1) in process (mailbox, turn, answer)", |b| {
        b.iter(|| {
            let sum = runtime.block_on(counter.add(1.5, 1.0)).expect("adds");
            assert_eq!(sum, JsNumber(2.5));
        });
    });
    group.finish();
}

criterion_group!(benches, frames, broadcast, rpc);
criterion_main!(benches);
