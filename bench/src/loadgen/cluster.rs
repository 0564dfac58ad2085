//! Cluster workloads (`bench/cluster.py` runs them against several nodes):
//!
//! - `fanout`: N sockets of one room on one gateway; once every one is in the room (its
//!   identity frame came) the generator says `{"ready": N}` on stdout, and with `--send true`
//!   it waits for a line on stdin and sends one message. Every socket waits for that message;
//!   the report has when it reached the first and the last socket, from the wall-clock time
//!   it carries (the generators of several processes share the clock).
//! - `takeover`: writers call `increment` on one counter through every node in turn, for
//!   `--duration`, while the harness kills owners; the report has every gap between two
//!   acknowledged writes longer than `--gap` (the last acknowledged write before a kill to
//!   the first on the new owner), and whether the count kept every acknowledged increment.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::args::Args;
use crate::client::{Target, connect, connect_all, json_str, within};
use crate::stats;

fn wall_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(0))
}

pub(crate) async fn fanout(args: &Args) -> Result<Value, String> {
    args.only(&["conns", "send", "first"])?;
    let target = args.target()?;
    let conns = args.count("conns", 1000)?;
    let first = args.count("first", 1).map(|first| first - 1)?;
    let send = args.text("send") == Some("true");
    let limit = args.duration("timeout", Duration::from_secs(600))?;
    if conns > crate::MAX_SOCKETS {
        return Err(format!("--conns {conns}: one process opens at most {}", crate::MAX_SOCKETS));
    }
    let (path, query) = target.path_and_query();
    let (path, query) = (path.to_owned(), query.to_owned());
    let sockets = within(
        limit,
        "connecting",
        connect_all(conns, 256, |i| {
            target.with_path(format!("{path}?{query}&username=u{}", first + i))
        }),
    )
    .await?;
    let mut sinks = Vec::new();
    let mut ready = Vec::with_capacity(conns);
    let mut readers = Vec::with_capacity(conns);
    for ws in sockets {
        let (sink, mut stream) = ws.split();
        sinks.push(sink);
        let (joined, joined_rx) = tokio::sync::oneshot::channel::<()>();
        ready.push(joined_rx);
        readers.push(tokio::spawn(async move {
            let mut joined = Some(joined);
            while let Some(Ok(message)) = stream.next().await {
                let Message::Text(text) = message else { continue };
                if json_str(&text, "type") == Some("cf_agent_identity") {
                    if let Some(joined) = joined.take() {
                        let _ = joined.send(());
                    }
                    continue;
                }
                if let Some(sent) = json_str(&text, "text").and_then(|t| t.strip_prefix("fanout:"))
                {
                    let sent: u64 = sent.parse().map_err(|_| "a bad stamp".to_owned())?;
                    return Ok(wall_ns().saturating_sub(sent));
                }
            }
            Err("a socket closed before the broadcast".to_owned())
        }));
    }
    within(limit, "joining", async {
        for joined in ready {
            joined.await.map_err(|_| "a socket closed before it joined".to_owned())?;
        }
        Ok(())
    })
    .await?;
    println!("{}", json!({ "ready": conns }));
    if send {
        let go = tokio::task::spawn_blocking(|| std::io::stdin().read_line(&mut String::new()));
        go.await.map_err(|e| e.to_string())?.map_err(|e| format!("reading stdin: {e}"))?;
        let text = format!("fanout:{}", wall_ns());
        sinks[0].send(Message::text(text)).await.map_err(|e| format!("sending: {e}"))?;
    }
    let mut latencies = Vec::with_capacity(conns);
    let delivered = within(limit, "the broadcast", async {
        for reader in readers {
            latencies.push(reader.await.map_err(|e| e.to_string())??);
        }
        Ok(())
    });
    delivered.await?;
    let report = json!({
        "mode": "fanout",
        "conns": conns,
        "latency": stats::latency(&mut latencies),
        "last_ms": latencies.iter().max().map(|ns| *ns as f64 / 1e6),
    });
    drop(sinks);
    Ok(report)
}

/// Acknowledged writes, as the takeover workload sees them.
#[derive(Default)]
struct Acks {
    /// When each was acknowledged, in nanoseconds since the run started.
    at: Vec<u64>,
    max: i64,
}

pub(crate) async fn takeover(args: &Args) -> Result<Value, String> {
    args.only(&["writers", "duration", "gap"])?;
    let targets = args.targets()?;
    let writers = args.count("writers", 6)?;
    let duration = args.duration("duration", Duration::from_secs(60))?;
    let gap = args.duration("gap", Duration::from_millis(200))?;
    let started = Instant::now();
    let acks = Arc::new(Mutex::new(Acks::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..writers)
        .map(|w| tokio::spawn(write(targets.clone(), w, started, acks.clone(), stop.clone())))
        .collect();
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Release);
    for task in tasks {
        let _ = task.await;
    }
    let (mut at, max) = {
        let acks = acks.lock().map_err(|_| "poisoned")?;
        (acks.at.clone(), acks.max)
    };
    at.sort_unstable();
    let gap_ns = u64::try_from(gap.as_nanos()).unwrap_or(u64::MAX);
    let mut gaps: Vec<u64> = at.windows(2).map(|w| w[1] - w[0]).filter(|&g| g > gap_ns).collect();
    let count = read_count(&targets).await?;
    let report = json!({
        "mode": "takeover",
        "writers": writers,
        "acknowledged": at.len(),
        "max_acknowledged": max,
        "count": count,
        "lost": (max - count).max(0),
        "gaps_ms": gaps.iter().map(|ns| (*ns as f64 / 1e6).round()).collect::<Vec<_>>(),
        "gap": stats::latency(&mut gaps),
    });
    Ok(report)
}

/// Calls `increment` through the nodes in turn until `stop`, noting every acknowledgement.
async fn write(
    targets: Vec<Target>,
    first: usize,
    started: Instant,
    acks: Arc<Mutex<Acks>>,
    stop: Arc<AtomicBool>,
) {
    let mut node = first;
    let mut n = 0u64;
    while !stop.load(Ordering::Acquire) {
        let target = &targets[node % targets.len()];
        node += 1;
        let Ok(Ok(mut ws)) =
            tokio::time::timeout(Duration::from_secs(2), connect(target, first)).await
        else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        while !stop.load(Ordering::Acquire) {
            n += 1;
            let id = n.to_string();
            let frame = json!({ "type": "rpc", "id": id, "method": "increment", "args": [] });
            if ws.send(Message::text(frame.to_string())).await.is_err() {
                break;
            }
            let answer = loop {
                match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
                    Ok(Some(Ok(Message::Text(text))))
                        if json_str(&text, "id") == Some(id.as_str()) =>
                    {
                        break serde_json::from_str::<Value>(&text).ok();
                    }
                    Ok(Some(Ok(_))) => {}
                    _ => break None,
                }
            };
            let Some(answer) = answer else { break };
            match answer["result"].as_i64() {
                Some(count) if answer["success"] == true => {
                    let at = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
                    if let Ok(mut acks) = acks.lock() {
                        acks.at.push(at);
                        acks.max = acks.max.max(count);
                    }
                }
                _ => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }
}

/// The counter's count as a fresh client sees it, through the first node that answers.
async fn read_count(targets: &[Target]) -> Result<i64, String> {
    for _ in 0..50 {
        for (i, target) in targets.iter().enumerate() {
            let Ok(Ok(mut ws)) =
                tokio::time::timeout(Duration::from_secs(2), connect(target, i)).await
            else {
                continue;
            };
            while let Ok(Some(Ok(message))) =
                tokio::time::timeout(Duration::from_secs(2), ws.next()).await
            {
                let Message::Text(text) = message else { continue };
                let frame: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
                if frame["type"] == "cf_agent_state" {
                    return frame["state"]["count"]
                        .as_i64()
                        .ok_or("a state without a count".into());
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err("no node answered with the count".into())
}
