//! The examples server as a child process: killed with SIGKILL at random moments under
//! concurrent writers, it never loses an increment a client saw acknowledged; stopped with
//! SIGTERM, it closes sockets with 1001, flushes and exits 0.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agents_tests::child::ChildServer;
use agents_tests::{Endpoint, TempDir, WAIT};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// The examples server binary this package builds.
const EXAMPLES_SERVER: &str = env!("CARGO_BIN_EXE_examples-server");

/// The counter of instance `name` as a fresh client sees it on connect.
async fn recovered(server: &Endpoint, name: &str) -> i64 {
    let client = server.connect(&format!("/agents/counter/{name}")).await;
    client.initial_state.expect("the counter has state")["count"].as_i64().expect("a count")
}

/// Calls `increment` until the socket dies; every acknowledged result goes into `acked`.
async fn writer(addr: SocketAddr, name: String, acked: Arc<Mutex<Acked>>) {
    let url = format!("ws://{addr}/agents/counter/{name}");
    let Ok((mut ws, _)) = tokio_tungstenite::connect_async(&url).await else { return };
    for n in 0u64.. {
        let id = n.to_string();
        let frame = json!({ "type": "rpc", "id": id, "method": "increment", "args": [] });
        if ws.send(WsMessage::text(frame.to_string())).await.is_err() {
            return;
        }
        loop {
            let Some(Ok(message)) = ws.next().await else { return };
            let WsMessage::Text(text) = message else { continue };
            let frame: Value = serde_json::from_str(&text).expect("JSON");
            if frame["type"] == "rpc" && frame["id"] == id.as_str() {
                let count = frame["result"].as_i64().expect("increment returns the count");
                let mut acked = acked.lock().expect("not poisoned");
                acked.increments += 1;
                let max = acked.max.entry(name.clone()).or_default();
                *max = (*max).max(count);
                break;
            }
        }
    }
}

#[derive(Default)]
struct Acked {
    /// Acknowledged increments, all instances.
    increments: u64,
    /// The highest count acknowledged per instance: every increment up to it was confirmed.
    max: BTreeMap<String, i64>,
}

/// A small xorshift generator: random kill moments without a dependency, seeded per run.
struct Xorshift(u64);

impl Xorshift {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_concurrent_writers_loses_no_acknowledged_increment() {
    const ROUNDS: usize = 6;
    const INSTANCES: usize = 4;
    const WRITERS_PER_INSTANCE: usize = 2;
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        | 1;
    let mut random = Xorshift(seed);
    let dir = TempDir::new("crash");
    let names: Vec<String> = (0..INSTANCES).map(|i| format!("crash-{i}")).collect();
    let acked = Arc::new(Mutex::new(Acked::default()));
    let mut lost = 0;
    for round in 0..=ROUNDS {
        let child = ChildServer::start(EXAMPLES_SERVER, dir.path()).await;
        let server = child.server();
        // Everything acknowledged before the last kill must be there.
        for name in &names {
            let recovered = recovered(&server, name).await;
            let max = acked.lock().expect("not poisoned").max.get(name).copied().unwrap_or(0);
            if recovered < max {
                eprintln!(
                    "round {round}: {name} recovered {recovered}, but {max} was acknowledged"
                );
                lost += max - recovered;
            }
        }
        if round == ROUNDS {
            child.kill().await;
            break;
        }
        let writers: Vec<_> = names
            .iter()
            .flat_map(|name| std::iter::repeat_n(name, WRITERS_PER_INSTANCE))
            .map(|name| tokio::spawn(writer(child.addr, name.clone(), acked.clone())))
            .collect();
        tokio::time::sleep(Duration::from_millis(100 + random.below(700))).await;
        child.kill().await;
        for writer in writers {
            tokio::time::timeout(WAIT, writer).await.expect("writers stop").expect("no panic");
        }
    }
    let acked_increments = acked.lock().expect("not poisoned").increments;
    let check = ChildServer::start(EXAMPLES_SERVER, dir.path()).await;
    let server = check.server();
    let mut recovered_total = 0;
    for name in &names {
        recovered_total += recovered(&server, name).await;
    }
    check.kill().await;
    println!(
        "crash test (seed {seed}): {ROUNDS} SIGKILLs, {} increments acknowledged, {recovered_total} recovered, {lost} lost",
        acked_increments
    );
    assert!(acked_increments > 0, "the writers got acknowledgements");
    assert_eq!(lost, 0, "every acknowledged increment survives SIGKILL");
    assert!(recovered_total >= acked_increments as i64);
}

#[tokio::test]
async fn sigterm_closes_sockets_with_1001_flushes_and_exits_0() {
    let dir = TempDir::new("sigterm");
    let child = ChildServer::start(EXAMPLES_SERVER, dir.path()).await;
    sigterm_then_restart(child, &dir).await;
}

/// Given one core, the server runs tokio's single-threaded scheduler: the same holds there.
#[tokio::test]
async fn on_one_core_sigterm_closes_sockets_flushes_and_exits_0() {
    let dir = TempDir::new("sigterm-one-core");
    let child = ChildServer::start_on_one_core(EXAMPLES_SERVER, dir.path()).await;
    sigterm_then_restart(child, &dir).await;
}

/// Counts to 3 on a socket, stops `child` with SIGTERM (the socket gets 1001, the process
/// exits 0), and finds the count in a new process on the same `dir`.
async fn sigterm_then_restart(mut child: ChildServer, dir: &TempDir) {
    let server = child.server();
    let mut client = server.connect("/agents/hibernating-counter/t").await;
    for _ in 0..3 {
        client.send_text("count").await;
        let _ = client.recv_json_skipping_state().await;
    }
    let pid = child.child.id().expect("running");
    // The shell's own `kill`: no procps needed on a fresh machine.
    let status =
        std::process::Command::new("sh").args(["-c", &format!("kill -TERM {pid}")]).status();
    assert!(status.expect("kill runs").success());
    let closed = client.expect_close().await;
    assert_eq!((closed.code, closed.reason.as_str()), (1001, "Server shutting down"));
    let exit = tokio::time::timeout(WAIT, child.child.wait()).await.expect("exits in time");
    assert_eq!(exit.expect("waits").code(), Some(0));
    // The state was flushed: a new process has it.
    let again = ChildServer::start(EXAMPLES_SERVER, dir.path()).await;
    let client = again.server().connect("/agents/hibernating-counter/t").await;
    assert_eq!(client.initial_state, Some(json!({ "counter": 3 })));
    again.kill().await;
}
