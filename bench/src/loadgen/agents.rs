//! `agents`: many small agents, the shape of one agent per user or document. N instances with
//! one socket each (or none, reached over HTTP only); the server's RSS per instance while they
//! are awake, and again `--hibernate-wait` later, once they hibernated (or left memory).
//!
//! With sockets, each instance is `{path}-{first + i}`: the socket waits for the instance's
//! identity frame (it ran its connect), and with `--count` sends `count` and waits for the
//! answer (a state write). Without (`--http`), each instance answers one `GET` and keeps no
//! socket.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use crate::args::Args;
use crate::client::{Ws, connect_all, json_str, within};
use crate::probe::{Server, get_json};

/// Keep-alive connections the HTTP requests are spread over.
const HTTP_CONNECTIONS: usize = 16;

pub(crate) async fn run(args: &Args) -> Result<Value, String> {
    args.only(&["instances", "first", "http", "count", "hibernate-wait", "settle"])?;
    let target = args.target()?;
    let instances = args.count("instances", 10_000)?;
    let first = match args.text("first") {
        None => 0,
        Some(text) => text.parse().map_err(|_| format!("--first: `{text}` is not a count"))?,
    };
    let http = args.text("http") == Some("true");
    let count = args.text("count") == Some("true");
    let hibernate_wait = args.duration("hibernate-wait", Duration::from_secs(30))?;
    let settle = args.duration("settle", Duration::from_secs(2))?;
    let limit = args.duration("timeout", Duration::from_secs(600))?;
    if !http && instances > crate::MAX_SOCKETS {
        return Err(format!(
            "--instances {instances}: one process opens at most {}",
            crate::MAX_SOCKETS
        ));
    }
    let server = Server::new(args.server_pids()?);
    let pid_needed = || "agents needs --server-pid to read the server's memory".to_owned();
    let before = server.rss_bytes()?.ok_or_else(pid_needed)?;
    let (path, _) = target.path_and_query();
    let name = |i: usize| format!("{path}-{}", first + i);
    let mut sockets = Vec::new();
    if http {
        within(limit, "requesting", get_all(&target.addr.to_string(), instances, name)).await?;
    } else {
        let opened = connect_all(instances, 128, |i| target.with_path(name(i)));
        sockets = within(limit, "connecting", opened).await?;
        for (i, ws) in sockets.iter_mut().enumerate() {
            within(limit, "waiting for the identity", started(ws, i, count)).await?;
        }
    }
    tokio::time::sleep(settle).await;
    let awake = server.rss_bytes()?.ok_or_else(pid_needed)?;
    // The sockets' frames are read meanwhile (a ping must not go unanswered).
    let readers: Vec<_> = sockets
        .into_iter()
        .map(|mut ws| tokio::spawn(async move { while let Some(Ok(_)) = ws.next().await {} }))
        .collect();
    tokio::time::sleep(hibernate_wait).await;
    let asleep = server.rss_bytes()?.ok_or_else(pid_needed)?;
    let per = |rss: u64| (rss.saturating_sub(before) as f64 / instances as f64).round();
    let mut report = json!({
        "mode": "agents",
        "path": path,
        "instances": instances,
        "sockets_per_instance": if http { 0 } else { 1 },
        "wrote_state": count,
        "rss_before": before,
        "rss_awake": awake,
        "rss_hibernated": asleep,
        "bytes_per_agent_awake": per(awake),
        "bytes_per_agent_hibernated": per(asleep),
        "hibernate_wait_s": hibernate_wait.as_secs_f64(),
    });
    if let Some(url) = args.text("stats-url") {
        report["server"] = get_json(url).await?;
    }
    eprintln!(
        "agents: {instances} instances, {} socket(s) each: RSS {before} -> {awake} B awake ({} B each), {asleep} B after {hibernate_wait:?} ({} B each)",
        if http { 0 } else { 1 },
        per(awake),
        per(asleep)
    );
    for reader in readers {
        reader.abort();
    }
    Ok(report)
}

/// Waits for socket `i`'s identity frame, then with `count` sends `count` and waits for the
/// answer.
async fn started(ws: &mut Ws, i: usize, count: bool) -> Result<(), String> {
    let next = |frame: Option<Result<Message, _>>| match frame {
        Some(Ok(Message::Text(text))) => Ok(Some(text.as_str().to_owned())),
        Some(Ok(_)) => Ok(None),
        Some(Err(e)) => Err(format!("socket {i}: {e}")),
        None => Err(format!("socket {i}: closed")),
    };
    loop {
        let frame = next(ws.next().await)?;
        if frame.as_deref().and_then(|f| json_str(f, "type")) == Some("cf_agent_identity") {
            break;
        }
    }
    if count {
        futures_util::SinkExt::send(ws, Message::text("count"))
            .await
            .map_err(|e| format!("socket {i}: {e}"))?;
        while !next(ws.next().await)?.is_some_and(|f| f.contains("\"counter\"")) {}
    }
    Ok(())
}

/// `GET`s every instance's path once, over [`HTTP_CONNECTIONS`] keep-alive connections,
/// each answer read to its end.
async fn get_all(
    host: &str,
    instances: usize,
    name: impl Fn(usize) -> String,
) -> Result<(), String> {
    let mut workers = Vec::new();
    for worker in 0..HTTP_CONNECTIONS {
        let paths: Vec<String> = (worker..instances).step_by(HTTP_CONNECTIONS).map(&name).collect();
        let host = host.to_owned();
        workers.push(tokio::spawn(async move {
            let mut stream = TcpStream::connect(&host).await.map_err(|e| format!("{host}: {e}"))?;
            let mut buffer = Vec::with_capacity(4096);
            for path in paths {
                let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n");
                stream.write_all(request.as_bytes()).await.map_err(|e| e.to_string())?;
                read_response(&mut stream, &mut buffer)
                    .await
                    .map_err(|e| format!("GET {path}: {e}"))?;
            }
            Ok::<_, String>(())
        }));
    }
    for worker in workers {
        worker.await.map_err(|e| e.to_string())??;
    }
    Ok(())
}

/// Reads one `200` response with a `content-length` body from `stream`.
async fn read_response(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Result<(), String> {
    buffer.clear();
    loop {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("the connection closed".into());
        }
        buffer.extend_from_slice(&chunk[..n]);
        let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
        let head = String::from_utf8_lossy(&buffer[..end]).to_ascii_lowercase();
        if !head.starts_with("http/1.1 200") {
            return Err(head.lines().next().unwrap_or_default().to_owned());
        }
        let length = head
            .lines()
            .find_map(|line| line.strip_prefix("content-length:"))
            .and_then(|value| value.trim().parse::<usize>().ok())
            .ok_or("no content-length")?;
        if buffer.len() >= end + 4 + length {
            return Ok(());
        }
    }
}
