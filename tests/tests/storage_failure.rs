//! A store whose flushes fail (a full disk), in process: what waited for the lost writes is
//! answered with an error within the storage timeout, the instance restarts from what is
//! durable and every client is told, everything else is served meanwhile, and writes work
//! again once the disk does. `full_disk.rs` does the same with sled on a real filesystem.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use agents_examples::{Counter, CounterClient};
use agents_runtime::prelude::*;
use agents_runtime::storage::{BatchOp, ScanIter, Store, StoreError, WriteBatch};
use agents_runtime::testing::Client;
use agents_tests::start;
use serde_json::{Value, json};

type Map = BTreeMap<Vec<u8>, Vec<u8>>;

/// A disk that can fill up: writes land in memory and reach `durable` on a flush, which fails
/// while the disk is full; `recover` drops what was not flushed, as sled's reopening does.
#[derive(Default)]
struct Disk {
    maps: Mutex<(Map, Map)>,
    full: AtomicBool,
    recoveries: AtomicUsize,
}

impl Disk {
    /// The maps: what reads see, and what is durable.
    fn working(&self) -> std::sync::MutexGuard<'_, (Map, Map)> {
        self.maps.lock().expect("not poisoned")
    }
}

impl Store for Disk {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.working().0.get(key).cloned())
    }
    fn put(&self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.working().0.insert(key.to_vec(), value.to_vec());
        Ok(())
    }
    fn delete(&self, key: &[u8]) -> Result<bool, StoreError> {
        Ok(self.working().0.remove(key).is_some())
    }
    fn scan_prefix<'a>(&'a self, prefix: &[u8]) -> ScanIter<'a> {
        let entries: Vec<_> = self
            .working()
            .0
            .range(prefix.to_vec()..)
            .take_while(|(key, _)| key.starts_with(prefix))
            .map(|(key, value)| Ok((key.clone(), value.clone())))
            .collect();
        Box::new(entries.into_iter())
    }
    fn apply(&self, batch: WriteBatch) -> Result<(), StoreError> {
        let mut maps = self.working();
        for op in batch.into_ops() {
            match op {
                BatchOp::Put(key, value) => maps.0.insert(key, value),
                BatchOp::Delete(key) => maps.0.remove(&key),
            };
        }
        Ok(())
    }
    fn flush(&self) -> Result<(), StoreError> {
        if self.full.load(Ordering::Acquire) {
            return Err(StoreError::msg("flush: No space left on device (simulated)"));
        }
        let mut maps = self.working();
        maps.1 = maps.0.clone();
        Ok(())
    }
    fn recover(&self) -> Result<(), StoreError> {
        self.recoveries.fetch_add(1, Ordering::AcqRel);
        let mut maps = self.working();
        maps.0 = maps.1.clone();
        Ok(())
    }
}

/// The storage timeout the tests run with.
const TIMEOUT: Duration = Duration::from_millis(500);

/// Writes on every HTTP request, with the default (confirmed) durability.
#[derive(Default)]
struct Writer;

#[agent]
impl Writer {
    fn on_request(&mut self, ctx: &mut Context<Self>, _request: Request) -> Result<Response> {
        ctx.storage().put("hit", &true)?;
        Ok(Response::new("stored".into()))
    }

    /// Stores what it is sent and says so: a message of its own, not a protocol frame.
    fn on_message(
        &mut self,
        ctx: &mut Context<Self>,
        conn: &Connection,
        message: Message,
    ) -> Result<()> {
        ctx.storage().put("last", &message.as_text().unwrap_or_default())?;
        conn.send("stored")?;
        Ok(())
    }
}

/// Frames `client` receives within `wait`.
async fn frames_within(client: &mut Client, wait: Duration) -> Vec<Value> {
    let mut frames = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    while let Ok(frame) = tokio::time::timeout_at(deadline, client.recv_json()).await {
        frames.push(frame);
    }
    frames
}

#[tokio::test]
async fn held_answers_become_errors_and_the_instance_restarts_from_durable_state() {
    let disk = Arc::new(Disk::default());
    let builder =
        agents_examples::server().agent::<Writer>().store(disk.clone()).storage_timeout(TIMEOUT);
    let server = start(builder).await;
    let mut caller = server.connect("/agents/counter/disk").await;
    let mut watcher = server.connect("/agents/counter/disk").await;
    caller.send_rpc("1", "increment", json!([])).await;
    assert_eq!(caller.recv_json_skipping_state().await["result"], 1);
    assert_eq!(watcher.recv_json().await, json!({"type": "cf_agent_state", "state": {"count": 1}}));

    disk.full.store(true, Ordering::Release);
    let sent = Instant::now();
    caller.send_rpc("2", "increment", json!([])).await;
    // Held: what does not write is served meanwhile.
    let mut stateless = server.connect("/agents/my-agent/meanwhile").await;
    assert_eq!(stateless.recv_text().await, "Welcome!");
    assert_eq!(server.http("GET", "/agents/my-agent/x", b"").await.0, 200);
    let answer = caller.recv_json_skipping_state().await;
    let waited = sent.elapsed();
    assert_eq!((answer["id"].as_str(), &answer["success"]), (Some("2"), &json!(false)), "{answer}");
    let error = answer["error"].as_str().unwrap_or_default();
    assert!(error.starts_with("Storage failed, the agent restarts"), "{error}");
    assert!(error.contains("No space left on device (simulated)"), "{error}");
    assert!(waited >= TIMEOUT && waited < TIMEOUT * 6, "answered after {waited:?}");

    // Both clients are told, and get the durable state: the count never was 2 for them.
    let told = json!({"type": "cf_agent_state_error", "error": error});
    let durable = json!({"type": "cf_agent_state", "state": {"count": 1}});
    for (who, client) in [("caller", &mut caller), ("watcher", &mut watcher)] {
        let frames = frames_within(client, Duration::from_millis(500)).await;
        assert_eq!(frames, [told.clone(), durable.clone()], "{who}");
    }
    assert!(disk.recoveries.load(Ordering::Acquire) >= 1);

    // An HTTP answer held behind a write that is lost is a 503 saying why.
    let (status, body) = server.http("GET", "/agents/writer/w", b"").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.starts_with("Storage failed"), "{body}");

    // The disk has room again: writes are acknowledged, from the durable count on.
    disk.full.store(false, Ordering::Release);
    caller.send_rpc("3", "increment", json!([])).await;
    assert_eq!(caller.recv_json_skipping_state().await["result"], 2);
    assert_eq!(watcher.recv_json().await, json!({"type": "cf_agent_state", "state": {"count": 2}}));
    assert_eq!(server.http("GET", "/agents/writer/w", b"").await, (200, "stored".to_owned()));
}

#[tokio::test]
async fn a_connection_that_lost_messages_of_the_agents_own_is_closed_with_1011() {
    let disk = Arc::new(Disk::default());
    let builder =
        agents_examples::server().agent::<Writer>().store(disk.clone()).storage_timeout(TIMEOUT);
    let server = start(builder).await;
    let mut client = server.connect("/agents/writer/plain").await;
    client.send_text("one").await;
    assert_eq!(client.recv_text().await, "stored");
    disk.full.store(true, Ordering::Release);
    client.send_text("two").await;
    // "stored" waited for a write that was lost: the client cannot be told in-band.
    let closed = client.expect_close().await;
    assert_eq!((closed.code, closed.reason.as_str()), (1011, "Storage failed: messages were lost"));
    disk.full.store(false, Ordering::Release);
    let mut again = server.connect("/agents/writer/plain").await;
    again.send_text("three").await;
    assert_eq!(again.recv_text().await, "stored");
}

#[tokio::test]
async fn an_in_process_call_held_behind_a_lost_write_is_an_error() {
    let disk = Arc::new(Disk::default());
    let builder = agents_examples::server().store(disk.clone()).storage_timeout(TIMEOUT);
    let server = start(builder).await;
    let stub = server.handle.get_agent_by_name::<Counter>("call").expect("a stub");
    let counter = CounterClient::new(stub);
    assert_eq!(counter.increment().await.expect("acknowledged"), 1);
    disk.full.store(true, Ordering::Release);
    let error = counter.increment().await.expect_err("lost").to_string();
    assert!(error.contains("Storage failed"), "{error}");
    disk.full.store(false, Ordering::Release);
    assert_eq!(counter.increment().await.expect("acknowledged"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mcp_server_added_with_a_lost_write_is_forgotten_and_clients_are_told() {
    let mcp_server = agents_tests::node::McpServer::start().await;
    let disk = Arc::new(Disk::default());
    let builder = agents_examples::server().store(disk.clone()).storage_timeout(TIMEOUT);
    let server = start(builder).await;
    let mut client = server.connect("/agents/toolbox/disk").await;
    disk.full.store(true, Ordering::Release);
    client.send_rpc("1", "addServer", json!(["tools", mcp_server.url("/mcp")])).await;
    // The answer waited for the write, which is lost: an error, and the instance restarts
    // from what is durable, where the server never was.
    let mut frames = Vec::new();
    let answer = loop {
        let frame = client.recv_json().await;
        if frame["type"] == "rpc" {
            break frame;
        }
        frames.push(frame);
    };
    assert_eq!(answer["success"], false, "{answer}");
    let error = answer["error"].as_str().unwrap_or_default();
    assert!(error.starts_with("Storage failed, the agent restarts"), "{error}");
    frames.extend(frames_within(&mut client, Duration::from_millis(500)).await);
    let last_mcp = frames.iter().rev().find(|f| f["type"] == "cf_agent_mcp_servers");
    let empty = json!({ "prompts": [], "resources": [], "servers": {}, "tools": [] });
    assert_eq!(last_mcp.map(|f| &f["mcp"]), Some(&empty), "clients end with no server: {frames:?}");
    disk.full.store(false, Ordering::Release);
    client.send_rpc("2", "listTools", json!([])).await;
    let tools = loop {
        let frame = client.recv_json().await;
        if frame["type"] == "rpc" && frame["id"] == "2" {
            break frame;
        }
    };
    assert_eq!(tools["result"], json!([]), "{tools}");
    let fresh = server.connect("/agents/toolbox/disk").await;
    assert_eq!(fresh.initial_mcp, Some(empty));
    server.shut_down().await;
}
