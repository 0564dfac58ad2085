//! Storage: the conformance suite on every backend, agent state reloaded from the store, the
//! key-value API through a real agent, and the output gate holding frames until a flush (SQL
//! writes' included).

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use agents_runtime::cluster::PostgresStore;
use agents_runtime::prelude::*;
use agents_runtime::storage::{
    MemoryStore, ScanIter, SledStore, Store, StoreError, WriteBatch, conformance,
};
use agents_tests::{TempDir, WAIT, eventually, start};
use serde::{Deserialize, Serialize};
use serde_json::json;

#[test]
fn sled_passes_the_conformance_suite() {
    let dir = TempDir::new("sled-conformance");
    conformance::check(&SledStore::open(dir.path().join("a")).expect("opens"));
    conformance::check_reopen(|| SledStore::open(dir.path().join("b")).expect("opens"));
}

/// Opens a [`PostgresStore`] from synchronous code, as `check_reopen` needs.
fn open_postgres(url: &str) -> Result<PostgresStore, StoreError> {
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    runtime.block_on(PostgresStore::open(url))
}

#[test]
fn postgres_passes_the_conformance_suite() {
    let Some(server) = agents_tests::postgres("postgres conformance") else { return };
    conformance::check(&open_postgres(&server.database()).expect("opens"));
    let url = server.database();
    conformance::check_reopen(|| open_postgres(&url).expect("opens"));
}

#[test]
fn a_postgres_store_that_cannot_connect_is_a_clear_error() {
    let err = open_postgres("mysql://x").err().expect("refused").to_string();
    assert!(err.contains("the cluster URL is not valid"), "{err}");
    // A port nobody listens on (bound, then let go).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("binds")
        .local_addr()
        .expect("bound")
        .port();
    let err =
        open_postgres(&format!("postgres://postgres@127.0.0.1:{port}/db")).err().expect("refused");
    let err = err.to_string();
    assert!(err.contains("migrating the cluster's tables") && err.contains("refused"), "{err}");
}

#[test]
fn the_memory_store_passes_the_conformance_suite() {
    conformance::check(&MemoryStore::new());
}

/// A store with only the required methods: range scans come from the trait's default.
#[derive(Default)]
struct PrefixOnly(MemoryStore);

impl Store for PrefixOnly {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.0.get(key)
    }
    fn put(&self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.0.put(key, value)
    }
    fn delete(&self, key: &[u8]) -> Result<bool, StoreError> {
        self.0.delete(key)
    }
    fn scan_prefix<'a>(&'a self, prefix: &[u8]) -> ScanIter<'a> {
        self.0.scan_prefix(prefix)
    }
    fn apply(&self, batch: WriteBatch) -> Result<(), StoreError> {
        self.0.apply(batch)
    }
    fn flush(&self) -> Result<(), StoreError> {
        self.0.flush()
    }
}

#[test]
fn the_default_range_scan_passes_the_conformance_suite() {
    conformance::check(&PrefixOnly::default());
}

#[test]
fn a_directory_that_cannot_hold_a_store_is_a_clear_error() {
    let dir = TempDir::new("sled-bad-dir");
    let file = dir.path().join("file");
    std::fs::write(&file, b"not a directory").expect("writes");
    let err = SledStore::open(&file).unwrap_err().to_string();
    assert!(err.starts_with("storage: cannot open sled at"), "{err}");
}

/// A data directory whose store (`store/`, as the server keeps it) holds one flushed value,
/// closed again; the store's path and its file names.
fn a_closed_store(name: &str) -> (TempDir, std::path::PathBuf, Vec<String>) {
    let dir = TempDir::new(name);
    let path = dir.path().join("store");
    let store = SledStore::open(&path).expect("opens");
    store.put(b"k", b"v").expect("writes");
    store.flush().expect("flushes");
    drop(store);
    // sled's threads let go of the directory shortly after the drop.
    drop(SledStore::open(&path).expect("opens again"));
    let mut names: Vec<String> = std::fs::read_dir(&path)
        .expect("lists")
        .map(|entry| entry.expect("an entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    (dir, path, names)
}

/// Flips the bits of the byte at `at` of `path`.
fn damage(path: &std::path::Path, at: usize) {
    let mut bytes = std::fs::read(path).expect("reads");
    bytes[at] ^= 0xFF;
    std::fs::write(path, bytes).expect("writes");
}

/// Opening the store in `path` fails; the error names `file` and says what to do, and so
/// does a server started on the data directory `dir`.
fn refused_naming(dir: &std::path::Path, path: &std::path::Path, file: &std::path::Path) {
    let err = SledStore::open(path).expect_err("refused").to_string();
    assert!(err.contains(&format!("{} is damaged", file.display())), "{err}");
    assert!(err.contains("Restore the directory from a backup"), "{err}");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
    let bound = runtime.block_on(agents_examples::server().data_dir(dir).bind("127.0.0.1:0"));
    let err = bound.err().expect("the server refuses to start").to_string();
    assert!(err.contains(&format!("{} is damaged", file.display())), "{err}");
}

#[test]
fn a_damaged_configuration_file_is_named_at_startup_with_what_to_do() {
    let (dir, path, names) = a_closed_store("sled-damaged-conf");
    assert!(names.contains(&"conf".to_owned()), "{names:?}");
    let conf = path.join("conf");
    damage(&conf, 2);
    refused_naming(dir.path(), &path, &conf);
}

#[test]
fn a_damaged_snapshot_is_named_at_startup_with_what_to_do() {
    let (dir, path, names) = a_closed_store("sled-damaged-snapshot");
    let snapshot = names.iter().filter(|name| name.starts_with("snap.")).max().expect("a snapshot");
    let snapshot = path.join(snapshot);
    damage(&snapshot, 0);
    refused_naming(dir.path(), &path, &snapshot);
}

/// Sends one RPC and returns its final frame.
async fn call(
    client: &mut agents_tests::Client,
    method: &str,
    args: serde_json::Value,
) -> serde_json::Value {
    client.send_rpc("1", method, args).await;
    client.recv_json_skipping_state().await
}

#[tokio::test]
async fn agent_state_is_reloaded_from_the_store_by_the_next_server() {
    let dir = TempDir::new("state-reload");
    let store = SledStore::open(dir.path()).expect("opens");
    let first = start(agents_examples::server().store(store.clone())).await;
    let mut client = first.connect("/agents/counter/kept").await;
    assert_eq!(client.initial_state, Some(json!({ "count": 0 })));
    for expected in 1..=3 {
        assert_eq!(call(&mut client, "increment", json!([])).await["result"], expected);
    }
    // A second server on the same store starts the instance from what was stored.
    let second = start(agents_examples::server().store(store)).await;
    let client = second.connect("/agents/counter/kept").await;
    assert_eq!(client.initial_state, Some(json!({ "count": 3 })));
    let other = second.connect("/agents/counter/other").await;
    assert_eq!(other.initial_state, Some(json!({ "count": 0 })), "instances are separate");
}

#[tokio::test]
async fn a_stored_state_that_does_not_decode_falls_back_and_a_newer_format_is_kept() {
    let store = Arc::new(MemoryStore::new());
    let first = start(agents_examples::server().store(store.clone())).await;
    let mut client = first.connect("/agents/counter/broken").await;
    assert_eq!(call(&mut client, "increment", json!([])).await["result"], 1);
    // Find the stored state ({"count":1} after the version byte) and damage it.
    let entries: Vec<_> = store.scan_prefix(b"").collect::<Result<_, _>>().expect("scans");
    let (key, value) = entries.iter().find(|(_, v)| v.ends_with(b"{\"count\":1}")).expect("stored");
    assert_eq!(value[0], agents_runtime::storage::FORMAT_VERSION);
    store.put(key, b"\x01{\"count\":\"one\"}").expect("puts");
    let server = start(agents_examples::server().store(store.clone())).await;
    let mut client = server.connect("/agents/counter/broken").await;
    assert_eq!(client.initial_state, Some(json!({ "count": 0 })));
    // The instance works on, and the next write replaces the bad value.
    assert_eq!(call(&mut client, "increment", json!([])).await["result"], 1);
    assert!(store.get(key).expect("gets").expect("stored").ends_with(b"{\"count\":1}"));

    // A value from a newer release (format version 9) is neither misread nor overwritten: the
    // instance does not start, and the connection is refused as a failed setup.
    let future = b"\x09{\"count\":1}".to_vec();
    store.put(key, &future).expect("puts");
    let server = start(agents_examples::server().store(store.clone())).await;
    let mut client = server.connect_raw("/agents/counter/broken").await;
    let refused = client.recv_json().await;
    let error = refused["error"].as_str().expect("an error frame");
    assert!(error.contains("format version 9"), "{error}");
    assert_eq!(client.expect_close().await.code, 1011);
    assert_eq!(store.get(key).expect("gets"), Some(future));
}

#[tokio::test]
async fn the_notebook_keeps_notes_in_storage_and_rebuilds_its_count_on_start() {
    let store = Arc::new(MemoryStore::new());
    let server = start(agents_examples::server().store(store.clone())).await;
    let mut client = server.connect("/agents/notebook/n").await;
    assert_eq!(call(&mut client, "addNote", json!(["first"])).await["result"], 1);
    assert_eq!(call(&mut client, "addNote", json!(["second"])).await["result"], 2);
    let latest = call(&mut client, "latest", json!([10])).await;
    assert_eq!(
        latest["result"],
        json!([{ "number": 1, "text": "first" }, { "number": 2, "text": "second" }])
    );
    assert_eq!(
        call(&mut client, "latest", json!([1])).await["result"],
        json!([{ "number": 2, "text": "second" }])
    );
    // Bad input: a clear error, nothing stored.
    let wrong = call(&mut client, "addNote", json!([5])).await;
    assert_eq!(wrong["success"], false);
    let long = call(&mut client, "addNote", json!(["x".repeat(1001)])).await;
    assert_eq!(long["error"], "a note has at most 1000 characters");
    // Another server on the same store: on_start rebuilds the count from storage.
    let again = start(agents_examples::server().store(store.clone())).await;
    let mut client = again.connect("/agents/notebook/n").await;
    assert_eq!(call(&mut client, "addNote", json!(["third"])).await["result"], 3);
    assert_eq!(call(&mut client, "clear", json!([])).await["result"], 3);
    assert_eq!(call(&mut client, "latest", json!([10])).await["result"], json!([]));
    assert_eq!(call(&mut client, "addNote", json!(["again"])).await["result"], 1);
}

/// A memory store whose flush blocks until the test opens the valve: the disk that is slow.
#[derive(Default)]
struct Valve {
    inner: MemoryStore,
    /// (flushes started, open)
    state: Mutex<(usize, bool)>,
    changed: Condvar,
}

impl Valve {
    fn flushes_started(&self) -> usize {
        self.state.lock().expect("not poisoned").0
    }

    fn open(&self) {
        self.state.lock().expect("not poisoned").1 = true;
        self.changed.notify_all();
    }
}

impl Store for Valve {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get(key)
    }
    fn put(&self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.inner.put(key, value)
    }
    fn delete(&self, key: &[u8]) -> Result<bool, StoreError> {
        self.inner.delete(key)
    }
    fn scan_prefix<'a>(&'a self, prefix: &[u8]) -> ScanIter<'a> {
        self.inner.scan_prefix(prefix)
    }
    fn apply(&self, batch: WriteBatch) -> Result<(), StoreError> {
        self.inner.apply(batch)
    }
    fn flush(&self) -> Result<(), StoreError> {
        let mut state = self.state.lock().expect("not poisoned");
        state.0 += 1;
        let (state, _) =
            self.changed.wait_timeout_while(state, WAIT, |(_, open)| !*open).expect("not poisoned");
        if state.1 { Ok(()) } else { Err(StoreError::msg("the valve stayed shut")) }
    }
}

/// Like `Counter`, but with relaxed durability: its frames do not wait for the disk.
#[derive(Default)]
struct RelaxedCounter;

#[derive(Clone, Default, Serialize, Deserialize)]
struct Count {
    count: u64,
}

#[agent(state = Count, durability = "relaxed")]
impl RelaxedCounter {
    #[callable]
    fn increment(&mut self, ctx: &mut Context<Self>) -> Result<u64> {
        let count = ctx.state().count + 1;
        ctx.set_state(Count { count })?;
        Ok(count)
    }

    fn on_request(&mut self, ctx: &mut Context<Self>, _request: Request) -> Result<Response> {
        ctx.storage().put("hit", &true)?;
        Ok(Response::new("stored".into()))
    }
}

#[tokio::test]
async fn the_output_gate_holds_frames_until_the_write_is_flushed() {
    let valve = Arc::new(Valve::default());
    let server =
        start(agents_examples::server().agent::<RelaxedCounter>().store(valve.clone())).await;
    let mut watcher = server.connect("/agents/counter/gated").await;
    let mut client = server.connect("/agents/counter/gated").await;
    client.send_rpc("1", "increment", json!([])).await;
    // The write happened and its flush is stuck: neither the answer nor the broadcast is out.
    eventually("a flush starts", || valve.flushes_started() > 0).await;
    client.expect_silence(Duration::from_millis(300)).await;
    watcher.expect_silence(Duration::from_millis(50)).await;

    // An agent with relaxed durability answers while the disk is still busy.
    let mut relaxed = server.connect("/agents/relaxed-counter/r").await;
    relaxed.send_rpc("1", "increment", json!([])).await;
    assert_eq!(relaxed.recv_json_skipping_state().await["result"], 1);

    valve.open();
    let answer = client.recv_json_skipping_state().await;
    assert_eq!((answer["id"].as_str(), &answer["result"]), (Some("1"), &json!(1)));
    assert_eq!(
        watcher.recv_json().await,
        json!({ "type": "cf_agent_state", "state": { "count": 1 } })
    );
}

/// Writes on every HTTP request, with the default (confirmed) durability.
#[derive(Default)]
struct ConfirmedWriter;

#[agent]
impl ConfirmedWriter {
    fn on_request(&mut self, ctx: &mut Context<Self>, _request: Request) -> Result<Response> {
        ctx.storage().put("hit", &true)?;
        Ok(Response::new("stored".into()))
    }
}

#[tokio::test]
async fn an_http_answer_after_a_write_waits_for_the_flush() {
    let valve = Arc::new(Valve::default());
    let builder = agents_examples::server()
        .agent::<RelaxedCounter>()
        .agent::<ConfirmedWriter>()
        .store(valve.clone());
    let server = Arc::new(start(builder).await);
    // The relaxed agent answers at once, though its write is not flushed.
    let (status, body) = server.http("GET", "/agents/relaxed-counter/h", b"").await;
    assert_eq!((status, body.as_str()), (200, "stored"));
    // The confirmed one answers only once the flush is done.
    let asking = server.clone();
    let answer =
        tokio::spawn(async move { asking.http("GET", "/agents/confirmed-writer/h", b"").await });
    eventually("a flush starts", || valve.flushes_started() > 0).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!answer.is_finished(), "the answer waits for the flush");
    valve.open();
    let (status, body) =
        tokio::time::timeout(WAIT, answer).await.expect("in time").expect("no panic");
    assert_eq!((status, body.as_str()), (200, "stored"));
}

#[tokio::test]
async fn frames_after_an_sql_write_wait_for_the_flush_that_syncs_it() {
    let dir = TempDir::new("sql-gate");
    let valve = Arc::new(Valve::default());
    let server = start(agents_examples::server().store(valve.clone()).data_dir(dir.path())).await;
    // `Catalog`'s `on_start` creates its table: the connection's first frames come after it.
    let mut client = server.connect_raw("/agents/catalog/gated").await;
    eventually("a flush starts", || valve.flushes_started() > 0).await;
    client.expect_silence(Duration::from_millis(300)).await;
    valve.open();
    assert_eq!(client.recv_json().await["type"], "cf_agent_identity");
    assert!(dir.path().join("sql/catalog/gated.sqlite3").exists(), "the database is on disk");
}

#[test]
fn a_data_directory_is_locked_by_the_store_that_opened_it() {
    let dir = TempDir::new("sled-lock");
    let first = SledStore::open(dir.path()).expect("opens");
    let err = SledStore::open(dir.path()).unwrap_err();
    assert!(err.to_string().starts_with("storage: cannot open sled at"), "{err}");
    drop(first);
    SledStore::open(dir.path()).expect("opens again once the first is gone");
}

/// Writes, then closes the connection: the close acknowledges the write.
#[derive(Default)]
struct ClosingWriter;

#[agent]
impl ClosingWriter {
    fn on_message(
        &mut self,
        ctx: &mut Context<Self>,
        conn: &Connection,
        _m: Message,
    ) -> Result<()> {
        ctx.storage().put("saved", &true)?;
        conn.close(4000, "saved")?;
        Ok(())
    }
}

#[tokio::test]
async fn a_close_after_a_write_waits_for_the_flush_too() {
    let valve = Arc::new(Valve::default());
    let builder = agents_examples::server().agent::<ClosingWriter>().store(valve.clone());
    let server = start(builder).await;
    let mut client = server.connect("/agents/closing-writer/c").await;
    client.send_text("save").await;
    eventually("a flush starts", || valve.flushes_started() > 0).await;
    client.expect_silence(Duration::from_millis(300)).await;
    valve.open();
    let closed = client.expect_close_now().await;
    assert_eq!((closed.code, closed.reason.as_str()), (4000, "saved"));
}
