//! The benchmark harness itself works: every `loadgen` mode, run small against a real
//! `bench-server` (and the chat mode against the tokio-tungstenite peer), reports the counts
//! its workload implies. No timing is checked, only that the figures are there and add up.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A server child process, killed when dropped.
struct Server {
    child: Child,
    port: u16,
    _data: Option<PathBuf>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(data) = &self._data {
            let _ = std::fs::remove_dir_all(data);
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().expect("bound").port()
}

fn wait_for(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn bench_server() -> Server {
    let port = free_port();
    let data =
        std::env::temp_dir().join(format!("agents-bench-test-{}-{port}", std::process::id()));
    let child = Command::new(env!("CARGO_BIN_EXE_bench-server"))
        .args(["--addr", &format!("127.0.0.1:{port}"), "--hibernate-after", "1s"])
        .arg("--data-dir")
        .arg(&data)
        .stdout(Stdio::null())
        .spawn()
        .expect("bench-server starts");
    wait_for(port);
    Server { child, port, _data: Some(data) }
}

fn tokio_peer() -> Server {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_tokio-peer"))
        .arg(format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .spawn()
        .expect("tokio-peer starts");
    wait_for(port);
    Server { child, port, _data: None }
}

/// Runs `loadgen` and returns its `RESULT` JSON.
fn loadgen(server: &Server, args: &[&str]) -> Value {
    let output = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(args)
        .args(["--server-pid", &server.child.id().to_string(), "--timeout", "60s"])
        .output()
        .expect("loadgen runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "loadgen {args:?} failed: {stderr}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().find_map(|l| l.strip_prefix("RESULT ")).expect("a RESULT line");
    serde_json::from_str(line).expect("RESULT is JSON")
}

fn url(server: &Server, path: &str) -> String {
    format!("ws://127.0.0.1:{}{path}", server.port)
}

#[test]
fn chat_counts_every_delivery_on_ours_and_the_peer() {
    for server in [bench_server(), tokio_peer()] {
        let url = url(&server, "/agents/chat-room/smoke");
        let args = ["chat", "--url", &url, "--conns", "6", "--senders", "3", "--messages", "20"];
        let report = loadgen(&server, &args);
        assert_eq!(report["deliveries"], 6 * 3 * 20, "{report}");
        assert_eq!(report["latency"]["samples"], 6 * 3 * 20);
        assert!(report["server_cpu_s"].as_f64().is_some(), "{report}");
        let (user, system) = (&report["server_user_s"], &report["server_system_s"]);
        let parts = user.as_f64().zip(system.as_f64()).map(|(user, system)| user + system);
        // This kernel keeps the scheduler's count: the total is exact, and agrees with the
        // tick-counted split (else `loadgen` would have fallen back to the ticks).
        assert_eq!(report["server_cpu_exact"], true, "{report}");
        let total = report["server_cpu_s"].as_f64();
        let apart = parts.zip(total).map(|(parts, total)| (parts - total).abs());
        assert!(apart.is_some_and(|apart| apart < 0.02), "{report}");
        assert!(report["server_minor_faults"].as_u64().is_some(), "{report}");
        assert!(report["latency"]["p99_ms"].as_f64().is_some_and(|p99| p99 > 0.0), "{report}");
    }
}

#[test]
fn rpc_reports_latency_and_group_commit_figures() {
    let server = bench_server();
    let stats = format!("http://127.0.0.1:{}/agents/bench-stats/s", server.port);
    let gated = url(&server, "/agents/counter/smoke");
    let args = ["rpc", "--url", &gated, "--rate", "500", "--calls", "200", "--stats-url", &stats];
    let report = loadgen(&server, &args);
    assert_eq!(report["latency"]["samples"], 200, "{report}");
    assert_eq!(report["durable_writes"], 200, "every increment is one confirmed write: {report}");
    assert!(report["flushes"].as_u64().is_some_and(|f| (1..=200).contains(&f)), "{report}");
    let relaxed = url(&server, "/agents/relaxed-counter/smoke");
    let args = ["rpc", "--url", &relaxed, "--rate", "500", "--calls", "100", "--stats-url", &stats];
    let report = loadgen(&server, &args);
    assert_eq!(report["latency"]["samples"], 100, "{report}");
    assert_eq!(report["durable_writes"], 0, "relaxed writes are not waited for: {report}");
}

#[test]
fn connect_and_idle_report_their_figures() {
    let server = bench_server();
    let target = url(&server, "/agents/chat-room/connect");
    let report =
        loadgen(&server, &["connect", "--url", &target, "--total", "50", "--concurrency", "5"]);
    assert_eq!(report["latency"]["samples"], 50, "{report}");
    assert!(report["upgrades_per_s"].as_f64().is_some_and(|r| r > 0.0), "{report}");
    let stats = format!("http://127.0.0.1:{}/agents/bench-stats/s", server.port);
    let target = url(&server, "/agents/chat-room/idle");
    let args = [
        "idle",
        "--url",
        &target,
        "--conns",
        "40",
        "--per-room",
        "10",
        "--settle",
        "0s",
        "--hibernate-wait",
        "3s",
        "--stats-url",
        &stats,
    ];
    let report = loadgen(&server, &args);
    assert!(report["bytes_per_conn_awake"].as_f64().is_some(), "{report}");
    assert!(report["bytes_per_conn_hibernated"].as_f64().is_some(), "{report}");
    assert_eq!(report["server"]["open_connections"], 40, "{report}");
    assert_eq!(report["server"]["hibernated_instances"], 4, "four rooms, all asleep: {report}");
}

#[test]
fn bad_arguments_are_refused_with_a_reason() {
    let run = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_loadgen")).args(args).output().expect("runs");
        assert!(!output.status.success(), "{args:?} was accepted");
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    assert!(run(&[]).contains("a mode is required"));
    assert!(run(&["chat"]).contains("--url is required"));
    assert!(run(&["chat", "--url", "http://x"]).contains("is not a ws:// URL"));
    assert!(
        run(&["chat", "--url", "ws://127.0.0.1:1/", "--conns", "0"]).contains("positive integer")
    );
    assert!(
        run(&["chat", "--url", "ws://127.0.0.1:1/", "--conns", "20000"]).contains("at most 19000")
    );
    assert!(
        run(&["chat", "--url", "ws://127.0.0.1:1/", "--bogus", "1"])
            .contains("not a flag of this mode")
    );
    assert!(
        run(&["idle", "--url", "ws://127.0.0.1:1/", "--settle", "soon"]).contains("not a duration")
    );
    assert!(run(&["fly", "--url", "ws://127.0.0.1:1/"]).contains("unknown mode"));
}
