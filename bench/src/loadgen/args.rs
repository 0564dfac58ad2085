//! The command line: `--flag value` pairs, each checked when read.

use std::collections::HashMap;
use std::time::Duration;

use crate::client::Target;

/// Flags as given; typed access checks them.
pub(crate) struct Args {
    flags: HashMap<String, String>,
}

impl Args {
    pub(crate) fn parse(mut argv: impl Iterator<Item = String>) -> Result<Self, String> {
        let mut flags = HashMap::new();
        while let Some(flag) = argv.next() {
            let Some(name) = flag.strip_prefix("--") else {
                return Err(format!("expected a --flag, got `{flag}`"));
            };
            let value = argv.next().ok_or_else(|| format!("--{name} needs a value"))?;
            if flags.insert(name.to_owned(), value).is_some() {
                return Err(format!("--{name} is given twice"));
            }
        }
        Ok(Self { flags })
    }

    pub(crate) fn target(&self) -> Result<Target, String> {
        let urls = self.flags.get("url").ok_or("--url is required")?;
        Target::parse(urls.split(',').next().unwrap_or(urls))
    }

    /// Every server of `--url`, a comma-separated list (the nodes of a cluster); sockets
    /// spread over them in turn.
    pub(crate) fn targets(&self) -> Result<Vec<Target>, String> {
        let urls = self.flags.get("url").ok_or("--url is required")?;
        urls.split(',').map(Target::parse).collect()
    }

    /// A count flag: a positive integer (`_` separators allowed), or `default`.
    pub(crate) fn count(&self, name: &str, default: usize) -> Result<usize, String> {
        match self.flags.get(name) {
            None => Ok(default),
            Some(text) => match text.replace('_', "").parse::<usize>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(format!("--{name}: `{text}` is not a positive integer")),
            },
        }
    }

    /// A duration flag like `4s`, `500ms` or `0s`.
    pub(crate) fn duration(&self, name: &str, default: Duration) -> Result<Duration, String> {
        let Some(text) = self.flags.get(name) else { return Ok(default) };
        let parsed = if let Some(ms) = text.strip_suffix("ms") {
            ms.parse::<u64>().ok().map(Duration::from_millis)
        } else if let Some(s) = text.strip_suffix('s') {
            s.parse::<f64>()
                .ok()
                .filter(|s| s.is_finite() && *s >= 0.0)
                .map(Duration::from_secs_f64)
        } else {
            None
        };
        parsed.ok_or_else(|| format!("--{name}: `{text}` is not a duration like 4s or 500ms"))
    }

    pub(crate) fn server_pid(&self) -> Result<Option<u32>, String> {
        Ok(self.server_pids()?.first().copied())
    }

    /// `--server-pid`, a comma-separated list (the nodes of a cluster, whose CPU time adds up).
    pub(crate) fn server_pids(&self) -> Result<Vec<u32>, String> {
        let Some(pids) = self.flags.get("server-pid") else { return Ok(Vec::new()) };
        pids.split(',')
            .map(|pid| pid.parse().map_err(|_| format!("--server-pid: `{pid}` is not a pid")))
            .collect()
    }

    pub(crate) fn text(&self, name: &str) -> Option<&str> {
        self.flags.get(name).map(String::as_str)
    }
}

impl Args {
    /// Refuses flags the mode does not know (a typo would otherwise be ignored silently).
    pub(crate) fn only(&self, known: &[&str]) -> Result<(), String> {
        const COMMON: [&str; 4] = ["url", "server-pid", "stats-url", "timeout"];
        match self
            .flags
            .keys()
            .find(|flag| !known.contains(&flag.as_str()) && !COMMON.contains(&flag.as_str()))
        {
            Some(flag) => Err(format!("--{flag} is not a flag of this mode")),
            None => Ok(()),
        }
    }
}
