//! What the generator reads of the server: CPU time and RSS from `/proc/PID`, and our
//! `bench-server`'s gauges over HTTP.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Clock ticks per second of `/proc/PID/stat` (`getconf CLK_TCK`; 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// The server process, if the generator was told its pid.
#[derive(Clone, Copy)]
pub(crate) struct Server {
    pid: Option<u32>,
}

impl Server {
    pub(crate) fn new(pid: Option<u32>) -> Self {
        Self { pid }
    }

    /// What the server has used so far, all threads.
    pub(crate) fn usage(&self) -> Result<Option<Usage>, String> {
        let Some(pid) = self.pid else { return Ok(None) };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map_err(|e| format!("reading /proc/{pid}/stat: {e}"))?;
        // The command name may hold spaces; fields are counted after its closing parenthesis.
        let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or_default();
        let fields: Vec<&str> = after.split_whitespace().collect();
        let field = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
        match (field(7), field(11), field(12)) {
            (Some(minor_faults), Some(user), Some(system)) => Ok(Some(Usage {
                user_s: user as f64 / TICKS_PER_SECOND,
                system_s: system as f64 / TICKS_PER_SECOND,
                minor_faults,
            })),
            _ => Err(format!("/proc/{pid}/stat has no minflt, utime and stime")),
        }
    }

    /// What the server has used since a [`usage`](Self::usage) reading of `before`.
    pub(crate) fn usage_since(&self, before: Option<Usage>) -> Result<Option<Usage>, String> {
        Ok(before.zip(self.usage()?).map(|(before, after)| Usage {
            user_s: after.user_s - before.user_s,
            system_s: after.system_s - before.system_s,
            minor_faults: after.minor_faults.saturating_sub(before.minor_faults),
        }))
    }

    /// The server's resident set size, in bytes.
    pub(crate) fn rss_bytes(&self) -> Result<Option<u64>, String> {
        let Some(pid) = self.pid else { return Ok(None) };
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .map_err(|e| format!("reading /proc/{pid}/status: {e}"))?;
        let kib = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.trim().strip_suffix("kB"))
            .and_then(|kib| kib.trim().parse::<u64>().ok())
            .ok_or_else(|| format!("/proc/{pid}/status has no VmRSS"))?;
        Ok(Some(kib * 1024))
    }
}

/// CPU time and minor page faults of the server (`/proc/PID/stat`): user space and kernel
/// apart, since two servers making the same system calls differ in user space.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Usage {
    /// CPU seconds in user space.
    pub(crate) user_s: f64,
    /// CPU seconds in the kernel, on the server's behalf (its system calls, and the loopback
    /// receive path its sends run).
    pub(crate) system_s: f64,
    /// Pages first touched (the allocator giving memory back and taking it again shows here).
    pub(crate) minor_faults: u64,
}

impl Usage {
    /// User plus system CPU seconds.
    pub(crate) fn cpu_s(&self) -> f64 {
        self.user_s + self.system_s
    }

    /// Adds `server_cpu_s`, `server_user_s`, `server_system_s` and `server_minor_faults` to
    /// a report (`null` without a server pid).
    pub(crate) fn report(usage: Option<Self>, report: &mut serde_json::Value) {
        report["server_cpu_s"] = serde_json::json!(usage.map(|u| u.cpu_s()));
        report["server_user_s"] = serde_json::json!(usage.map(|u| u.user_s));
        report["server_system_s"] = serde_json::json!(usage.map(|u| u.system_s));
        report["server_minor_faults"] = serde_json::json!(usage.map(|u| u.minor_faults));
    }
}

/// `GET url` (plain `http://HOST:PORT/path`), the body parsed as JSON.
pub(crate) async fn get_json(url: &str) -> Result<serde_json::Value, String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| format!("`{url}` is not http://"))?;
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let exchange = async {
        let mut stream = TcpStream::connect(host).await?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        Ok::<_, std::io::Error>(response)
    };
    let response = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .map_err(|_| format!("GET {url}: no answer in 10 s"))?
        .map_err(|e| format!("GET {url}: {e}"))?;
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response.split_once("\r\n\r\n").ok_or(format!("GET {url}: no body"))?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!("GET {url}: {}", head.lines().next().unwrap_or_default()));
    }
    serde_json::from_str(body).map_err(|e| format!("GET {url}: the body is not JSON: {e}"))
}
