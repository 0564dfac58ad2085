//! [`Postgres`]: a PostgreSQL server of a test's own, for agents in cluster mode.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::temp_dir::TempDir;

/// A PostgreSQL server of a test's own, stopped and removed on drop.
///
/// It runs the programs of Debian's `postgresql` package (the newest version under
/// `/usr/lib/postgresql`, else `initdb` and `pg_ctl` on the `PATH`): `initdb` into a temporary
/// directory, `pg_ctl start` on a free port of 127.0.0.1 with its socket in that directory,
/// `fsync` off (the tests kill nodes, not PostgreSQL). PostgreSQL refuses to run as root, so
/// under root it runs as the user `postgres` (else `nobody`) through `runuser`.
///
/// ```no_run
/// # fn main() -> Result<(), String> {
/// let postgres = agents_runtime::testing::Postgres::start()?;
/// let url = postgres.database(); // postgres://postgres@127.0.0.1:PORT/test0
/// # Ok(()) }
/// ```
pub struct Postgres {
    bin: PathBuf,
    dir: TempDir,
    port: u16,
    /// `runuser -u USER --` when the tests run as root, else nothing.
    run_as: Vec<String>,
    next_db: std::sync::atomic::AtomicUsize,
}

impl Postgres {
    /// Starts a fresh server; `Err` says why it cannot (PostgreSQL is not installed). A
    /// server that is installed but fails to start fails the test.
    pub fn start() -> Result<Self, String> {
        let bin = binaries().ok_or_else(|| {
            "PostgreSQL is not installed (Debian: apt-get install postgresql)".to_owned()
        })?;
        let dir = TempDir::new("postgres");
        let run_as = match is_root() {
            true => {
                let user = if user_exists("postgres") { "postgres" } else { "nobody" };
                chown_to(dir.path(), user);
                vec!["runuser".to_owned(), "-u".to_owned(), user.to_owned(), "--".to_owned()]
            }
            false => Vec::new(),
        };
        let server = Self {
            bin,
            dir,
            port: free_port(),
            run_as,
            next_db: std::sync::atomic::AtomicUsize::new(0),
        };
        let data = server.data();
        server.run(
            "initdb",
            &[
                "-D",
                data.to_str().expect("a UTF-8 temporary path"),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        server.pg_ctl_start();
        Ok(server)
    }

    /// The port it listens on, on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A URL of database `db` as user `postgres`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Creates a fresh database and returns its URL.
    pub fn database(&self) -> String {
        let n = self.next_db.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("test{n}");
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        self.url(&name)
    }

    /// Runs `sql` in database `db` with `psql`, failing the test if it fails; its output.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let port = self.port.to_string();
        let host = self.dir.path().to_str().expect("a UTF-8 temporary path").to_owned();
        let output = self.run(
            "psql",
            &[
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                &host,
                "-p",
                &port,
                "-U",
                "postgres",
                "-d",
                db,
                "-c",
                sql,
            ],
        );
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    /// Stops the server (fast shutdown: open sessions are ended), keeping its data.
    pub fn stop(&self) {
        let data = self.data();
        self.run("pg_ctl", &["stop", "-D", data.to_str().expect("UTF-8"), "-m", "fast", "-w"]);
    }

    /// Starts it again after [`stop`](Self::stop), on the same port.
    pub fn restart(&self) {
        self.pg_ctl_start();
    }

    fn pg_ctl_start(&self) {
        let data = self.data();
        let log = self.dir.path().join("server.log");
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=off -c max_connections=200",
            self.port,
            self.dir.path().display()
        );
        let output = self.try_run(
            "pg_ctl",
            &[
                "start",
                "-D",
                data.to_str().expect("UTF-8"),
                "-l",
                log.to_str().expect("UTF-8"),
                "-w",
                "-o",
                &options,
            ],
        );
        assert!(
            output.status.success(),
            "pg_ctl start failed: {}\n{}",
            describe(&output),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn run(&self, tool: &str, args: &[&str]) -> Output {
        let output = self.try_run(tool, args);
        assert!(output.status.success(), "{tool} failed: {}", describe(&output));
        output
    }

    fn try_run(&self, tool: &str, args: &[&str]) -> Output {
        let program = self.bin.join(tool);
        let mut command = match self.run_as.split_first() {
            Some((first, rest)) => {
                let mut command = Command::new(first);
                command.args(rest).arg(&program);
                command
            }
            None => Command::new(&program),
        };
        command.args(args).current_dir(self.dir.path());
        command.output().unwrap_or_else(|e| panic!("runs {}: {e}", program.display()))
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.data();
        let _ =
            self.try_run("pg_ctl", &["stop", "-D", data.to_str().unwrap_or(""), "-m", "immediate"]);
    }
}

/// The directory of Debian's PostgreSQL programs (the newest installed version), or of the
/// ones on the `PATH`.
fn binaries() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .find(|dir| dir.join("initdb").exists() && dir.join("pg_ctl").exists())
}

fn describe(output: &Output) -> String {
    format!(
        "{}\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

fn user_exists(user: &str) -> bool {
    Command::new("id").arg("-u").arg(user).output().is_ok_and(|o| o.status.success())
}

fn chown_to(dir: &Path, user: &str) {
    let status = Command::new("chown")
        .arg(user)
        .arg(dir)
        .status()
        .unwrap_or_else(|e| panic!("runs chown: {e}"));
    assert!(status.success(), "chown {user} {} failed", dir.display());
}

/// A port of 127.0.0.1 free a moment ago.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binds an ephemeral port");
    listener.local_addr().expect("a bound address").port()
}
