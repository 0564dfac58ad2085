//! `storm`: a reconnect storm, as after a deploy or a crash. K clients connect as fast as
//! they can (C upgrades in flight) into rooms of R, and stay: each join is broadcast to the
//! room's earlier members, as the seeds' `ChatRoom` does. Connections per server CPU-second
//! (until every join is delivered) and the latency from TCP connect to the 101.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message;

use crate::args::Args;
use crate::client::{connect, json_str, within};
use crate::probe::{Server, Usage};
use crate::stats;

pub(crate) async fn run(args: &Args) -> Result<Value, String> {
    args.only(&["total", "per-room", "concurrency"])?;
    let target = args.target()?;
    let total = args.count("total", 5_000)?;
    let per_room = args.count("per-room", 100)?;
    let concurrency = args.count("concurrency", 64)?;
    let limit = args.duration("timeout", Duration::from_secs(180))?;
    if total > crate::MAX_SOCKETS {
        return Err(format!("--total {total}: one process opens at most {}", crate::MAX_SOCKETS));
    }
    let server = Server::new(args.server_pids()?);
    let (path, _) = target.path_and_query();
    let path = path.to_owned();
    // Every member hears the joins of those who come after it.
    let expected: usize = (0..total.div_ceil(per_room))
        .map(|room| {
            let members = per_room.min(total - room * per_room);
            members * (members - 1) / 2
        })
        .sum();
    let joins = Arc::new(AtomicUsize::new(0));
    let all_joined = Arc::new(Notify::new());
    let next = Arc::new(AtomicUsize::new(0));
    let usage_before = server.usage()?;
    let started = Instant::now();
    let mut workers = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let (next, target, path) = (next.clone(), target.clone(), path.clone());
        let (joins, all_joined) = (joins.clone(), all_joined.clone());
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut readers = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return Ok::<_, String>((latencies, readers));
                }
                let room = target.with_path(format!("{path}-{}?username=u{i}", i / per_room));
                let began = Instant::now();
                let ws = connect(&room, i).await.map_err(|e| format!("socket {i}: {e}"))?;
                latencies.push(u64::try_from(began.elapsed().as_nanos()).unwrap_or(u64::MAX));
                let (joins, all_joined) = (joins.clone(), all_joined.clone());
                readers.push(tokio::spawn(async move {
                    let (_sink, mut stream) = ws.split();
                    while let Some(Ok(frame)) = stream.next().await {
                        if let Message::Text(text) = frame
                            && json_str(&text, "type") == Some("join")
                            && joins.fetch_add(1, Ordering::Relaxed) + 1 == expected
                        {
                            all_joined.notify_one();
                        }
                    }
                }));
            }
        }));
    }
    let mut latencies = Vec::with_capacity(total);
    let mut readers = Vec::with_capacity(total);
    let connected = async {
        for worker in workers {
            let (times, tasks) = worker.await.map_err(|e| e.to_string())??;
            latencies.extend(times);
            readers.extend(tasks);
        }
        Ok(())
    };
    within(limit, "connecting", connected).await?;
    let connected_s = started.elapsed().as_secs_f64();
    if expected > 0 {
        let delivered = async {
            all_joined.notified().await;
            Ok(())
        };
        let heard = within(limit, "waiting for the joins", delivered).await;
        heard.map_err(|why| {
            format!("{why} ({} of {expected} heard)", joins.load(Ordering::Relaxed))
        })?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let usage = server.usage_since(usage_before)?;
    let cpu = usage.map(|usage| usage.cpu_s());
    let mut report = json!({
        "mode": "storm",
        "total": total,
        "per_room": per_room,
        "concurrency": concurrency,
        "joins_delivered": expected,
        "connected_s": connected_s,
        "seconds": seconds,
        "connections_per_s": (total as f64 / seconds).round(),
        "connections_per_cpu_s": cpu.map(|cpu| (total as f64 / cpu).round()),
        "latency": stats::latency(&mut latencies),
    });
    Usage::report(usage, &mut report);
    eprintln!(
        "storm: {total} clients in rooms of {per_room}, {concurrency} at a time: connected in {connected_s:.2} s, joins in {seconds:.2} s, server CPU {cpu:?} s, {} per CPU-second, upgrade latency {}",
        report["connections_per_cpu_s"], report["latency"]
    );
    for reader in readers {
        reader.abort();
    }
    Ok(report)
}
