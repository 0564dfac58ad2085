//! What the generator reads of the server: CPU time and RSS from `/proc/PID`, and our
//! `bench-server`'s gauges over HTTP.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Clock ticks per second of `/proc/PID/stat` (`getconf CLK_TCK`; 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// The server processes (one, or the nodes of a cluster), if the generator was told their pids.
#[derive(Clone)]
pub(crate) struct Server {
    pids: Vec<u32>,
}

impl Server {
    pub(crate) fn new(pids: Vec<u32>) -> Self {
        Self { pids }
    }

    /// What the servers have used so far, all threads of all of them.
    pub(crate) fn usage(&self) -> Result<Option<Reading>, String> {
        let mut total: Option<Reading> = None;
        for &pid in &self.pids {
            let reading = Self::usage_of(pid)?;
            total = Some(match total {
                None => reading,
                Some(sum) => Reading {
                    user_ticks: sum.user_ticks + reading.user_ticks,
                    system_ticks: sum.system_ticks + reading.system_ticks,
                    minor_faults: sum.minor_faults + reading.minor_faults,
                    threads: sum.threads.zip(reading.threads).map(|(mut a, b)| {
                        a.extend(b);
                        a
                    }),
                },
            });
        }
        Ok(total)
    }

    fn usage_of(pid: u32) -> Result<Reading, String> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map_err(|e| format!("reading /proc/{pid}/stat: {e}"))?;
        // The command name may hold spaces; fields are counted after its closing parenthesis.
        let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or_default();
        let fields: Vec<&str> = after.split_whitespace().collect();
        let field = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
        match (field(7), field(11), field(12)) {
            (Some(minor_faults), Some(user), Some(system)) => Ok(Reading {
                user_ticks: user,
                system_ticks: system,
                minor_faults,
                threads: thread_times(pid),
            }),
            _ => Err(format!("/proc/{pid}/stat has no minflt, utime and stime")),
        }
    }

    /// What the server has used since the [`usage`](Self::usage) reading `before`.
    pub(crate) fn usage_since(&self, before: Option<Reading>) -> Result<Option<Usage>, String> {
        Ok(before.zip(self.usage()?).map(|(before, after)| {
            let user = after.user_ticks.saturating_sub(before.user_ticks);
            let system = after.system_ticks.saturating_sub(before.system_ticks);
            let ran = before.threads.zip(after.threads).and_then(|(b, a)| ran(&b, &a));
            Usage {
                user_s: user as f64 / TICKS_PER_SECOND,
                system_s: system as f64 / TICKS_PER_SECOND,
                minor_faults: after.minor_faults.saturating_sub(before.minor_faults),
                run_ns: ran.filter(|&ns| agrees(ns, user + system)),
            }
        }))
    }

    /// The servers' resident set size, in bytes, all of them.
    pub(crate) fn rss_bytes(&self) -> Result<Option<u64>, String> {
        let mut total = None;
        for &pid in &self.pids {
            *total.get_or_insert(0) += Self::rss_of(pid)?;
        }
        Ok(total)
    }

    fn rss_of(pid: u32) -> Result<u64, String> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .map_err(|e| format!("reading /proc/{pid}/status: {e}"))?;
        let kib = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.trim().strip_suffix("kB"))
            .and_then(|kib| kib.trim().parse::<u64>().ok())
            .ok_or_else(|| format!("/proc/{pid}/status has no VmRSS"))?;
        Ok(kib * 1024)
    }
}

/// Nanoseconds each of `pid`'s threads has run (`/proc/PID/task/TID/schedstat`, the
/// scheduler's own count), by thread id; `None` where the kernel does not keep it.
fn thread_times(pid: u32) -> Option<BTreeMap<u32, u64>> {
    let mut times = BTreeMap::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let task = task.ok()?;
        let Ok(tid) = task.file_name().to_string_lossy().parse::<u32>() else { continue };
        // A thread that ends between the listing and the read is left out, like one that
        // ended before the listing.
        let Ok(schedstat) = std::fs::read_to_string(task.path().join("schedstat")) else {
            continue;
        };
        times.insert(tid, schedstat.split_whitespace().next()?.parse().ok()?);
    }
    // All zeros: the kernel keeps no scheduler statistics.
    times.values().any(|&ns| ns > 0).then_some(times)
}

/// Nanoseconds the threads ran between two [`thread_times`]; `None` if a thread of `before`
/// is gone from `after` (an ended thread takes its count with it).
fn ran(before: &BTreeMap<u32, u64>, after: &BTreeMap<u32, u64>) -> Option<u64> {
    let mut ns = 0;
    for (tid, &now) in after {
        ns += now.checked_sub(before.get(tid).copied().unwrap_or(0))?;
    }
    before.keys().all(|tid| after.contains_key(tid)).then_some(ns)
}

/// Whether `ns` of run time agrees with `ticks` of it: `/proc/PID/stat` rounds down its user
/// and system figures of the same count, so the two differ by less than two ticks, unless a
/// thread started and ended between the readings (its time is in the ticks only).
fn agrees(ns: u64, ticks: u64) -> bool {
    const NS_PER_TICK: f64 = 1e9 / TICKS_PER_SECOND;
    (ns as f64 - ticks as f64 * NS_PER_TICK).abs() < 2.0 * NS_PER_TICK
}

/// What the server has used so far: a [`Server::usage`] reading, for
/// [`Server::usage_since`].
pub(crate) struct Reading {
    user_ticks: u64,
    system_ticks: u64,
    minor_faults: u64,
    threads: Option<BTreeMap<u32, u64>>,
}

/// CPU time and minor page faults of the server (`/proc/PID/stat`, and the scheduler's count
/// per thread): user space and kernel apart, since two servers making the same system calls
/// differ in user space.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Usage {
    /// CPU seconds in user space.
    pub(crate) user_s: f64,
    /// CPU seconds in the kernel, on the server's behalf (its system calls, and the loopback
    /// receive path its sends run).
    pub(crate) system_s: f64,
    /// Pages first touched (the allocator giving memory back and taking it again shows here).
    pub(crate) minor_faults: u64,
    /// Nanoseconds run, all threads, as the scheduler counts them: exact, where `user_s` and
    /// `system_s` count 10 ms clock ticks. `None` where the kernel keeps no such count, or a
    /// thread ended in between (see `ran` and `agrees`).
    pub(crate) run_ns: Option<u64>,
}

impl Usage {
    /// CPU seconds, user and system: the scheduler's exact count where there is one, else
    /// clock ticks (with which a 1.3 s run moves by up to 0.8% with where the ticks fall).
    pub(crate) fn cpu_s(&self) -> f64 {
        match self.run_ns {
            Some(ns) => ns as f64 / 1e9,
            None => self.user_s + self.system_s,
        }
    }

    /// Adds `server_cpu_s`, `server_user_s`, `server_system_s` and `server_minor_faults` to
    /// a report (`null` without a server pid).
    pub(crate) fn report(usage: Option<Self>, report: &mut serde_json::Value) {
        report["server_cpu_s"] = serde_json::json!(usage.map(|u| u.cpu_s()));
        report["server_cpu_exact"] = serde_json::json!(usage.map(|u| u.run_ns.is_some()));
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::{agrees, ran};

    #[test]
    fn threads_run_time_counts_new_threads_and_refuses_ended_ones() {
        let before = BTreeMap::from([(1, 100), (2, 50)]);
        let after = BTreeMap::from([(1, 180), (2, 50), (3, 7)]);
        assert_eq!(ran(&before, &after), Some(87));
        // Thread 2 ended: its time since `before` is unknown.
        assert_eq!(ran(&before, &BTreeMap::from([(1, 180)])), None);
        // A count going back means a thread id was reused.
        assert_eq!(ran(&before, &BTreeMap::from([(1, 180), (2, 10)])), None);
    }

    #[test]
    fn an_exact_count_is_kept_only_within_two_ticks_of_the_ticks() {
        // 1.234 s against 123 ticks: rounding. Against 120: a thread that came and went.
        assert!(agrees(1_234_000_000, 123));
        assert!(agrees(1_234_000_000, 122));
        assert!(!agrees(1_234_000_000, 120));
        assert!(!agrees(1_234_000_000, 126));
    }
}
