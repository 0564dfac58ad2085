//! A first server keeps its data: `Server::builder()` with default settings writes to
//! `./.agents-data`, says so on stderr without any tracing set up, and a restart (after
//! SIGKILL) finds what it acknowledged.

use std::path::Path;
use std::process::Stdio;

use agents_runtime::client::{AgentClient, RpcTransport};
use agents_tests::{TempDir, WAIT};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Starts `first-run` in `dir`; returns it, its address and the first line of its stderr.
async fn start(dir: &Path) -> (Child, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_first-run"))
        .arg("127.0.0.1:0")
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("first-run starts");
    let mut stdout = BufReader::new(child.stdout.take().expect("piped")).lines();
    let mut stderr = BufReader::new(child.stderr.take().expect("piped")).lines();
    let said = tokio::time::timeout(WAIT, stderr.next_line()).await.expect("says something");
    let said = said.expect("reads stderr").expect("a line on stderr");
    let line = tokio::time::timeout(WAIT, stdout.next_line()).await.expect("listens in time");
    let line = line.expect("reads stdout").expect("a line on stdout");
    let addr = line.strip_prefix("listening on ").expect("its address").to_owned();
    (child, addr, said)
}

async fn increment(addr: &str) -> i64 {
    let client =
        AgentClient::connect(&format!("ws://{addr}/agents/counter/first")).await.expect("connects");
    let count = client.call("increment", vec![]).await.expect("increments");
    count.and_then(|count| count.as_i64()).expect("a count")
}

#[tokio::test]
async fn a_default_server_keeps_its_data_in_agents_data_across_a_restart() {
    let dir = TempDir::new("first-run");
    let (mut child, addr, said) = start(dir.path()).await;
    let data = std::path::absolute(dir.path().join(".agents-data")).expect("a path");
    assert_eq!(
        said,
        format!("agents-rs: data in {} (state, storage and SQL survive restarts)", data.display()),
        "the server says where its data is, with no tracing set up"
    );
    for expected in 1..=3 {
        assert_eq!(increment(&addr).await, expected);
    }
    assert!(data.join("store").is_dir(), "the store is in ./.agents-data");
    // Acknowledged writes are on disk: not even a graceful shutdown is needed.
    child.kill().await.expect("SIGKILL");
    let (_child, addr, _) = start(dir.path()).await;
    assert_eq!(increment(&addr).await, 4, "the restarted server found the count");
}
