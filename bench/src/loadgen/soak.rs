//! `soak`: the examples server under a steady mixed load for a long while (chat rooms,
//! `increment` calls that write, connections opened and closed, instances that hibernate
//! and wake), with the server's RSS, open file descriptors and the errors seen, sampled over
//! time. A server that leaks shows it as a slope.
//!
//! ```text
//! loadgen soak --url ws://127.0.0.1:PORT --server-pid PID --duration 30m --sample 10s
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::args::Args;
use crate::client::{Target, Ws, connect, json_str};
use crate::probe::Server;

/// What the workers did, counted as they go.
#[derive(Default)]
struct Counts {
    chat_sent: AtomicU64,
    chat_received: AtomicU64,
    calls: AtomicU64,
    churned: AtomicU64,
    wakes: AtomicU64,
    /// Anything unexpected: a failed connect, a closed socket, a wrong or missing answer.
    errors: AtomicU64,
}

impl Counts {
    fn snapshot(&self) -> Value {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        json!({
            "chat_sent": get(&self.chat_sent),
            "chat_received": get(&self.chat_received),
            "calls": get(&self.calls),
            "churned": get(&self.churned),
            "wakes": get(&self.wakes),
            "errors": get(&self.errors),
        })
    }

    fn error(&self, what: &str) {
        if self.errors.fetch_add(1, Ordering::Relaxed) < 20 {
            eprintln!("soak: {what}");
        }
    }
}

/// How long a worker waits for one answer before counting an error.
const ANSWER: Duration = Duration::from_secs(10);

pub(crate) async fn run(args: &Args) -> Result<Value, String> {
    args.only(&["duration", "sample", "rooms", "members", "counters", "sleepers"])?;
    let target = args.target()?;
    let duration = args.duration("duration", Duration::from_secs(1800))?;
    let every = args.duration("sample", Duration::from_secs(10))?;
    let (rooms, members) = (args.count("rooms", 10)?, args.count("members", 10)?);
    let counters = args.count("counters", 20)?;
    let sleepers = args.count("sleepers", 200)?;
    let server = Server::new(args.server_pids()?);
    let pid = args.server_pid()?.ok_or("--server-pid is required")?;
    let counts = Arc::new(Counts::default());
    let end = Instant::now() + duration;
    let mut workers = Vec::new();
    for n in 0..rooms * members {
        let path = format!("/agents/chat-room/soak{}?username=m{n}", n % rooms);
        let worker = chat(target.with_path(path), n, counts.clone(), end);
        workers.push(tokio::spawn(worker));
    }
    for n in 0..counters {
        let path = format!("/agents/counter/soak{n}");
        workers.push(tokio::spawn(calls(target.with_path(path), n, counts.clone(), end)));
    }
    workers.push(tokio::spawn(churn(target.clone(), counts.clone(), end)));
    for n in 0..sleepers {
        let path = format!("/agents/hibernating-counter/soak{n}");
        workers.push(tokio::spawn(sleeper(target.with_path(path), n, counts.clone(), end)));
    }
    let started = Instant::now();
    let mut samples = Vec::new();
    while Instant::now() < end {
        tokio::time::sleep(every.min(end.saturating_duration_since(Instant::now()))).await;
        let rss = server.rss_bytes()?.unwrap_or(0);
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count);
        let mut sample = counts.snapshot();
        sample["s"] = json!(started.elapsed().as_secs());
        sample["rss"] = json!(rss);
        sample["fds"] = json!(fds);
        println!("{sample}");
        samples.push(sample);
    }
    for worker in workers {
        worker.abort();
    }
    Ok(json!({
        "mode": "soak",
        "seconds": duration.as_secs(),
        "rooms": rooms,
        "members": members,
        "counters": counters,
        "sleepers": sleepers,
        "totals": counts.snapshot(),
        "samples": samples,
    }))
}

/// Connects, retrying once a second until `end` (each failure counted).
async fn connected(target: &Target, n: usize, counts: &Counts, end: Instant) -> Option<Ws> {
    while Instant::now() < end {
        match connect(target, n).await {
            Ok(ws) => return Some(ws),
            Err(e) => counts.error(&format!("connecting to {}: {e}", target.path)),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    None
}

/// A chat member: a message a second, every message of its room read.
async fn chat(target: Target, n: usize, counts: Arc<Counts>, end: Instant) {
    // Spread over the second, so the load is steady.
    tokio::time::sleep(Duration::from_millis((n as u64 * 37) % 1000)).await;
    while let Some(ws) = connected(&target, n, &counts, end).await {
        let (mut sink, mut stream) = ws.split();
        let reader = {
            let counts = counts.clone();
            tokio::spawn(async move {
                while let Some(Ok(frame)) = stream.next().await {
                    if frame.is_text() {
                        counts.chat_received.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        };
        let mut ticks = tokio::time::interval(Duration::from_secs(1));
        let mut sent = 0u64;
        while Instant::now() < end && !reader.is_finished() {
            ticks.tick().await;
            sent += 1;
            if sink.send(Message::text(format!("m{n} says {sent}"))).await.is_err() {
                break;
            }
            counts.chat_sent.fetch_add(1, Ordering::Relaxed);
        }
        reader.abort();
        if Instant::now() < end {
            counts.error(&format!("chat member {n} lost its socket"));
        }
    }
}

/// `increment` ten times a second on one counter, each answer one more than the last.
async fn calls(target: Target, n: usize, counts: Arc<Counts>, end: Instant) {
    let mut last: Option<i64> = None;
    let mut id = 0u64;
    'connect: while let Some(mut ws) = connected(&target, n, &counts, end).await {
        while Instant::now() < end {
            id += 1;
            let call =
                json!({"type": "rpc", "id": id.to_string(), "method": "increment", "args": []});
            if ws.send(Message::text(call.to_string())).await.is_err() {
                counts.error(&format!("counter {n}: the socket closed"));
                continue 'connect;
            }
            let answer = tokio::time::timeout(ANSWER, answer_to(&mut ws, &id.to_string())).await;
            match answer {
                Ok(Some(count)) if last.is_none_or(|last| count == last + 1) => {
                    last = Some(count);
                    counts.calls.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Some(count)) => {
                    counts.error(&format!("counter {n}: {count} after {last:?}"));
                    last = Some(count);
                }
                Ok(None) | Err(_) => {
                    counts.error(&format!("counter {n}: no answer to call {id}"));
                    continue 'connect;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        return;
    }
}

/// The result of the RPC answer `id` (state broadcasts skipped); `None` if the socket ends or
/// the call fails.
async fn answer_to(ws: &mut Ws, id: &str) -> Option<i64> {
    while let Some(Ok(frame)) = ws.next().await {
        let Message::Text(text) = frame else { continue };
        if json_str(&text, "type") == Some("rpc") && json_str(&text, "id") == Some(id) {
            let answer: Value = serde_json::from_str(&text).ok()?;
            return answer["result"].as_i64();
        }
    }
    None
}

/// Connections opened and closed, twenty a second: each waits for its greeting (after the
/// protocol's identity and MCP frames).
async fn churn(target: Target, counts: Arc<Counts>, end: Instant) {
    let mut n = 0usize;
    while Instant::now() < end {
        n += 1;
        let target = target.with_path(format!("/agents/my-agent/churn{}", n % 50));
        let greeted = async {
            let mut ws = connect(&target, n).await?;
            loop {
                match ws.next().await {
                    Some(Ok(Message::Text(text))) if text.as_str() == "Welcome!" => break,
                    Some(Ok(Message::Text(text))) if text.starts_with("{\"type\":\"cf_") => {}
                    other => return Err(format!("greeting: {other:?}")),
                }
            }
            ws.close(None).await.map_err(|e| e.to_string())
        };
        match tokio::time::timeout(ANSWER, greeted).await {
            Ok(Ok(())) => {
                counts.churned.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Err(e)) => counts.error(&format!("churn: {e}")),
            Err(_) => counts.error("churn: no greeting in time"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A socket on an instance that hibernates: `count` every 15 s (the server hibernates it after
/// 2 s), each answer one more than the last, across hibernation.
async fn sleeper(target: Target, n: usize, counts: Arc<Counts>, end: Instant) {
    tokio::time::sleep(Duration::from_millis((n as u64 * 73) % 15_000)).await;
    let mut last: Option<i64> = None;
    'connect: while let Some(mut ws) = connected(&target, n, &counts, end).await {
        while Instant::now() < end {
            if ws.send(Message::text("count")).await.is_err() {
                counts.error(&format!("sleeper {n}: the socket closed"));
                continue 'connect;
            }
            let answer = tokio::time::timeout(ANSWER, async {
                while let Some(Ok(frame)) = ws.next().await {
                    let Message::Text(text) = frame else { continue };
                    let value: Value = serde_json::from_str(&text).ok()?;
                    if let Some(counter) = value["counter"].as_i64() {
                        return Some(counter);
                    }
                }
                None
            });
            match answer.await {
                Ok(Some(counter)) if last.is_none_or(|last| counter == last + 1) => {
                    last = Some(counter);
                    counts.wakes.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Some(counter)) => {
                    counts.error(&format!("sleeper {n}: {counter} after {last:?}"));
                    last = Some(counter);
                }
                _ => {
                    counts.error(&format!("sleeper {n}: no answer"));
                    continue 'connect;
                }
            }
            tokio::time::sleep(Duration::from_secs(15)).await;
        }
        return;
    }
}
