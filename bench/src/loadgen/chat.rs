//! `chat`: N sockets in one room, S of them sending M messages each; every message reaches
//! all N (the sender included). Counts deliveries, the server's CPU time, and the latency from
//! send to each delivery.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::SplitStream;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;

use crate::args::Args;
use crate::client::{Ws, connect_all, json_str, nanos_since, within};
use crate::probe::{Server, Usage};
use crate::stats;

/// The message every socket waits for before the measured part starts: it comes after
/// every join frame, so none of those is counted.
const SYNC: &str = "sync";

/// How long to wait for everyone to hear the sync before saying it again.
const RESYNC: Duration = Duration::from_millis(250);

pub(crate) async fn run(args: &Args) -> Result<Value, String> {
    args.only(&["conns", "senders", "messages", "window"])?;
    let targets = args.targets()?;
    let target = targets[0].clone();
    let conns = args.count("conns", 32)?;
    let senders = args.count("senders", conns)?;
    let messages = args.count("messages", 200)?;
    let window = args.count("window", 4)?;
    let limit = args.duration("timeout", Duration::from_secs(180))?;
    if conns > crate::MAX_SOCKETS {
        return Err(format!("--conns {conns}: one process opens at most {}", crate::MAX_SOCKETS));
    }
    if senders > conns {
        return Err(format!("--senders {senders} is more than --conns {conns}"));
    }
    let server = Server::new(args.server_pids()?);
    let (path, _) = target.path_and_query();
    let path = path.to_owned();
    let sockets = within(
        limit,
        "connecting",
        connect_all(conns, 64, |i| {
            targets[i % targets.len()].with_path(format!("{path}?username=u{i}"))
        }),
    )
    .await?;

    let epoch = Instant::now();
    let expected = senders * messages;
    let synced = Arc::new(Semaphore::new(0));
    let mut sinks = Vec::with_capacity(conns);
    let mut readers = Vec::with_capacity(conns);
    let mut windows = Vec::with_capacity(senders);
    for (i, ws) in sockets.into_iter().enumerate() {
        let (sink, stream) = ws.split();
        sinks.push(sink);
        let window = (i < senders).then(|| Arc::new(Semaphore::new(window)));
        windows.extend(window.clone());
        let reader = Reader { me: i, window, expected, epoch, synced: synced.clone() };
        readers.push(tokio::spawn(reader.run(stream)));
    }
    // A socket is in the room once the server has run its connect, which may come after its
    // 101: the sync is repeated until every socket has heard it.
    let permits = u32::try_from(conns).map_err(|_| "too many sockets".to_owned())?;
    let all_synced = async {
        loop {
            sinks[0].send(Message::text(SYNC)).await.map_err(|e| format!("sending sync: {e}"))?;
            let wait = tokio::time::timeout(RESYNC, synced.acquire_many(permits)).await;
            if let Ok(acquired) = wait {
                return acquired.map(drop).map_err(|e| e.to_string());
            }
        }
    };
    within(limit, "waiting for the joins to be delivered", all_synced).await?;

    let usage_before = server.usage()?;
    let started = Instant::now();
    let mut sending = Vec::with_capacity(senders);
    for (s, mut sink) in sinks.drain(..senders).enumerate() {
        let window = windows[s].clone();
        sending.push(tokio::spawn(async move {
            for seq in 0..messages {
                window.acquire().await.map_err(|e| e.to_string())?.forget();
                let text = format!("{s}:{seq}:{}", nanos_since(epoch));
                sink.send(Message::text(text)).await.map_err(|e| format!("sender {s}: {e}"))?;
            }
            Ok::<_, String>(sink)
        }));
    }
    let delivered = async {
        let mut latencies = Vec::with_capacity(expected * conns);
        for reader in readers {
            latencies.extend(reader.await.map_err(|e| e.to_string())??);
        }
        Ok(latencies)
    };
    let mut latencies = within(limit, "delivering", delivered).await?;
    let seconds = started.elapsed().as_secs_f64();
    let usage = server.usage_since(usage_before)?;
    let cpu = usage.map(|usage| usage.cpu_s());
    for sender in sending {
        sinks.push(sender.await.map_err(|e| e.to_string())??);
    }
    let deliveries = latencies.len();
    let per_cpu = cpu.filter(|cpu| *cpu > 0.0).map(|cpu| (deliveries as f64 / cpu).round());
    let mut report = json!({
        "mode": "chat",
        "conns": conns,
        "senders": senders,
        "messages": messages,
        "window": window,
        "deliveries": deliveries,
        "seconds": seconds,
        "deliveries_per_s": (deliveries as f64 / seconds).round(),
        "deliveries_per_cpu_s": per_cpu,
        "latency": stats::latency(&mut latencies),
    });
    Usage::report(usage, &mut report);
    eprintln!(
        "chat: {conns} sockets, {senders} senders x {messages} messages: {deliveries} deliveries in \
         {seconds:.2} s ({} /s), server CPU {cpu:?} s ({per_cpu:?} deliveries per CPU-second), latency {}",
        report["deliveries_per_s"], report["latency"]
    );
    drop(sinks);
    Ok(report)
}

/// One socket's reading side.
struct Reader {
    me: usize,
    /// This socket's sending window, when it sends: its own messages coming back free a slot.
    window: Option<Arc<Semaphore>>,
    expected: usize,
    epoch: Instant,
    synced: Arc<Semaphore>,
}

impl Reader {
    /// Waits for the sync message, then for `expected` chat messages; returns their latencies.
    async fn run(self, mut stream: SplitStream<Ws>) -> Result<Vec<u64>, String> {
        let mut syncing = true;
        let mut latencies = Vec::with_capacity(self.expected);
        while latencies.len() < self.expected {
            let text = match stream.next().await {
                Some(Ok(Message::Text(text))) => text,
                Some(Ok(Message::Close(_)) | Err(_)) | None => {
                    return Err(format!(
                        "socket {} closed after {} of {} messages",
                        self.me,
                        latencies.len(),
                        self.expected
                    ));
                }
                Some(Ok(_)) => continue,
            };
            if json_str(&text, "type") != Some("message") {
                continue; // join, leave, protocol frames
            }
            let body = json_str(&text, "text").ok_or("a message frame without text")?;
            if body == SYNC {
                if syncing {
                    syncing = false;
                    self.synced.add_permits(1);
                }
                continue;
            }
            if syncing {
                continue;
            }
            let mut parts = body.split(':').map(str::parse::<u64>);
            let (Some(Ok(sender)), Some(Ok(_seq)), Some(Ok(sent))) =
                (parts.next(), parts.next(), parts.next())
            else {
                return Err(format!("unexpected message text `{body}`"));
            };
            latencies.push(nanos_since(self.epoch).saturating_sub(sent));
            if sender == self.me as u64
                && let Some(window) = &self.window
            {
                window.add_permits(1);
            }
        }
        // Keep reading (and discarding) until the run ends, so the server is never blocked.
        tokio::spawn(async move { while stream.next().await.is_some() {} });
        Ok(latencies)
    }
}
