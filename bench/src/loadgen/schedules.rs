//! `schedules`: many one-shot schedules over many instances of the examples server's
//! `Reminders`, all due within a few seconds; every one must fire, and each firing's lateness
//! (when its `reminder` frame arrives, against the time it was set for) is measured.
//! `pending`: fills the store with far-future reminders, for the startup measurement of
//! `bench/schedules.py`.
//!
//! ```text
//! loadgen schedules --url ws://127.0.0.1:PORT --server-pid PID --instances 10000 --schedules 100000 --spread 10s --lead 20s
//! loadgen pending   --url ws://127.0.0.1:PORT --instances 1000 --schedules 1000000
//! ```

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::args::Args;
use crate::client::{Ws, connect_all, json_str, within};
use crate::probe::{Server, Usage};
use crate::stats::latency;

/// Microseconds since the Unix epoch: due times are wall-clock times.
fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

type Sink = SplitSink<Ws, Message>;
type Stream = SplitStream<Ws>;

/// Sends `remindAt(at, text)` for every `(at, text)` of `reminders` on one socket, then waits
/// for all the answers; returns how many failed.
async fn schedule(
    sink: &mut Sink,
    stream: &mut Stream,
    method: &str,
    reminders: &[(u64, String)],
) -> Result<usize, String> {
    for (n, (at, text)) in reminders.iter().enumerate() {
        let frame =
            json!({ "type": "rpc", "id": n.to_string(), "method": method, "args": [at, text] });
        sink.send(Message::text(frame.to_string())).await.map_err(|e| format!("send: {e}"))?;
    }
    let (mut answered, mut failed) = (0, 0);
    while answered < reminders.len() {
        let frame = stream.next().await.ok_or("the socket closed")?.map_err(|e| format!("{e}"))?;
        let Message::Text(text) = frame else { continue };
        if json_str(&text, "type") == Some("rpc") {
            answered += 1;
            if !text.contains("\"success\":true") {
                failed += 1;
                if failed == 1 {
                    eprintln!("schedules: a call failed: {text}");
                }
            }
        }
    }
    Ok(failed)
}

pub(crate) async fn run(args: &Args) -> Result<Value, String> {
    args.only(&["instances", "schedules", "spread", "lead"])?;
    let target = args.target()?;
    let instances = args.count("instances", 10_000)?;
    let total = args.count("schedules", 100_000)?;
    let spread = args.duration("spread", Duration::from_secs(10))?;
    let lead = args.duration("lead", Duration::from_secs(20))?;
    let limit = args.duration("timeout", Duration::from_secs(120))?;
    let server = Server::new(args.server_pids()?);
    let sockets = within(limit, "connecting", async {
        connect_all(instances, 256, |i| target.with_path(format!("/agents/reminders/sched{i}")))
            .await
    })
    .await?;
    let (mut sinks, mut streams): (Vec<Sink>, Vec<Stream>) =
        sockets.into_iter().map(StreamExt::split).unzip();
    let rss_before = server.rss_bytes()?;
    // Due times spread evenly over `spread`, starting `lead` from now; reminder `k` goes to
    // instance `k % instances`, and its text is its due time in milliseconds.
    let first_due = now_us() / 1000 + lead.as_millis() as u64;
    let step = spread.as_millis() as f64 / total as f64;
    let mut plan: Vec<Vec<(u64, String)>> = vec![Vec::new(); instances];
    for k in 0..total {
        let at = first_due + (k as f64 * step) as u64;
        plan[k % instances].push((at, format!("{at}:{k}")));
    }
    let started = Instant::now();
    let failed: usize = within(limit, "scheduling", async {
        let calls = sinks
            .iter_mut()
            .zip(streams.iter_mut())
            .zip(&plan)
            .map(|((sink, stream), reminders)| schedule(sink, stream, "remindAt", reminders));
        let results = futures_util::future::join_all(calls).await;
        results.into_iter().sum::<Result<usize, String>>()
    })
    .await?;
    let scheduling_s = started.elapsed().as_secs_f64();
    if now_us() / 1000 >= first_due {
        return Err(format!(
            "scheduling took {scheduling_s:.1} s, past the lead of {lead:?}: raise --lead"
        ));
    }
    // Every socket reads its reminders; lateness is the arrival against the due time.
    let cpu_before = server.usage()?;
    let (sender, mut arrivals) = tokio::sync::mpsc::unbounded_channel::<(u64, usize, u64)>();
    let mut readers = Vec::new();
    for mut stream in streams {
        let sender = sender.clone();
        readers.push(tokio::spawn(async move {
            while let Some(Ok(Message::Text(text))) = stream.next().await {
                let reminder = (json_str(&text, "type") == Some("reminder"))
                    .then(|| json_str(&text, "text"))
                    .flatten()
                    .and_then(|text| text.split_once(':'))
                    .and_then(|(due, k)| {
                        Some((due.parse::<u64>().ok()?, k.parse::<usize>().ok()?))
                    });
                if let Some((due, k)) = reminder {
                    let _ = sender.send((due, k, now_us()));
                }
            }
        }));
    }
    drop(sender);
    let last_due = first_due + spread.as_millis() as u64;
    let mut lateness = Vec::with_capacity(total);
    let mut seen = vec![false; total];
    let mut duplicates = 0;
    let mut rss_peak = rss_before.unwrap_or(0);
    let deadline = Instant::now() + lead + spread + limit;
    let mut sample = tokio::time::interval(Duration::from_millis(100));
    while lateness.len() < total && Instant::now() < deadline {
        tokio::select! {
            arrival = arrivals.recv() => {
                let Some((due, k, at)) = arrival else { break };
                match seen.get_mut(k) {
                    Some(seen) if !*seen => {
                        *seen = true;
                        lateness.push(at.saturating_sub(due * 1000) * 1000);
                    }
                    _ => duplicates += 1,
                }
            }
            _ = sample.tick() => {
                rss_peak = rss_peak.max(server.rss_bytes()?.unwrap_or(0));
            }
        }
    }
    let usage = server.usage_since(cpu_before)?;
    for reader in readers {
        reader.abort();
    }
    let fired = lateness.len();
    let mut report = json!({
        "mode": "schedules",
        "instances": instances,
        "schedules": total,
        "spread_s": spread.as_secs_f64(),
        "scheduling_s": scheduling_s,
        "failed_calls": failed,
        "fired": fired,
        "missing": total.saturating_sub(fired),
        "lateness": latency(&mut lateness),
        "duplicates": duplicates,
        "rss_before": rss_before,
        "rss_peak_during": rss_peak,
        "firing_window_s": (last_due - first_due) as f64 / 1000.0,
    });
    Usage::report(usage, &mut report);
    Ok(report)
}

/// Fills the store with far-future reminders: `schedules` over `instances`, a socket each,
/// then checks one instance lists all of its own.
pub(crate) async fn fill(args: &Args) -> Result<Value, String> {
    args.only(&["instances", "schedules", "concurrency"])?;
    let target = args.target()?;
    let instances = args.count("instances", 1_000)?;
    let total = args.count("schedules", 1_000_000)?;
    let concurrency = args.count("concurrency", 500)?;
    let limit = args.duration("timeout", Duration::from_secs(1800))?;
    let per = total.div_ceil(instances);
    let started = Instant::now();
    let failed = within(limit, "filling", async {
        let fills = futures_util::stream::iter(0..instances).map(|i| {
            let target = target.with_path(format!("/agents/reminders/pending{i}"));
            async move {
                let ws = crate::client::connect(&target, i).await?;
                let (mut sink, mut stream) = ws.split();
                let mut failed = 0;
                // A year from now, a millisecond apart: nothing fires during the run.
                let base = now_us() / 1000 + 365 * 24 * 3600 * 1000;
                let reminders: Vec<(u64, String)> =
                    (0..per).map(|n| (base + n as u64, format!("pending {n}"))).collect();
                for chunk in reminders.chunks(100) {
                    failed += schedule(&mut sink, &mut stream, "remindAt", chunk).await?;
                }
                let _ = sink.close().await;
                Ok::<usize, String>(failed)
            }
        });
        let mut failed = 0;
        let mut results = fills.buffer_unordered(concurrency);
        while let Some(result) = results.next().await {
            failed += result?;
        }
        Ok(failed)
    })
    .await?;
    Ok(json!({
        "mode": "pending",
        "instances": instances,
        "schedules": per * instances,
        "failed_calls": failed,
        "filling_s": started.elapsed().as_secs_f64(),
    }))
}
