//! `connect`: K upgrades, C at a time, each socket closed (close handshake) once open;
//! upgrades per second and the latency from TCP connect to the 101.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::args::Args;
use crate::client::{connect, within};
use crate::probe::{Server, Usage};
use crate::stats;

pub(crate) async fn run(args: &Args) -> Result<Value, String> {
    args.only(&["total", "concurrency"])?;
    let target = args.target()?;
    let total = args.count("total", 10_000)?;
    let concurrency = args.count("concurrency", 32)?;
    let limit = args.duration("timeout", Duration::from_secs(180))?;
    let server = Server::new(args.server_pids()?);
    let next = Arc::new(AtomicUsize::new(0));
    let usage_before = server.usage()?;
    let started = Instant::now();
    let mut workers = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let (next, target) = (next.clone(), target.clone());
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return Ok::<_, String>(latencies);
                }
                let began = Instant::now();
                let mut ws = connect(&target, i).await.map_err(|e| format!("socket {i}: {e}"))?;
                latencies.push(u64::try_from(began.elapsed().as_nanos()).unwrap_or(u64::MAX));
                // Close cleanly: our close, then read until the server's answer ends it.
                let _ = ws.close(None).await;
                let drain = async { while let Some(Ok(_)) = ws.next().await {} };
                let _ = tokio::time::timeout(Duration::from_secs(5), drain).await;
            }
        }));
    }
    let done = async {
        let mut latencies = Vec::with_capacity(total);
        for worker in workers {
            latencies.extend(worker.await.map_err(|e| e.to_string())??);
        }
        Ok(latencies)
    };
    let mut latencies = within(limit, "connecting", done).await?;
    let seconds = started.elapsed().as_secs_f64();
    let usage = server.usage_since(usage_before)?;
    let cpu = usage.map(|usage| usage.cpu_s());
    let mut report = json!({
        "mode": "connect",
        "total": total,
        "concurrency": concurrency,
        "seconds": seconds,
        "upgrades_per_s": (total as f64 / seconds).round(),
        "latency": stats::latency(&mut latencies),
    });
    Usage::report(usage, &mut report);
    eprintln!(
        "connect: {total} upgrades, {concurrency} at a time, in {seconds:.2} s: {} /s, server CPU {cpu:?} s, latency {}",
        report["upgrades_per_s"], report["latency"]
    );
    Ok(report)
}
