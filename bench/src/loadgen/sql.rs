//! `sql`: acknowledged writes (`put`) by W closed-loop writers, each on an instance of its
//! own, or point reads (`get`) of one instance holding `--rows` entries; and `footprint`: the
//! server's RSS per instance that wrote, awake and then hibernated. For `Catalog` (SQL) and
//! `bench-server`'s `KvCatalog` (the same calls on the key-value storage).

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::args::Args;
use crate::client::{Ws, connect_all, json_str, within};
use crate::probe::{Server, Usage, get_json};
use crate::stats;

/// A value of 100 bytes, as a cache entry might hold.
fn value(n: usize) -> String {
    format!("{n:0>100}")
}

/// One socket's calls, one at a time.
struct Caller {
    ws: Ws,
    next_id: u64,
}

impl Caller {
    /// Waits for the identity frame (the instance started).
    async fn ready(ws: Ws) -> Result<Self, String> {
        let mut caller = Self { ws, next_id: 0 };
        loop {
            if caller.frame().await?.as_deref().and_then(|f| json_str(f, "type"))
                == Some("cf_agent_identity")
            {
                return Ok(caller);
            }
        }
    }

    async fn frame(&mut self) -> Result<Option<String>, String> {
        match self.ws.next().await {
            Some(Ok(Message::Text(text))) => Ok(Some(text.as_str().to_owned())),
            Some(Ok(_)) => Ok(None),
            Some(Err(e)) => Err(e.to_string()),
            None => Err("the socket closed".into()),
        }
    }

    async fn send(&mut self, method: &str, args: Value) -> Result<u64, String> {
        self.next_id += 1;
        let frame =
            json!({"type": "rpc", "id": self.next_id.to_string(), "method": method, "args": args});
        self.ws.send(Message::text(frame.to_string())).await.map_err(|e| e.to_string())?;
        Ok(self.next_id)
    }

    /// Waits for the answer to call `id`.
    async fn answer(&mut self, id: u64) -> Result<(), String> {
        let id = id.to_string();
        loop {
            let Some(frame) = self.frame().await? else { continue };
            if json_str(&frame, "type") == Some("rpc")
                && json_str(&frame, "id") == Some(id.as_str())
            {
                return match frame.contains("\"success\":true") {
                    true => Ok(()),
                    false => Err(format!("call {id} failed: {frame}")),
                };
            }
        }
    }

    /// One call, answered; its latency in nanoseconds.
    async fn call(&mut self, method: &str, args: Value) -> Result<u64, String> {
        let sent = Instant::now();
        let id = self.send(method, args).await?;
        self.answer(id).await?;
        Ok(u64::try_from(sent.elapsed().as_nanos()).unwrap_or(u64::MAX))
    }
}

pub(crate) async fn run(args: &Args) -> Result<Value, String> {
    args.only(&["op", "writers", "rows", "duration"])?;
    let target = args.target()?;
    let op = args.text("op").unwrap_or("put").to_owned();
    let writers = args.count("writers", 1)?;
    let rows = args.count("rows", 10_000)?;
    let duration = args.duration("duration", Duration::from_secs(10))?;
    let limit = args.duration("timeout", Duration::from_secs(300))?;
    let server = Server::new(args.server_pids()?);
    let (path, _) = target.path_and_query();
    let path = path.to_owned();
    let conns = if op == "get" { 1 } else { writers };
    let sockets = within(
        limit,
        "connecting",
        connect_all(conns, 64, |i| target.with_path(format!("{path}-{i}"))),
    )
    .await?;
    let mut callers = Vec::with_capacity(conns);
    for ws in sockets {
        callers.push(within(limit, "waiting for the identity", Caller::ready(ws)).await?);
    }
    if op == "get" {
        // Fill the instance, a window of 64 calls at a time.
        let caller = &mut callers[0];
        for start in (0..rows).step_by(64) {
            let mut ids = Vec::new();
            for n in start..(start + 64).min(rows) {
                ids.push(caller.send("put", json!([format!("key{n}"), value(n)])).await?);
            }
            for id in ids {
                caller.answer(id).await?;
            }
        }
    }
    let stats_before = match args.text("stats-url") {
        Some(url) => Some(get_json(url).await?),
        None => None,
    };
    let usage_before = server.usage()?;
    let started = Instant::now();
    let tasks = callers.into_iter().enumerate().map(|(w, mut caller)| {
        let op = op.clone();
        tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut n = 0usize;
            while started.elapsed() < duration {
                let args = match op.as_str() {
                    "get" => json!([format!("key{}", (n * 7919) % rows)]),
                    _ => json!([format!("w{w}-{n}"), value(n)]),
                };
                latencies.push(caller.call(&op, args).await?);
                n += 1;
            }
            Ok::<_, String>(latencies)
        })
    });
    let mut latencies = Vec::new();
    for task in tasks.collect::<Vec<_>>() {
        latencies.extend(
            within(limit, "calling", async { task.await.map_err(|e| e.to_string())? }).await?,
        );
    }
    let seconds = started.elapsed().as_secs_f64();
    let usage = server.usage_since(usage_before)?;
    let mut report = json!({
        "mode": "sql",
        "path": path,
        "op": op,
        "writers": conns,
        "seconds": seconds,
        "calls": latencies.len(),
        "calls_per_s": (latencies.len() as f64 / seconds).round(),
        "latency": stats::latency(&mut latencies),
    });
    Usage::report(usage, &mut report);
    if let (Some(before), Some(url)) = (stats_before, args.text("stats-url")) {
        let after = get_json(url).await?;
        let delta =
            |key: &str| after[key].as_u64().unwrap_or(0) - before[key].as_u64().unwrap_or(0);
        let (writes, flushes) = (delta("durable_writes"), delta("flushes"));
        report["flushes"] = json!(flushes);
        report["writes_per_flush"] =
            json!(if flushes == 0 { 0.0 } else { writes as f64 / flushes as f64 });
    }
    eprintln!("sql: {report}");
    Ok(report)
}

/// `footprint`: N instances that each wrote once (a socket each); the server's RSS before, with
/// every instance awake, and after `--hibernate-wait`.
pub(crate) async fn footprint(args: &Args) -> Result<Value, String> {
    args.only(&["instances", "hibernate-wait", "settle"])?;
    let target = args.target()?;
    let instances = args.count("instances", 1000)?;
    let hibernate_wait = args.duration("hibernate-wait", Duration::from_secs(15))?;
    let settle = args.duration("settle", Duration::from_secs(2))?;
    let limit = args.duration("timeout", Duration::from_secs(300))?;
    let server = Server::new(args.server_pids()?);
    let pid_needed = || "footprint needs --server-pid to read the server's memory".to_owned();
    let before = server.rss_bytes()?.ok_or_else(pid_needed)?;
    let (path, _) = target.path_and_query();
    let path = path.to_owned();
    let sockets = within(
        limit,
        "connecting",
        connect_all(instances, 64, |i| target.with_path(format!("{path}-{i}"))),
    )
    .await?;
    let mut callers = Vec::with_capacity(instances);
    for ws in sockets {
        let mut caller = within(limit, "waiting for the identity", Caller::ready(ws)).await?;
        within(limit, "writing", caller.call("put", json!(["key", value(0)]))).await?;
        callers.push(caller);
    }
    tokio::time::sleep(settle).await;
    let awake = server.rss_bytes()?.ok_or_else(pid_needed)?;
    tokio::time::sleep(hibernate_wait).await;
    let hibernated = server.rss_bytes()?.ok_or_else(pid_needed)?;
    let gauges = match args.text("stats-url") {
        Some(url) => get_json(url).await?,
        None => Value::Null,
    };
    let per = |rss: u64| (rss.saturating_sub(before) as f64 / instances as f64).round();
    let report = json!({
        "mode": "footprint",
        "path": path,
        "instances": instances,
        "rss_before_mib": before as f64 / 1048576.0,
        "rss_awake_mib": awake as f64 / 1048576.0,
        "rss_hibernated_mib": hibernated as f64 / 1048576.0,
        "bytes_per_awake_instance": per(awake),
        "bytes_per_hibernated_instance": per(hibernated),
        "hibernated_instances": gauges["hibernated_instances"],
        "live_instances": gauges["live_instances"],
    });
    drop(callers);
    eprintln!("footprint: {report}");
    Ok(report)
}
