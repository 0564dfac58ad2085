//! The examples server with its data directory on a small filesystem that fills up: the
//! writer is told within the storage timeout, everything that does not write is served
//! meanwhile, writes work again once there is space (no restart), and nothing acknowledged is
//! lost across a restart.
//!
//! It mounts a 2 MiB tmpfs, so it needs root (or `sudo -n`); elsewhere it says it skipped
//! (and fails under `CI=true`, where it must run).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use agents_runtime::testing::Client;
use agents_tests::TempDir;
use agents_tests::child::ChildServer;
use serde_json::{Value, json};

const EXAMPLES_SERVER: &str = env!("CARGO_BIN_EXE_examples-server");

/// What `--storage-timeout` is set to.
const STORAGE_TIMEOUT: Duration = Duration::from_secs(2);

/// A tmpfs mounted for the test, unmounted when it drops.
struct SmallFilesystem {
    path: PathBuf,
    _dir: TempDir,
}

/// `program` run as root: directly when the test is root, else through `sudo -n`.
fn as_root(program: &str) -> Command {
    let uid = Command::new("id").arg("-u").output().map(|out| out.stdout).unwrap_or_default();
    if uid.trim_ascii() == b"0" {
        return Command::new(program);
    }
    let mut sudo = Command::new("sudo");
    sudo.args(["-n", program]);
    sudo
}

impl SmallFilesystem {
    /// Mounts a tmpfs of `size` (like `2m`), or says why it cannot.
    fn mount(size: &str) -> Result<Self, String> {
        let dir = TempDir::new("full-disk");
        let path = dir.path().join("mnt");
        std::fs::create_dir_all(&path).map_err(|e| e.to_string())?;
        // A tmpfs is writable by everyone (mode 1777): the server need not be root.
        let status = as_root("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .status()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !status.success() {
            return Err(format!("mount -t tmpfs failed ({status})"));
        }
        Ok(Self { path, _dir: dir })
    }

    fn resize(&self, size: &str) {
        let status = as_root("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.path)
            .status()
            .expect("runs mount");
        assert!(status.success(), "remount to {size}: {status}");
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SmallFilesystem {
    fn drop(&mut self) {
        let _ = as_root("umount").arg("-l").arg(&self.path).status();
    }
}

/// The small filesystem, or `None` after saying why the test skips (a panic under `CI=true`).
fn small_filesystem() -> Option<SmallFilesystem> {
    let why = match SmallFilesystem::mount("2m") {
        Ok(fs) => {
            agents_tests::ran("the full-disk test");
            return Some(fs);
        }
        Err(why) => format!("{why}: mounting a tmpfs needs root or `sudo -n`"),
    };
    agents_tests::skip("the full-disk test", &why);
    None
}

/// A note's text: its number, padded to about a kilobyte.
fn note(number: u64) -> String {
    format!("note {number} {}", "x".repeat(1000 - 12))
}

/// Calls `Notebook.addNote` and waits up to `wait` for the answer: `Some(Ok(number))`,
/// `Some(Err(message))`, or `None` if nothing came.
async fn add_note(
    client: &mut Client,
    id: &str,
    text: &str,
    wait: Duration,
) -> Option<Result<u64, String>> {
    client.send_rpc(id, "addNote", json!([text])).await;
    await_answer(client, id, wait).await
}

/// The next RPC answer, within `wait`.
async fn await_answer(
    client: &mut Client,
    id: &str,
    wait: Duration,
) -> Option<Result<u64, String>> {
    let answer = tokio::time::timeout(wait, next_rpc(client)).await.ok()?;
    Some(rpc_outcome(id, &answer))
}

/// The next `rpc` frame (the protocol's other frames skipped).
async fn next_rpc(client: &mut Client) -> Value {
    loop {
        let frame = client.recv_json().await;
        if frame["type"] == "rpc" {
            return frame;
        }
    }
}

fn rpc_outcome(id: &str, answer: &Value) -> Result<u64, String> {
    assert_eq!(answer["type"], "rpc", "{answer}");
    assert_eq!(answer["id"], id, "{answer}");
    if answer["success"] == true {
        Ok(answer["result"].as_u64().unwrap_or_else(|| panic!("a number: {answer}")))
    } else {
        Err(answer["error"].as_str().unwrap_or_default().to_owned())
    }
}

/// The stateless agent, HTTP and a new connection are served while the store fails.
async fn the_rest_is_served(child: &ChildServer) {
    let server = child.server();
    let mut fresh = tokio::time::timeout(Duration::from_secs(2), async {
        let mut client = server.connect("/agents/my-agent/meanwhile").await;
        assert_eq!(client.recv_text().await, "Welcome!");
        client.send_text("hello").await;
        assert_eq!(client.recv_text().await, "hello");
        client
    })
    .await
    .expect("a new connection to a stateless agent is served while the disk is full");
    let http =
        tokio::time::timeout(Duration::from_secs(2), server.http("GET", "/agents/my-agent/x", b""));
    assert_eq!(http.await.expect("HTTP is served while the disk is full").0, 200);
    fresh.close(None).await;
}

#[tokio::test]
async fn a_full_disk_is_answered_and_recovered_without_losing_acknowledged_writes() {
    let Some(fs) = small_filesystem() else { return };
    let args = ["--storage-timeout", "2s"];
    let child = ChildServer::start_limited(EXAMPLES_SERVER, fs.path(), 1024, &args).await;
    let server = child.server();
    let mut writer = server.connect("/agents/notebook/full").await;

    // Fill the disk: every answer either acknowledges the note or, once the disk is full,
    // says so within the storage timeout (and a little scheduling slack).
    let bound = STORAGE_TIMEOUT + Duration::from_secs(3);
    let mut acknowledged = 0;
    let mut checked_meanwhile = false;
    let failure = loop {
        let number = acknowledged + 1;
        assert!(number < 20_000, "2 MiB never filled up");
        let id = format!("add{number}");
        let sent = Instant::now();
        let answer =
            match add_note(&mut writer, &id, &note(number), Duration::from_millis(300)).await {
                Some(answer) => answer,
                None => {
                    // Held by the output gate: what does not write is served meanwhile.
                    the_rest_is_served(&child).await;
                    checked_meanwhile = true;
                    let left = bound.saturating_sub(sent.elapsed());
                    await_answer(&mut writer, &id, left)
                        .await
                        .unwrap_or_else(|| panic!("no answer to {id} within {bound:?}"))
                }
            };
        match answer {
            Ok(got) => {
                assert_eq!(got, number);
                acknowledged = number;
            }
            Err(error) => break error,
        }
    };
    assert!(acknowledged > 10, "the disk filled after {acknowledged} notes");
    assert!(
        failure.contains("No space left on device") || failure.contains("Storage failed"),
        "the error names the storage failure: {failure}"
    );
    if !checked_meanwhile {
        the_rest_is_served(&child).await;
    }

    // Space comes back: a new write is acknowledged, without a restart.
    fs.resize("64m");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut attempt = 0;
    let recovered = loop {
        attempt += 1;
        let id = format!("retry{attempt}");
        let answer =
            add_note(&mut writer, &id, &format!("after {attempt}"), Duration::from_secs(10)).await;
        match answer {
            Some(Ok(number)) => break number,
            Some(Err(_)) | None if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            other => panic!("writes did not work again once space was back: {other:?}"),
        }
    };
    assert!(recovered > acknowledged, "{recovered} after {acknowledged} acknowledged");
    eprintln!(
        "full disk: {acknowledged} notes acknowledged, then `{failure}` (held first: \
         {checked_meanwhile}); note {recovered} acknowledged after {attempt} attempt(s) once \
         space was back"
    );
    // The storage layer logs the OS reason once per change, not once per attempt (RPC errors
    // are logged apart, within each instance's log budget).
    // The log is read from the child's pipe by a task of this test: the last lines may still
    // be on their way.
    let recovered_line = |log: &[String]| log.iter().any(|line| line.contains("works again"));
    agents_tests::eventually("the log says storage works again", || recovered_line(&child.log()))
        .await;
    let log = child.log();
    let storage: Vec<_> = log.iter().filter(|line| line.contains("storage::durability")).collect();
    let reasons = storage.iter().filter(|line| line.contains("No space left on device")).count();
    assert!((1..=3).contains(&reasons), "the OS reason, once per change: {storage:#?}");
    assert!(storage.iter().any(|line| line.contains("works again")), "{storage:#?}");

    // Nothing acknowledged is lost across a restart (a kill, so nothing is flushed on exit).
    writer.close(None).await;
    child.kill().await;
    let child = ChildServer::start(EXAMPLES_SERVER, fs.path()).await;
    let mut reader = child.server().connect("/agents/notebook/full").await;
    reader.send_rpc("latest", "latest", json!([100])).await;
    let answer = next_rpc(&mut reader).await;
    assert_eq!(answer["success"], true, "{answer}");
    let notes = answer["result"].as_array().expect("notes");
    let last = notes.last().expect("notes survived");
    assert_eq!(last["number"], recovered, "the note written after recovery survived");
    assert!(last["text"].as_str().is_some_and(|text| text.starts_with("after ")), "{last}");
    for number in acknowledged.saturating_sub(50)..=acknowledged {
        let kept = notes.iter().find(|n| n["number"] == number);
        let kept = kept.unwrap_or_else(|| panic!("acknowledged note {number} was lost"));
        assert_eq!(kept["text"], note(number), "note {number}");
    }
    child.kill().await;
}
