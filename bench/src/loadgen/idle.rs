//! `idle`: N open sockets in rooms of R; the server's RSS per socket once every join is
//! delivered (awake), and again after `--hibernate-wait` (hibernated, for servers that do).

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;

use crate::args::Args;
use crate::client::{connect_all, json_str, within};
use crate::probe::{Server, get_json};

pub(crate) async fn run(args: &Args) -> Result<Value, String> {
    args.only(&["conns", "per-room", "hibernate-wait", "settle"])?;
    let target = args.target()?;
    let conns = args.count("conns", 10_000)?;
    let per_room = args.count("per-room", 100)?;
    let hibernate_wait = args.duration("hibernate-wait", Duration::ZERO)?;
    let settle = args.duration("settle", Duration::from_secs(2))?;
    let limit = args.duration("timeout", Duration::from_secs(300))?;
    if conns > crate::MAX_SOCKETS {
        return Err(format!("--conns {conns}: one process opens at most {}", crate::MAX_SOCKETS));
    }
    let server = Server::new(args.server_pids()?);
    let pid_needed = || "idle needs --server-pid to read the server's memory".to_owned();
    let before = server.rss_bytes()?.ok_or_else(pid_needed)?;
    let (path, _) = target.path_and_query();
    let path = path.to_owned();
    let room = |i: usize| i / per_room;
    let sockets = within(
        limit,
        "connecting",
        connect_all(conns, 128, |i| target.with_path(format!("{path}-{}?username=u{i}", room(i)))),
    )
    .await?;

    // The last socket of each room says "sync"; once everyone heard it, every join is in.
    // A socket is in its room once the server ran its connect, which may come after its 101:
    // the sync is repeated until every socket has heard one.
    let synced = Arc::new(Semaphore::new(0));
    let mut sinks = Vec::with_capacity(conns);
    let mut last_of_room = Vec::new();
    for (i, ws) in sockets.into_iter().enumerate() {
        let (sink, mut stream) = ws.split();
        let synced = synced.clone();
        tokio::spawn(async move {
            let mut heard = false;
            while let Some(Ok(frame)) = stream.next().await {
                if let Message::Text(text) = frame
                    && !heard
                    && json_str(&text, "text") == Some("sync")
                {
                    heard = true;
                    synced.add_permits(1);
                }
            }
        });
        if i + 1 == conns || room(i + 1) != room(i) {
            last_of_room.push(i);
        }
        sinks.push(sink);
    }
    let permits = u32::try_from(conns).map_err(|_| "too many sockets".to_owned())?;
    let all_synced = async {
        loop {
            for &i in &last_of_room {
                let sync = Message::text("sync");
                sinks[i].send(sync).await.map_err(|e| format!("socket {i}: {e}"))?;
            }
            let wait = tokio::time::timeout(Duration::from_secs(1), synced.acquire_many(permits));
            if let Ok(acquired) = wait.await {
                return acquired.map(drop).map_err(|e| e.to_string());
            }
        }
    };
    within(limit, "waiting for the joins to be delivered", all_synced).await?;
    tokio::time::sleep(settle).await;
    let awake = server.rss_bytes()?.ok_or_else(pid_needed)?;
    let per_conn = |rss: u64| (rss.saturating_sub(before) as f64 / conns as f64).round();
    let mut report = json!({
        "mode": "idle",
        "conns": conns,
        "per_room": per_room,
        "rss_before": before,
        "rss_awake": awake,
        "bytes_per_conn_awake": per_conn(awake),
    });
    eprintln!(
        "idle: {conns} sockets: server RSS {before} -> {awake} B, {} B per socket",
        per_conn(awake)
    );
    if !hibernate_wait.is_zero() {
        tokio::time::sleep(hibernate_wait).await;
        let asleep = server.rss_bytes()?.ok_or_else(pid_needed)?;
        report["rss_hibernated"] = json!(asleep);
        report["bytes_per_conn_hibernated"] = json!(per_conn(asleep));
        eprintln!(
            "idle: after {hibernate_wait:?}: RSS {asleep} B, {} B per socket",
            per_conn(asleep)
        );
    }
    if let Some(url) = args.text("stats-url") {
        report["server"] = get_json(url).await?;
    }
    drop(sinks);
    Ok(report)
}
