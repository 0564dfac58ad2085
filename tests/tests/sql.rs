//! `ctx.sql()` over real sockets: the `Catalog` agent of the examples server (put, get, search,
//! count, remove; keys holding SQL stored literally; every acknowledged put there after a
//! graceful restart and after SIGKILL), a failing statement answered as an RPC error, the
//! turn's transaction (a failing hook's statements rolled back, and only those), the limits,
//! and 5,000 instances that used SQL and hibernated with their databases closed.

use std::time::Duration;

use agents_examples::agents::MAX_SEARCH_RESULTS;
use agents_examples::{CatalogClient, CatalogEntry};
use agents_runtime::SqlValue;
use agents_runtime::prelude::*;
use agents_runtime::testing::Endpoint;
use agents_tests::child::ChildServer;
use agents_tests::{TempDir, eventually, examples, start};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The examples server binary this package builds.
const EXAMPLES_SERVER: &str = env!("CARGO_BIN_EXE_examples-server");

async fn catalog(server: &Endpoint, name: &str) -> CatalogClient {
    CatalogClient::new(server.agent_client(&format!("/agents/catalog/{name}")).await)
}

#[tokio::test]
async fn catalog_puts_gets_searches_counts_and_removes() {
    let server = examples().await;
    let catalog = catalog(&server, "shop").await;
    assert_eq!(catalog.count().await.expect("count"), 0);
    assert_eq!(catalog.get("apple".into()).await.expect("get"), None);
    assert_eq!(catalog.put("apple".into(), "red".into()).await.expect("put"), 1);
    assert_eq!(catalog.put("apple".into(), "green".into()).await.expect("put again"), 1);
    assert_eq!(catalog.get("apple".into()).await.expect("get"), Some("green".into()));
    for (key, value) in [("apricot", "orange"), ("banana", "yellow"), ("ap", "short")] {
        catalog.put(key.into(), value.into()).await.expect("put");
    }
    let found = catalog.search("ap".into()).await.expect("search");
    let keys: Vec<&str> = found.iter().map(|entry| entry.key.as_str()).collect();
    assert_eq!(keys, ["ap", "apple", "apricot"], "in key order, the prefix's only");
    assert_eq!(found[1], CatalogEntry { key: "apple".into(), value: "green".into() });
    assert_eq!(catalog.search(String::new()).await.expect("all").len(), 4);
    assert_eq!(catalog.count().await.expect("count"), 4);
    assert!(catalog.remove("apple".into()).await.expect("remove"));
    assert!(!catalog.remove("apple".into()).await.expect("remove again"));
    assert_eq!(catalog.get("apple".into()).await.expect("get"), None);
    assert_eq!(catalog.count().await.expect("count"), 3);

    // At most 100, in key order; and an instance of its own per name.
    for n in 0..(MAX_SEARCH_RESULTS + 20) {
        catalog.put(format!("item/{n:04}"), n.to_string()).await.expect("put");
    }
    let page = catalog.search("item/".into()).await.expect("search");
    assert_eq!(page.len(), MAX_SEARCH_RESULTS);
    assert_eq!(page[0].key, "item/0000");
    assert_eq!(page[99].key, "item/0099");
    let other = self::catalog(&server, "other-shop").await;
    assert_eq!(other.count().await.expect("count"), 0);
}

#[tokio::test]
async fn keys_and_values_holding_sql_are_stored_and_found_literally() {
    let server = examples().await;
    let catalog = catalog(&server, "injection").await;
    let keys = [
        "'; DROP TABLE cache; --",
        "\" OR 1=1 --",
        "{key}",
        "%",
        "_",
        "a'b\"c\\d",
        "",
        "😀 ünïcödé",
        "x\u{0}y",
    ];
    for (n, key) in keys.iter().enumerate() {
        let value = format!("'); DELETE FROM cache; -- {n}");
        assert_eq!(catalog.put((*key).into(), value).await.expect("put"), 1, "{key:?}");
    }
    for (n, key) in keys.iter().enumerate() {
        let value = catalog.get((*key).into()).await.expect("get");
        assert_eq!(value, Some(format!("'); DELETE FROM cache; -- {n}")), "{key:?}");
    }
    assert_eq!(catalog.count().await.expect("count"), keys.len() as u64, "the table is whole");
    // LIKE's wildcards mean nothing to a prefix search.
    let percent = catalog.search("%".into()).await.expect("search");
    assert_eq!(percent.iter().map(|e| e.key.as_str()).collect::<Vec<_>>(), ["%"]);
    let quote = catalog.search("'".into()).await.expect("search");
    assert_eq!(quote.len(), 1);
    assert_eq!(quote[0].key, keys[0]);
}

#[tokio::test]
async fn a_failing_statement_is_an_rpc_error_and_earlier_data_stays() {
    let server = start(agents_examples::server().max_sql_row_size(4096)).await;
    let catalog = catalog(&server, "limits").await;
    catalog.put("kept".into(), "small".into()).await.expect("put");
    let error = catalog.put("kept".into(), "x".repeat(5000)).await.expect_err("over the limit");
    let error = error.to_string();
    assert!(error.contains("max_sql_row_size") && error.contains("4096"), "{error}");
    assert_eq!(catalog.get("kept".into()).await.expect("get"), Some("small".into()));
    assert_eq!(catalog.count().await.expect("count"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_puts_survive_a_graceful_restart_and_sigkill() {
    let dir = TempDir::new("catalog-durable");
    let child = ChildServer::start(EXAMPLES_SERVER, dir.path()).await;
    let acked = put_concurrently(&child.server(), "round1", 4, 50).await;
    let pid = child.child.id().expect("running");
    let term = std::process::Command::new("sh").args(["-c", &format!("kill -TERM {pid}")]).status();
    assert!(term.expect("kill runs").success());
    let mut child = child;
    let exit = tokio::time::timeout(agents_tests::WAIT, child.child.wait()).await.expect("exits");
    assert_eq!(exit.expect("waits").code(), Some(0));

    let child = ChildServer::start(EXAMPLES_SERVER, dir.path()).await;
    check_present(&child.server(), &acked).await;
    let acked_again = put_concurrently(&child.server(), "round2", 4, 50).await;
    // Acknowledged, so durable: the answers waited for the disk.
    child.kill().await;
    let child = ChildServer::start(EXAMPLES_SERVER, dir.path()).await;
    check_present(&child.server(), &acked).await;
    check_present(&child.server(), &acked_again).await;
    child.kill().await;
}

/// `writers` clients each put `each` keys into instance `writer-{n}`, one after another;
/// returns the `(instance, key, value)` of every acknowledged put.
async fn put_concurrently(
    server: &Endpoint,
    round: &str,
    writers: usize,
    each: usize,
) -> Vec<(String, String, String)> {
    let tasks = (0..writers).map(|n| {
        let server = *server;
        let round = round.to_owned();
        tokio::spawn(async move {
            let name = format!("writer-{n}");
            let catalog = catalog(&server, &name).await;
            let mut acked = Vec::new();
            for i in 0..each {
                let (key, value) = (format!("{round}/{i}"), format!("value {i} of {round}"));
                assert_eq!(catalog.put(key.clone(), value.clone()).await.expect("put"), 1);
                acked.push((name.clone(), key, value));
            }
            acked
        })
    });
    let mut acked = Vec::new();
    for task in tasks {
        acked.extend(task.await.expect("the writer ran"));
    }
    acked
}

async fn check_present(server: &Endpoint, acked: &[(String, String, String)]) {
    let mut lost = Vec::new();
    for (name, key, value) in acked {
        let catalog = catalog(server, name).await;
        if catalog.get(key.clone()).await.expect("get").as_ref() != Some(value) {
            lost.push(format!("{name}/{key}"));
        }
    }
    assert!(lost.is_empty(), "{} acknowledged puts lost: {lost:?}", lost.len());
}

/// A lab for the turn's transaction and the limits: raw statements, hooks that fail after
/// writing, and an `on_error` and `on_state_changed` that write.
#[derive(Default)]
struct SqlLab;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct LabState {
    version: u64,
}

#[agent(state = LabState, rename_all = "camelCase")]
impl SqlLab {
    async fn on_start(&mut self, ctx: &mut Context<Self>) -> Result<()> {
        ctx.sql().exec("CREATE TABLE IF NOT EXISTS log (entry TEXT NOT NULL)", ())?;
        Ok(())
    }

    /// Runs `statement` with `params`; the rows as JSON objects.
    #[callable]
    fn exec(
        &mut self,
        ctx: &mut Context<Self>,
        statement: String,
        params: Vec<Value>,
    ) -> Result<Vec<Value>> {
        let params = params.iter().map(SqlValue::from_serialize).collect::<Result<Vec<_>, _>>()?;
        Ok(ctx.sql().exec(&statement, params)?.to_array()?)
    }

    /// The entries of the log table, in order.
    #[callable]
    fn entries(&mut self, ctx: &mut Context<Self>) -> Result<Vec<String>> {
        Ok(ctx.sql().exec("SELECT entry FROM log ORDER BY rowid", ())?.to_array()?)
    }

    /// Writes `entry`, then fails.
    #[callable]
    fn write_then_fail(&mut self, ctx: &mut Context<Self>, entry: String) -> Result<()> {
        sql!(ctx, "INSERT INTO log (entry) VALUES ({entry})")?;
        Err(Error::msg("failed after writing"))
    }

    /// Writes `entry`, then changes the state: `on_state_changed` writes and fails.
    #[callable]
    fn write_and_change(&mut self, ctx: &mut Context<Self>, entry: String) -> Result<()> {
        sql!(ctx, "INSERT INTO log (entry) VALUES ({entry})")?;
        let version = ctx.state().version + 1;
        ctx.set_state(LabState { version })?;
        Ok(())
    }

    /// Writes `entry`, then fills the database past its size limit and ignores the error:
    /// SQLite rolled back the whole transaction, `entry` included.
    #[callable]
    fn write_then_overfill(&mut self, ctx: &mut Context<Self>, entry: String) -> Result<()> {
        sql!(ctx, "INSERT INTO log (entry) VALUES ({entry})")?;
        ctx.sql().exec("CREATE TABLE IF NOT EXISTS ballast (data BLOB)", ())?;
        for _ in 0..1000 {
            if ctx.sql().exec("INSERT INTO ballast VALUES (randomblob(4000))", ()).is_err() {
                break;
            }
        }
        Ok(())
    }

    /// The database's size, and what `delete_all` dropped.
    #[callable]
    fn size(&mut self, ctx: &mut Context<Self>) -> Result<u64> {
        Ok(ctx.sql().database_size()?)
    }

    #[callable]
    fn delete_all(&mut self, ctx: &mut Context<Self>) -> Result<usize> {
        Ok(ctx.sql().delete_all()?)
    }

    async fn on_state_changed(
        &mut self,
        ctx: &mut Context<Self>,
        _state: &LabState,
        _source: StateSource<'_, ()>,
    ) -> Result<()> {
        ctx.sql().exec("INSERT INTO log (entry) VALUES ('on_state_changed')", ())?;
        Err(Error::msg("on_state_changed fails after writing"))
    }

    /// A text message is written to the log; `fail` makes the hook fail after writing.
    async fn on_message(
        &mut self,
        ctx: &mut Context<Self>,
        _conn: &Connection,
        message: Message,
    ) -> Result<()> {
        let text = message.as_text().unwrap_or_default().to_owned();
        sql!(ctx, "INSERT INTO log (entry) VALUES ({text})")?;
        if text == "fail" {
            return Err(Error::msg("on_message fails after writing"));
        }
        Ok(())
    }

    /// Errors are logged, and that write stays.
    async fn on_error(
        &mut self,
        ctx: &mut Context<Self>,
        _conn: Option<&Connection>,
        error: &Error,
    ) -> Result<()> {
        let entry = format!("error: {error}");
        sql!(ctx, "INSERT INTO log (entry) VALUES ({entry})")?;
        Ok(())
    }
}

/// Calls `method` on a raw client; the result, or the error.
async fn call(
    client: &mut agents_tests::Client,
    method: &str,
    args: Value,
) -> Result<Value, String> {
    client.send_rpc("1", method, args).await;
    loop {
        let frame = client.recv_json().await;
        if frame["type"] == "rpc" && frame["id"] == "1" {
            return match frame["success"].as_bool() {
                Some(true) => Ok(frame["result"].clone()),
                _ => Err(frame["error"].as_str().unwrap_or_default().to_owned()),
            };
        }
    }
}

#[tokio::test]
async fn a_failing_hook_rolls_back_its_own_statements_only() {
    let dir = TempDir::new("sql-lab");
    let server =
        start(agents_runtime::Server::builder().agent::<SqlLab>().data_dir(dir.path())).await;
    let mut client = server.connect("/agents/sql-lab/one").await;
    let error =
        call(&mut client, "writeThenFail", json!(["rolled back"])).await.expect_err("fails");
    assert_eq!(error, "failed after writing");
    assert_eq!(call(&mut client, "entries", json!([])).await, Ok(json!([])));

    // The callable's write commits; on_state_changed's is rolled back, on_error's kept.
    call(&mut client, "writeAndChange", json!(["kept"])).await.expect("written");
    let entries = call(&mut client, "entries", json!([])).await.expect("entries");
    assert_eq!(entries, json!(["kept", "error: on_state_changed fails after writing"]));

    client.send_text("fine").await;
    client.send_text("fail").await;
    let entries = call(&mut client, "entries", json!([])).await.expect("entries");
    let entries = entries.as_array().expect("a list");
    assert_eq!(entries[2..], [json!("fine"), json!("error: on_message fails after writing")]);
}

#[tokio::test]
async fn a_failing_first_call_keeps_what_on_start_created() {
    let server = start(agents_runtime::Server::builder().agent::<SqlLab>()).await;
    let lab = server.handle.get_agent_by_name::<SqlLab>("fresh").expect("registered");
    let lab = SqlLabClient::new(lab);
    let error = lab.write_then_fail("x".into()).await.expect_err("fails");
    assert_eq!(error.to_string(), "failed after writing");
    // `on_start`'s table is there: only the method's own statement was rolled back.
    assert_eq!(lab.entries().await.expect("the table exists"), Vec::<String>::new());
}

#[tokio::test]
async fn a_turn_whose_transaction_sqlite_rolled_back_is_not_acknowledged() {
    let builder =
        agents_runtime::Server::builder().agent::<SqlLab>().max_sql_database_size(128 * 1024);
    let server = start(builder).await;
    let mut client = server.connect("/agents/sql-lab/overfill").await;
    call(&mut client, "writeAndChange", json!(["before"])).await.expect("written");
    let error = call(&mut client, "writeThenOverfill", json!(["gone"])).await.expect_err("lost");
    assert!(error.contains("Storage failed"), "{error}");
    // The instance restarted from what was committed: the earlier turn's rows, not this one's.
    let entries = call(&mut client, "entries", json!([])).await.expect("entries");
    assert_eq!(entries[0], "before");
    assert!(!entries.as_array().expect("a list").contains(&json!("gone")), "{entries}");
}

#[tokio::test]
async fn statements_get_clear_errors_for_mistakes_rules_and_limits() {
    let builder = agents_runtime::Server::builder()
        .agent::<SqlLab>()
        .max_sql_bound_parameters(3)
        .max_sql_statement_length(200)
        .max_sql_database_size(256 * 1024);
    let server = start(builder).await;
    let mut client = server.connect("/agents/sql-lab/rules").await;
    async fn exec(
        client: &mut agents_tests::Client,
        statement: &str,
        params: Value,
    ) -> Result<Value, String> {
        call(client, "exec", json!([statement, params])).await
    }
    let cases: &[(&str, Value, &str)] = &[
        ("SELEC 1", json!([]), "near \"SELEC\": syntax error at offset 0 (SQLITE_ERROR)"),
        ("SELECT * FROM missing", json!([]), "no such table: missing (SQLITE_ERROR)"),
        ("SELECT ?", json!([]), "the statement has 1 parameter(s); 0 value(s) were bound"),
        (
            "SELECT ?, ?, ?, ?",
            json!([1, 2, 3, 4]),
            "at most 3 parameters (max_sql_bound_parameters)",
        ),
        ("BEGIN", json!([]), "each turn is one transaction"),
        ("COMMIT", json!([]), "each turn is one transaction"),
        ("SAVEPOINT x", json!([]), "each turn is one transaction"),
        ("ATTACH 'other.db' AS other", json!([]), "ATTACH and DETACH are refused"),
        (
            "PRAGMA journal_mode = DELETE",
            json!([]),
            "PRAGMA journal_mode with a value is not allowed",
        ),
        ("PRAGMA synchronous = OFF", json!([]), "PRAGMA synchronous with a value is not allowed"),
        ("SELECT 1; SELECT 2", json!([]), "exec runs one statement"),
        (
            "PRAGMA hard_heap_limit = 1000",
            json!([]),
            "PRAGMA hard_heap_limit with a value is not allowed",
        ),
        ("PRAGMA cache_size = 1000000", json!([]), "PRAGMA cache_size with a value is not allowed"),
        (
            "CREATE TEMP TABLE t (x)",
            json!([]),
            "TEMP tables, views, indexes and triggers are not supported",
        ),
    ];
    for (statement, params, expected) in cases {
        let error = exec(&mut client, statement, params.clone()).await.expect_err(statement);
        assert!(error.contains(expected), "{statement}: {error}");
    }
    let long = format!("SELECT '{}'", "x".repeat(300));
    let error = exec(&mut client, &long, json!([])).await.expect_err("too long");
    assert!(error.contains("the limit is 200 (max_sql_statement_length)"), "{error}");
    assert_eq!(
        exec(&mut client, "SELECT ? AS a, ? AS b", json!([1, "two"])).await,
        Ok(json!([{ "a": 1, "b": "two" }]))
    );

    // A statement cached before a schema change reads the new columns.
    exec(&mut client, "CREATE TABLE shape (a)", json!([])).await.expect("created");
    exec(&mut client, "INSERT INTO shape VALUES (1)", json!([])).await.expect("inserted");
    assert_eq!(exec(&mut client, "SELECT * FROM shape", json!([])).await, Ok(json!([{ "a": 1 }])));
    exec(&mut client, "ALTER TABLE shape ADD COLUMN b DEFAULT 2", json!([]))
        .await
        .expect("altered");
    let rows = exec(&mut client, "SELECT * FROM shape", json!([])).await;
    assert_eq!(rows, Ok(json!([{ "a": 1, "b": 2 }])));
    exec(&mut client, "DROP TABLE shape", json!([])).await.expect("dropped");
    // Tables that reference each other: `delete_all` drops them whatever the order.
    exec(&mut client, "CREATE TABLE parent (id INTEGER PRIMARY KEY)", json!([])).await.expect("t");
    let child = "CREATE TABLE child (p INTEGER REFERENCES parent (id))";
    exec(&mut client, child, json!([])).await.expect("t");
    exec(&mut client, "INSERT INTO parent VALUES (1)", json!([])).await.expect("row");
    exec(&mut client, "INSERT INTO child VALUES (1)", json!([])).await.expect("row");

    // The size limit: a table that grows past it.
    exec(&mut client, "CREATE TABLE big (data BLOB)", json!([])).await.expect("created");
    let mut full = None;
    for _ in 0..200 {
        match exec(&mut client, "INSERT INTO big VALUES (randomblob(4000))", json!([])).await {
            Ok(_) => {}
            Err(e) => {
                full = Some(e);
                break;
            }
        }
    }
    let full = full.expect("the database reached its size limit");
    assert!(full.contains("size limit of 262144 bytes (max_sql_database_size)"), "{full}");
    let size = call(&mut client, "size", json!([])).await.expect("size").as_u64().expect("bytes");
    assert!(size > 200_000 && size <= 262_144, "{size}");
    assert_eq!(call(&mut client, "deleteAll", json!([])).await, Ok(json!(4)));
    let after = call(&mut client, "size", json!([])).await.expect("size").as_u64().expect("bytes");
    assert!(after < 16 * 1024, "delete_all gave the pages back: {after}");
    let error = exec(&mut client, "SELECT * FROM log", json!([])).await.expect_err("dropped");
    assert!(error.contains("no such table: log"), "{error}");
}

#[tokio::test]
async fn a_database_in_memory_outlives_hibernation() {
    let nap = Duration::from_millis(200);
    let server = start(agents_examples::server().hibernate_after(nap)).await;
    let catalog = catalog(&server, "napping").await;
    catalog.put("k".into(), "v".into()).await.expect("put");
    let handle = server.handle.clone();
    eventually("the instance hibernates", || handle.hibernated_instances() == 1).await;
    assert_eq!(catalog.get("k".into()).await.expect("get"), Some("v".into()));
}

/// How many file descriptors process `pid` has open.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(Iterator::count).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_instances_hibernate_with_their_databases_closed() {
    const INSTANCES: usize = 5000;
    const OPEN_FILES: u32 = 8192;
    let dir = TempDir::new("sql-5000");
    let args = ["--hibernate-after", "1s", "--max-open-databases", "64"];
    let child = ChildServer::start_limited(EXAMPLES_SERVER, dir.path(), OPEN_FILES, &args).await;
    let pid = child.child.id().expect("running");
    let server = child.server();
    let mut clients = Vec::with_capacity(INSTANCES);
    let mut most_fds = 0;
    for chunk in (0..INSTANCES).collect::<Vec<_>>().chunks(250) {
        let opened = chunk.iter().map(|&n| {
            tokio::spawn(async move {
                let catalog = catalog(&server, &format!("i{n}")).await;
                catalog.put("owner".into(), format!("instance {n}")).await.expect("put");
                catalog
            })
        });
        for client in opened.collect::<Vec<_>>() {
            clients.push(client.await.expect("connected and put"));
        }
        most_fds = most_fds.max(open_fds(pid));
    }
    // One socket per client; the databases' are bounded (64 open, three each).
    assert!(most_fds < INSTANCES + 400, "{most_fds} open files at most while writing");
    assert!(most_fds < OPEN_FILES as usize * 2 / 3, "{most_fds}: far below the limit");
    eventually("every instance hibernates", || open_fds(pid) < INSTANCES + 100).await;
    // Each instance wakes with its own data.
    for (n, catalog) in clients.iter().enumerate().step_by(7) {
        let value = catalog.get("owner".into()).await.expect("get");
        assert_eq!(value, Some(format!("instance {n}")));
    }
    assert!(open_fds(pid) < INSTANCES + 400);
    child.kill().await;
}
