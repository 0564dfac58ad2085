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

    /// User plus system CPU seconds the server has used, all threads.
    pub(crate) fn cpu_seconds(&self) -> Result<Option<f64>, String> {
        let Some(pid) = self.pid else { return Ok(None) };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map_err(|e| format!("reading /proc/{pid}/stat: {e}"))?;
        // The command name may hold spaces; fields are counted after its closing parenthesis.
        let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or_default();
        let fields: Vec<&str> = after.split_whitespace().collect();
        let tick = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
        match (tick(11), tick(12)) {
            (Some(user), Some(system)) => Ok(Some((user + system) as f64 / TICKS_PER_SECOND)),
            _ => Err(format!("/proc/{pid}/stat has no utime and stime")),
        }
    }

    /// CPU seconds used since a [`cpu_seconds`](Self::cpu_seconds) reading of `before`.
    pub(crate) fn cpu_since(&self, before: Option<f64>) -> Result<Option<f64>, String> {
        Ok(before.zip(self.cpu_seconds()?).map(|(before, after)| after - before))
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
