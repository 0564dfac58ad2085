//! Helpers for the integration tests: [`agents_runtime::testing`] (the helpers users get),
//! plus the examples server, the README's doctest and the book's checks.

pub use agents_runtime::testing::*;

/// The examples server with default limits.
pub async fn examples() -> TestServer {
    start(agents_examples::server()).await
}

/// A WebSocket upgraded by hand on a raw TCP stream, to send bytes the way no client library
/// would; returns the stream after the server's 101 head.
pub async fn raw_upgrade(addr: std::net::SocketAddr, path: &str) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connects");
    let head = format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    tcp.write_all(head.as_bytes()).await.expect("writes the upgrade");
    let mut response = Vec::new();
    while !response.ends_with(b"\r\n\r\n") {
        response.push(tcp.read_u8().await.expect("reads the response head"));
    }
    assert!(response.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&response));
    tcp
}

pub mod node {
    //! The repository's Node projects (`tests/js`, `examples/web`): installed from their
    //! lockfiles with `npm ci` when `node_modules` is missing or older than the lockfile, once
    //! at a time across test processes. Node 20+ and npm must be on the PATH.

    use std::path::{Path, PathBuf};
    use std::process::{Command, Output, Stdio};

    use tokio::io::{AsyncBufReadExt, BufReader};

    /// `{workspace}/{relative}`.
    pub fn project(relative: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(relative)
    }

    /// Installs the locked packages of the project at `relative` (to the workspace) unless
    /// they are current, and returns its directory.
    pub fn npm_ci(relative: &str) -> PathBuf {
        let dir = project(relative);
        let dir = dir.as_path();
        // Test binaries may run at once (nextest): one installs, the others wait for it.
        let lock = std::fs::File::create(dir.join(".npm-ci.lock")).expect("creates the lock file");
        lock.lock().expect("locks the Node project");
        let lockfile = dir.join("package-lock.json");
        let marker = dir.join("node_modules/.package-lock.json");
        let fresh = match (std::fs::metadata(&lockfile), std::fs::metadata(&marker)) {
            (Ok(lockfile), Ok(marker)) => marker.modified().ok() >= lockfile.modified().ok(),
            _ => false,
        };
        if !fresh {
            let output = run(Command::new("npm").arg("ci").current_dir(dir), "npm ci");
            assert!(
                output.status.success(),
                "npm ci failed in {}:\n{}",
                dir.display(),
                describe(&output)
            );
        }
        dir.to_path_buf()
    }

    /// The tests' MCP server (the official TypeScript SDK's, `tests/js/mcp-server.mjs`), a Node
    /// child process; killed when dropped.
    pub struct McpServer {
        _child: tokio::process::Child,
        port: u16,
    }

    impl McpServer {
        /// Starts `tests/js/mcp-server.mjs` on a free port (installing the npm packages first).
        pub async fn start() -> Self {
            let dir = npm_ci("tests/js");
            let mut child = tokio::process::Command::new("node")
                .arg("mcp-server.mjs")
                .arg("0")
                .current_dir(&dir)
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .expect("node runs (Node 20+ must be installed)");
            let stdout = child.stdout.take().expect("piped");
            let mut lines = BufReader::new(stdout).lines();
            let port = crate::first_line(&mut lines, "the MCP server listening", |line| {
                line.strip_prefix("MCP_SERVER_LISTENING ")?.trim().parse().ok()
            })
            .await;
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            Self { _child: child, port }
        }

        /// The port it listens on, at 127.0.0.1.
        pub fn port(&self) -> u16 {
            self.port
        }

        /// `http://127.0.0.1:{port}{path}`.
        pub fn url(&self, path: &str) -> String {
            format!("http://127.0.0.1:{}{path}", self.port)
        }
    }

    /// Runs `command`, failing the test with a hint when the program is missing.
    pub fn run(command: &mut Command, what: &str) -> Output {
        command.output().unwrap_or_else(|e| {
            panic!("cannot run {what} (Node 20+ and npm must be installed): {e}")
        })
    }

    /// Exit status and both outputs, for a failure message.
    pub fn describe(output: &Output) -> String {
        format!(
            "status: {}\n--- stdout\n{}\n--- stderr\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    }
}

/// What `read` finds in the first line of a child's output where it finds something, within
/// [`WAIT`]; fails, saying `what` it waited for, if the output ends first.
async fn first_line<T, R: tokio::io::AsyncBufRead + Unpin>(
    lines: &mut tokio::io::Lines<R>,
    what: &str,
    mut read: impl FnMut(&str) -> Option<T>,
) -> T {
    let found = tokio::time::timeout(WAIT, async {
        while let Some(line) = lines.next_line().await.expect("reads the child's output") {
            if let Some(found) = read(&line) {
                return found;
            }
        }
        panic!("the child's output ended before {what}");
    });
    found.await.unwrap_or_else(|_| panic!("no {what} in time"))
}

/// The README's example agent, compiled as a doctest so it cannot drift from the API.
#[doc = include_str!("../../README.md")]
mod readme {}

/// The examples server as a child process, for tests that kill it or read its log.
pub mod child {
    use std::net::SocketAddr;
    use std::process::Stdio;
    use std::sync::{Arc, Mutex};

    use tokio::io::{AsyncBufReadExt, BufReader};
    use tokio::process::{Child, Command};

    use crate::Endpoint;

    /// The examples server running as a child process on a free port, logging at `info`.
    pub struct ChildServer {
        /// The process.
        pub child: Child,
        /// Where it listens.
        pub addr: SocketAddr,
        log: Arc<Mutex<Vec<String>>>,
    }

    impl ChildServer {
        /// Starts the server on `data_dir` and waits until it listens. `binary` is the
        /// `examples-server` of this package: `env!("CARGO_BIN_EXE_examples-server")`, which
        /// cargo sets for integration tests only.
        pub async fn start(binary: &str, data_dir: &std::path::Path) -> Self {
            Self::start_with(Command::new(binary), data_dir).await
        }

        /// [`start`](Self::start) with at most `open_files` file descriptors (the shell's
        /// `ulimit -n`) and more arguments.
        pub async fn start_limited(
            binary: &str,
            data_dir: &std::path::Path,
            open_files: u32,
            args: &[&str],
        ) -> Self {
            let mut command = Command::new("sh");
            command.args(["-c", "ulimit -n \"$0\" && exec \"$@\""]);
            command.arg(open_files.to_string()).arg(binary).args(args);
            Self::start_with(command, data_dir).await
        }

        /// [`start`](Self::start) pinned to one core (`taskset`, from util-linux): the server
        /// then runs tokio's single-threaded scheduler.
        pub async fn start_on_one_core(binary: &str, data_dir: &std::path::Path) -> Self {
            let mut command = Command::new("taskset");
            command.args(["-c", "0"]).arg(binary);
            Self::start_with(command, data_dir).await
        }

        /// [`start`](Self::start) with more arguments (`--cluster-url` and the like).
        pub async fn start_args(binary: &str, data_dir: &std::path::Path, args: &[&str]) -> Self {
            let mut command = Command::new(binary);
            command.args(args);
            Self::start_with(command, data_dir).await
        }

        async fn start_with(mut command: Command, data_dir: &std::path::Path) -> Self {
            let mut child = command
                .args(["--addr", "127.0.0.1:0", "--data-dir"])
                .arg(data_dir)
                .env("RUST_LOG", "info")
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .expect("the examples server starts");
            let stdout = child.stdout.take().expect("piped");
            let mut lines = BufReader::new(stdout).lines();
            let addr = crate::first_line(&mut lines, "the server listening", |line| {
                let rest = line.split("examples on http://").nth(1)?;
                rest.split_whitespace().next()?.parse().ok()
            })
            .await;
            // Keep draining the log, so the child never blocks on a full pipe, and keep it.
            let log = Arc::new(Mutex::new(Vec::new()));
            let kept = log.clone();
            tokio::spawn(async move {
                while let Ok(Some(line)) = lines.next_line().await {
                    kept.lock().expect("the log").push(line);
                }
            });
            Self { child, addr, log }
        }

        /// How to reach it.
        pub fn server(&self) -> Endpoint {
            Endpoint { addr: self.addr }
        }

        /// What it has logged since it started listening, a line each.
        pub fn log(&self) -> Vec<String> {
            self.log.lock().expect("the log").clone()
        }

        /// Kills it with SIGKILL.
        pub async fn kill(mut self) {
            self.child.kill().await.expect("SIGKILL");
        }
    }
}
