//! The ceiling peer: a minimal chat server on plain tokio-tungstenite, with `ChatRoom`'s
//! frames (join to the others, message to all, leave) and none of the agent machinery. Each
//! broadcast is serialized once; each socket has a bounded queue drained by its own task.
//!
//! `tokio-peer 127.0.0.1:PORT`

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

/// Messages a socket's queue holds before the slowest reader is dropped.
const QUEUE: usize = 1024;

type Rooms = Arc<Mutex<HashMap<String, HashMap<u64, mpsc::Sender<Utf8Bytes>>>>>;

// tokio's default scheduler (one worker on the benchmarks' one core). Its single-threaded
// scheduler, which `bench-server` runs, cut this server's chat 1000x1 to a third (261,140
// deliveries per CPU-second in 2026-11-30t.json, against 851,800 in 2026-11-29q.json), so the
// peer stays as it was.
#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:8790".into());
    let listener = TcpListener::bind(&addr).await?;
    println!("tokio-peer listening on {}", listener.local_addr()?);
    let rooms = Rooms::default();
    let mut next_id = 0u64;
    loop {
        let (stream, _) = listener.accept().await?;
        next_id += 1;
        tokio::spawn(serve(stream, next_id, rooms.clone()));
    }
}

async fn serve(stream: TcpStream, id: u64, rooms: Rooms) {
    let _ = stream.set_nodelay(true);
    let mut target = String::new();
    // The callback's signature is tungstenite's; its error type is not ours to shrink.
    #[allow(clippy::result_large_err)]
    let read_target = |request: &Request, response: Response| {
        target = request.uri().to_string();
        Ok(response)
    };
    let Ok(ws) = tokio_tungstenite::accept_hdr_async(stream, read_target).await else { return };
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let room = path.rsplit('/').find(|s| !s.is_empty()).unwrap_or("lobby").to_owned();
    let user = query
        .split('&')
        .find_map(|pair| pair.strip_prefix("username="))
        .unwrap_or("Anonymous")
        .to_owned();
    let (tx, mut rx) = mpsc::channel::<Utf8Bytes>(QUEUE);
    broadcast(&rooms, &room, &json!({"type": "join", "user": user, "timestamp": now_ms()}));
    lock(&rooms).entry(room.clone()).or_default().insert(id, tx);
    let (mut sink, mut stream) = ws.split();
    loop {
        tokio::select! {
            frame = stream.next() => match frame {
                Some(Ok(Message::Text(text))) => {
                    let frame = json!({
                        "type": "message", "user": user, "text": text.as_str(), "timestamp": now_ms(),
                    });
                    broadcast(&rooms, &room, &frame);
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break,
            },
            Some(text) = rx.recv() => {
                if sink.feed(Message::Text(text)).await.is_err() {
                    break;
                }
                while let Ok(text) = rx.try_recv() {
                    if sink.feed(Message::Text(text)).await.is_err() {
                        break;
                    }
                }
                if sink.flush().await.is_err() {
                    break;
                }
            }
        }
    }
    let mut all = lock(&rooms);
    if let Some(members) = all.get_mut(&room) {
        members.remove(&id);
        if members.is_empty() {
            all.remove(&room);
        }
    }
    drop(all);
    broadcast(&rooms, &room, &json!({"type": "leave", "user": user, "timestamp": now_ms()}));
}

/// Serializes `frame` once and queues it for every member of `room`.
fn broadcast(rooms: &Rooms, room: &str, frame: &serde_json::Value) {
    let text = Utf8Bytes::from(frame.to_string());
    if let Some(members) = lock(rooms).get(room) {
        for member in members.values() {
            let _ = member.try_send(text.clone());
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
