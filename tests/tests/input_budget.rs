//! The examples server against a thousand clients that start a message (or a request head)
//! and never finish it: memory stays within the server's budget, the sockets over it are
//! closed with 1013, the rest once the message timeout passes (1008), and request heads once
//! the head timeout passes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use agents_runtime::prelude::*;
use agents_tests::TempDir;
use agents_tests::child::ChildServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const EXAMPLES_SERVER: &str = env!("CARGO_BIN_EXE_examples-server");

/// Clients, each with an unfinished message or head.
const CLIENTS: usize = 1000;
const MIB: u64 = 1 << 20;

/// The resident memory of process `pid`, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let line = status.lines().find(|line| line.starts_with("VmRSS:")).unwrap_or_default();
    let kb: u64 = line.split_whitespace().nth(1).and_then(|kb| kb.parse().ok()).unwrap_or(0);
    kb * 1024
}

/// Samples the RSS of `pid` every 20 ms; the highest so far is in the returned cell.
fn watch_peak(pid: u32) -> (Arc<AtomicU64>, tokio::task::JoinHandle<()>) {
    let peak = Arc::new(AtomicU64::new(rss(pid)));
    let seen = peak.clone();
    let sampler = tokio::spawn(async move {
        loop {
            seen.fetch_max(rss(pid), Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    (peak, sampler)
}

/// The start of a masked binary message announcing `announced` bytes, with `sent` of them.
fn unfinished_message(announced: u64, sent: usize) -> Vec<u8> {
    let mut frame = vec![0x82, 0x80 | 127];
    frame.extend_from_slice(&announced.to_be_bytes());
    frame.extend_from_slice(&[1, 2, 3, 4]);
    frame.resize(frame.len() + sent, 0x55);
    frame
}

/// The code of the server's close frame on `tcp` (data frames before it skipped), or `None`
/// if the connection ends without one or nothing comes within `wait`.
async fn close_code(tcp: &mut TcpStream, wait: Duration) -> Option<u16> {
    let read = async {
        loop {
            let mut head = [0; 2];
            tcp.read_exact(&mut head).await.ok()?;
            let len = usize::from(head[1] & 0x7F);
            assert!(len <= 125, "the server sends small frames here");
            let mut payload = vec![0; len];
            tcp.read_exact(&mut payload).await.ok()?;
            if head[0] & 0x0F == 0x8 {
                return Some(u16::from_be_bytes([payload[0], payload[1]]));
            }
        }
    };
    tokio::time::timeout(wait, read).await.ok().flatten()
}

#[tokio::test]
async fn unfinished_messages_stay_within_the_budget_and_are_closed() {
    let dir = TempDir::new("input-budget");
    let args = ["--max-unfinished-input", "64MiB", "--message-timeout", "4s"];
    let child = ChildServer::start_limited(EXAMPLES_SERVER, dir.path(), 4096, &args).await;
    let pid = child.child.id().expect("running");
    let mut sockets = Vec::with_capacity(CLIENTS);
    for _ in 0..CLIENTS {
        sockets.push(agents_tests::raw_upgrade(child.addr, "/agents/my-agent/budget").await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss(pid);
    let (peak, sampler) = watch_peak(pid);

    // Each client starts a 1,000,000-byte message and sends 900,000 bytes of it.
    let start = unfinished_message(1_000_000, 900_000);
    for tcp in &mut sockets {
        // A socket the server closed for the budget may refuse the rest: that is its answer.
        let _ = tokio::time::timeout(Duration::from_secs(5), tcp.write_all(&start)).await;
    }
    let mut codes = Vec::new();
    for tcp in &mut sockets {
        codes.push(close_code(tcp, Duration::from_millis(50)).await);
    }
    let refused = codes.iter().filter(|code| **code == Some(1013)).count();
    let held = codes.iter().filter(|code| code.is_none()).count();
    let grown = peak.load(Ordering::Relaxed).saturating_sub(before);
    eprintln!(
        "{CLIENTS} unfinished messages of 900,000 bytes: {refused} closed with 1013, {held} held; \
         RSS grew {} MiB at most (budget 64 MiB)",
        grown / MIB
    );
    assert!(held >= 32 && refused >= CLIENTS - 100, "held {held}, refused {refused}: {codes:?}");
    assert!(grown < 160 * MIB, "RSS grew by {} MiB", grown / MIB);

    // The ones within the budget are closed once the message timeout passes.
    let mut timed_out = 0;
    for (tcp, code) in sockets.iter_mut().zip(&codes) {
        if code.is_none() {
            assert_eq!(close_code(tcp, Duration::from_secs(10)).await, Some(1008));
            timed_out += 1;
        }
    }
    assert_eq!(timed_out, held);
    sampler.abort();
    drop(sockets);
    // And what they held is given back.
    let mut after = rss(pid);
    // Within jemalloc's 10-second decay of freed pages, and some.
    for _ in 0..150 {
        if after < before + 32 * MIB {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        after = rss(pid);
    }
    assert!(
        after < before + 32 * MIB,
        "RSS {} MiB after, {} MiB before",
        after / MIB,
        before / MIB
    );
    // The server still serves.
    let mut client = child.server().connect("/agents/my-agent/after").await;
    assert_eq!(client.recv_text().await, "Welcome!");
    child.kill().await;
}

#[tokio::test]
async fn unfinished_request_heads_are_bounded_and_closed_after_the_head_timeout() {
    let dir = TempDir::new("head-budget");
    let args = ["--request-head-timeout", "2s"];
    let child = ChildServer::start_limited(EXAMPLES_SERVER, dir.path(), 4096, &args).await;
    let pid = child.child.id().expect("running");
    let before = rss(pid);
    let (peak, sampler) = watch_peak(pid);
    // Each client sends 60,000 bytes of a head (the limit is 64 KiB) and stops.
    let mut head = b"GET /agents/my-agent/x HTTP/1.1\r\nHost: x\r\nX-Pad: ".to_vec();
    head.resize(60_000, b'a');
    let mut sockets = Vec::with_capacity(CLIENTS);
    for _ in 0..CLIENTS {
        let mut tcp = TcpStream::connect(child.addr).await.expect("connects");
        tcp.write_all(&head).await.expect("sends part of a head");
        sockets.push(tcp);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let grown = peak.load(Ordering::Relaxed).saturating_sub(before);
    eprintln!("{CLIENTS} unfinished request heads of 60,000 bytes: RSS grew {} MiB", grown / MIB);
    assert!(grown < 160 * MIB, "RSS grew by {} MiB", grown / MIB);
    // Past the head timeout, the server closes every one of them.
    for tcp in &mut sockets {
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut rest));
        assert!(closed.await.is_ok(), "a connection with an unfinished head stayed open");
    }
    sampler.abort();
    let mut client = child.server().connect("/agents/my-agent/after").await;
    assert_eq!(client.recv_text().await, "Welcome!");
    child.kill().await;
}

/// A masked frame (mask 0) with `fin`, `opcode` and `payload` (at most 125 bytes).
fn small_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![if fin { 0x80 } else { 0 } | opcode, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&[0, 0, 0, 0]);
    frame.extend_from_slice(payload);
    frame
}

#[tokio::test]
async fn pings_between_fragments_do_not_hold_off_the_message_timeout() {
    let builder = agents_runtime::Server::builder()
        .agent::<Slow>()
        .message_timeout(Duration::from_millis(1500));
    let server = agents_tests::start(builder).await;
    let mut tcp = agents_tests::raw_upgrade(server.addr, "/agents/slow/pings").await;
    // The first fragment of a text message, then only pings, each well within the timeout.
    tcp.write_all(&small_frame(false, 0x1, b"the start")).await.expect("sends");
    let handle = server.handle.clone();
    agents_tests::eventually("the fragment counts as unfinished input", || {
        handle.unfinished_input() > 0
    })
    .await;
    let started = std::time::Instant::now();
    let pinging = async {
        loop {
            tokio::time::sleep(Duration::from_millis(300)).await;
            if tcp.write_all(&small_frame(true, 0x9, b"still here")).await.is_err() {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(3), pinging).await;
    let mut tcp = tcp;
    // The server closed it once the message had been unfinished for 1.5 s.
    let mut pongs_then_close = Vec::new();
    let _ =
        tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut pongs_then_close)).await;
    let close = pongs_then_close.windows(2).position(|w| w[0] == 0x88).expect("a close frame");
    let code = u16::from_be_bytes([pongs_then_close[close + 2], pongs_then_close[close + 3]]);
    assert_eq!(code, 1008);
    assert!(started.elapsed() < Duration::from_secs(9));
    // What it held is given back with the socket.
    agents_tests::eventually("the budget is empty again", || handle.unfinished_input() == 0).await;
}

/// Takes its time over every message (a turn that awaits I/O), and says how many it had.
#[derive(Default)]
struct Slow {
    seen: usize,
}

#[agent]
impl Slow {
    async fn on_message(
        &mut self,
        _ctx: &mut Context<Self>,
        conn: &Connection,
        _message: Message,
    ) -> Result<()> {
        tokio::time::sleep(Duration::from_millis(5)).await;
        self.seen += 1;
        conn.send(self.seen.to_string())?;
        Ok(())
    }
}

#[tokio::test]
async fn pipelined_large_messages_wait_in_the_socket_not_in_memory() {
    let server = agents_tests::start(agents_runtime::Server::builder().agent::<Slow>()).await;
    let mut client = server.connect("/agents/slow/pipelined").await;
    let before = rss(std::process::id());
    let (peak, sampler) = watch_peak(std::process::id());
    // 300 messages of 1 MB, sent without waiting, to an agent that takes 5 ms over each: they
    // wait in the socket (and the TCP window), not in the instance's mailbox.
    const MESSAGES: usize = 300;
    let message = vec![7; 1_000_000];
    let sending = async {
        for _ in 0..MESSAGES {
            client.send_binary(message.clone()).await;
        }
        client
    };
    let mut client = tokio::time::timeout(Duration::from_secs(60), sending).await.expect("sent");
    for n in 1..=MESSAGES {
        assert_eq!(client.recv_text().await, n.to_string());
    }
    sampler.abort();
    let grown = peak.load(Ordering::Relaxed).saturating_sub(before);
    eprintln!(
        "{MESSAGES} pipelined 1 MB messages to a slow agent: RSS grew {} MiB at most",
        grown / MIB
    );
    assert!(grown < 64 * MIB, "RSS grew by {} MiB", grown / MIB);
}
