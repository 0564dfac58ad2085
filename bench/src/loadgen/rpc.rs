//! `rpc`: `increment` calls over the agents protocol at a fixed rate (open loop, spread over
//! C sockets); the latency of each answer, and the group-commit figures of `bench-server`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use crate::args::Args;
use crate::client::{connect_all, json_str, within};
use crate::probe::{Server, Usage, get_json};
use crate::stats;

/// Calls sent and not answered yet: call id to send time.
type Pending = Arc<Mutex<HashMap<u64, Instant>>>;

pub(crate) async fn run(args: &Args) -> Result<Value, String> {
    args.only(&["rate", "calls", "conns", "method"])?;
    let target = args.target()?;
    let rate = args.count("rate", 1000)?;
    let calls = args.count("calls", 10_000)?;
    let conns = args.count("conns", 4)?;
    let method = args.text("method").unwrap_or("increment").to_owned();
    let limit = args.duration("timeout", Duration::from_secs(180))?;
    let server = Server::new(args.server_pids()?);
    let sockets = within(limit, "connecting", connect_all(conns, 16, |_| target.clone())).await?;
    let pending = Pending::default();
    let (answered, mut answers) = mpsc::unbounded_channel::<Result<u64, String>>();
    let mut sinks = Vec::with_capacity(conns);
    let mut ready = Vec::with_capacity(conns);
    for ws in sockets {
        let (sink, mut stream) = ws.split();
        sinks.push(sink);
        let (pending, answered) = (pending.clone(), answered.clone());
        let (identified, identity) = tokio::sync::oneshot::channel();
        ready.push(identity);
        tokio::spawn(async move {
            let mut identified = Some(identified);
            while let Some(Ok(frame)) = stream.next().await {
                let Message::Text(text) = frame else { continue };
                match json_str(&text, "type") {
                    Some("cf_agent_identity") => {
                        if let Some(identified) = identified.take() {
                            let _ = identified.send(());
                        }
                    }
                    Some("rpc") => {
                        let Some(id) = json_str(&text, "id").and_then(|id| id.parse().ok()) else {
                            continue;
                        };
                        let sent = lock(&pending).remove(&id);
                        let answer = match (sent, text.contains("\"success\":true")) {
                            (Some(sent), true) => {
                                Ok(u64::try_from(sent.elapsed().as_nanos()).unwrap_or(u64::MAX))
                            }
                            (_, false) => Err(format!("call {id} failed: {}", text.as_str())),
                            (None, true) => Err(format!("an answer to unknown call {id}")),
                        };
                        let _ = answered.send(answer);
                    }
                    _ => {} // state broadcasts
                }
            }
        });
    }
    for identity in ready {
        within(limit, "waiting for the identity frame", async {
            identity.await.map_err(|_| "the socket closed before its identity frame".to_owned())
        })
        .await?;
    }
    let stats_before = match args.text("stats-url") {
        Some(url) => Some(get_json(url).await?),
        None => None,
    };
    let usage_before = server.usage()?;
    let started = Instant::now();
    let sending = tokio::spawn({
        let pending = pending.clone();
        async move {
            let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
            for id in 0..calls as u64 {
                ticks.tick().await;
                let frame =
                    json!({"type": "rpc", "id": id.to_string(), "method": method, "args": []});
                lock(&pending).insert(id, Instant::now());
                let sink = &mut sinks[id as usize % conns];
                sink.send(Message::text(frame.to_string())).await.map_err(|e| e.to_string())?;
            }
            Ok::<_, String>(sinks)
        }
    });
    let collect = async {
        let mut latencies = Vec::with_capacity(calls);
        while latencies.len() < calls {
            match answers.recv().await {
                Some(answer) => latencies.push(answer?),
                None => return Err("every socket closed".to_owned()),
            }
        }
        Ok(latencies)
    };
    let mut latencies = within(limit, "answering", collect).await?;
    let seconds = started.elapsed().as_secs_f64();
    let usage = server.usage_since(usage_before)?;
    let _sinks = sending.await.map_err(|e| e.to_string())??;
    let mut report = json!({
        "mode": "rpc",
        "path": target.path,
        "rate": rate,
        "calls": calls,
        "conns": conns,
        "seconds": seconds,
        "calls_per_s": (calls as f64 / seconds).round(),
        "latency": stats::latency(&mut latencies),
    });
    Usage::report(usage, &mut report);
    if let (Some(before), Some(url)) = (stats_before, args.text("stats-url")) {
        let after = get_json(url).await?;
        let delta =
            |key: &str| after[key].as_u64().unwrap_or(0) - before[key].as_u64().unwrap_or(0);
        let (writes, flushes) = (delta("durable_writes"), delta("flushes"));
        report["durable_writes"] = json!(writes);
        report["flushes"] = json!(flushes);
        report["writes_per_flush"] =
            json!(if flushes == 0 { 0.0 } else { writes as f64 / flushes as f64 });
        report["largest_batch"] = after["largest_batch"].clone();
    }
    eprintln!("rpc: {report}");
    Ok(report)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
