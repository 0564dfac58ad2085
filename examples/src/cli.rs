//! The examples server's command line: every reference agent on one address.
//!
//! `cargo run --release -p agents-examples -- --addr 127.0.0.1:8787 --data-dir ./.agents-data`

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

const USAGE: &str = "\
usage: agents-examples [--addr HOST:PORT] [--data-dir DIR] [--hibernate-after DURATION]
                      [--max-connections N] [--storage-timeout DURATION]
                      [--max-unfinished-input BYTES] [--message-timeout DURATION]
                      [--request-head-timeout DURATION] [--max-open-databases N]
                      [--max-sql-database-size BYTES]
                      [--cluster-url URL [--node-addr HOST:PORT] [--node-id ID]
                       [--cluster-lease DURATION]]
       agents-examples typescript FILE    (FILE `-` writes to standard output)

  --addr HOST:PORT              address to listen on (default 127.0.0.1:8787)
  --data-dir DIR                where agents keep their data (default ./.agents-data)
  --hibernate-after DURATION    idle time before an instance leaves memory, like 10s or
                                500ms (default 10s)
  --max-connections N           most WebSockets open at once; more get 503 (default: the
                                open-file limit less a tenth of it)
  --storage-timeout DURATION    how long flushes may fail (a full disk) before the
                                writes they hold are given up: their answers become
                                errors and their agents restart (default 5s)
  --max-unfinished-input BYTES  what unfinished WebSocket messages may hold together,
                                like 256MiB; over it a socket closes with 1013
                                (default 256MiB)
  --message-timeout DURATION    how long a WebSocket message may take to arrive; past
                                it the socket closes with 1008 (default 30s)
  --request-head-timeout DURATION
                                how long an HTTP request head may take to arrive; past
                                it the connection closes (default 10s)
  --max-open-databases N        most SQL databases open at once, three file
                                descriptors each (default 256)
  --max-sql-database-size BYTES largest SQL database of one instance, like 1GiB
                                (default 10 GB)
  --cluster-url URL             run as a node of a cluster on PostgreSQL, like
                                postgres://agents@db:5432/agents: agents and their data
                                live there, and clients may connect to any node
  --node-addr HOST:PORT         the address other nodes reach this one on (default
                                --addr)
  --node-id ID                  this node's id, unique in the cluster (default: made up)
  --cluster-lease DURATION      how long a node's lease holds: the longest its agents wait
                                for another node when it dies (default 10s)
  -h, --help                    this text

SIGINT or SIGTERM shuts down gracefully: sockets close with 1001, the store is flushed.";

struct Options {
    addr: SocketAddr,
    data_dir: PathBuf,
    hibernate_after: Duration,
    max_connections: Option<usize>,
    storage_timeout: Duration,
    max_unfinished_input: Option<usize>,
    message_timeout: Option<Duration>,
    request_head_timeout: Option<Duration>,
    max_open_databases: Option<usize>,
    max_sql_database_size: Option<usize>,
    cluster: Option<agents_runtime::cluster::ClusterConfig>,
    node_addr: Option<String>,
    node_id: Option<String>,
    cluster_lease: Option<Duration>,
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<Option<Options>, String> {
    let mut options = Options {
        addr: SocketAddr::from(([127, 0, 0, 1], 8787)),
        data_dir: PathBuf::from("./.agents-data"),
        hibernate_after: Duration::from_secs(10),
        max_connections: None,
        storage_timeout: Duration::from_secs(5),
        max_unfinished_input: None,
        message_timeout: None,
        request_head_timeout: None,
        max_open_databases: None,
        max_sql_database_size: None,
        cluster: None,
        node_addr: None,
        node_id: None,
        cluster_lease: None,
    };
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => {
                (flag.to_owned(), Some(value.to_owned()))
            }
            _ => (arg, None),
        };
        let mut value = |flag: &str| {
            inline.clone().or_else(|| args.next()).ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(None),
            "--addr" => {
                let addr = value("--addr")?;
                options.addr = addr.parse().map_err(|_| {
                    format!("--addr: `{addr}` is not an address like 127.0.0.1:8787")
                })?;
            }
            "--data-dir" => options.data_dir = PathBuf::from(value("--data-dir")?),
            "--hibernate-after" => {
                let text = value("--hibernate-after")?;
                options.hibernate_after = parse_duration(&text)
                    .map_err(|why| format!("--hibernate-after: `{text}` {why}"))?;
            }
            "--max-connections" => {
                let text = value("--max-connections")?;
                let max = text.parse().ok().filter(|&max: &usize| max > 0);
                let max =
                    max.ok_or(format!("--max-connections: `{text}` is not a count above 0"))?;
                options.max_connections = Some(max);
            }
            "--storage-timeout" => {
                options.storage_timeout = duration_flag(&flag, &value(&flag)?)?;
            }
            "--max-unfinished-input" => {
                let text = value(&flag)?;
                let bytes = parse_bytes(&text).map_err(|why| format!("{flag}: `{text}` {why}"))?;
                options.max_unfinished_input = Some(bytes);
            }
            "--message-timeout" => {
                options.message_timeout = Some(duration_flag(&flag, &value(&flag)?)?);
            }
            "--request-head-timeout" => {
                options.request_head_timeout = Some(duration_flag(&flag, &value(&flag)?)?);
            }
            "--max-open-databases" => {
                let text = value(&flag)?;
                let max = text.parse().ok().filter(|&max: &usize| max > 0);
                options.max_open_databases =
                    Some(max.ok_or(format!("{flag}: `{text}` is not a count above 0"))?);
            }
            "--max-sql-database-size" => {
                let text = value(&flag)?;
                let bytes = parse_bytes(&text).map_err(|why| format!("{flag}: `{text}` {why}"))?;
                options.max_sql_database_size = Some(bytes);
            }
            "--cluster-url" => {
                let url = value(&flag)?;
                if !url.starts_with("postgres://") && !url.starts_with("postgresql://") {
                    return Err(format!(
                        "{flag}: `{url}` is not a URL like postgres://USER@HOST:PORT/DB"
                    ));
                }
                options.cluster = Some(agents_runtime::cluster::ClusterConfig::new(url));
            }
            "--node-addr" => {
                let addr = value(&flag)?;
                let port = addr.rsplit_once(':').and_then(|(host, port)| {
                    (!host.is_empty()).then(|| port.parse::<u16>().ok()).flatten()
                });
                if port.is_none() {
                    return Err(format!("{flag}: `{addr}` is not an address like 10.0.0.5:8787"));
                }
                options.node_addr = Some(addr);
            }
            "--node-id" => options.node_id = Some(value(&flag)?),
            "--cluster-lease" => {
                let lease = duration_flag(&flag, &value(&flag)?)?;
                if lease < Duration::from_millis(300) {
                    return Err(format!(
                        "{flag}: a lease shorter than 300ms cannot be renewed in time"
                    ));
                }
                options.cluster_lease = Some(lease);
            }
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    match &mut options.cluster {
        Some(config) => {
            config.node_addr = options.node_addr.take();
            config.node_id = options.node_id.take();
            config.lease = options.cluster_lease.take().unwrap_or(config.lease);
        }
        None if options.node_addr.is_some()
            || options.node_id.is_some()
            || options.cluster_lease.is_some() =>
        {
            return Err("--node-addr, --node-id and --cluster-lease need --cluster-url".into());
        }
        None => {}
    }
    Ok(Some(options))
}

/// The duration given to `flag`, or the error that says what is wrong with it.
fn duration_flag(flag: &str, text: &str) -> Result<Duration, String> {
    parse_duration(text).map_err(|why| format!("{flag}: `{text}` {why}"))
}

/// `1048576`, `64KiB`, `256MiB`, `1GiB`: a whole number of bytes, above zero.
fn parse_bytes(text: &str) -> Result<usize, &'static str> {
    const WHAT: &str = "is not a size like 256MiB (units: KiB, MiB, GiB, or none for bytes)";
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: usize = number.parse().map_err(|_| WHAT)?;
    let shift = match unit {
        "" => 0,
        "KiB" => 10,
        "MiB" => 20,
        "GiB" => 30,
        _ => return Err(WHAT),
    };
    let bytes = number.checked_mul(1 << shift).ok_or("is too large")?;
    if bytes == 0 {
        return Err("must be more than zero");
    }
    Ok(bytes)
}

/// `10s`, `500ms`, `2m`, `1h`: a whole number and a unit.
fn parse_duration(text: &str) -> Result<Duration, &'static str> {
    const WHAT: &str = "is not a duration like 10s or 500ms (units: ms, s, m, h)";
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or(WHAT)?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| WHAT)?;
    let per_unit_ms: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(WHAT),
    };
    let ms = number.checked_mul(per_unit_ms).ok_or("is too long")?;
    if ms == 0 {
        return Err("must be more than zero");
    }
    Ok(Duration::from_millis(ms))
}

/// `typescript FILE`: the TypeScript declarations of the agents for the official client.
fn write_typescript(target: &str) -> ExitCode {
    let declarations = agents_runtime::typescript::render_all();
    let written = match target {
        "-" => std::io::Write::write_all(&mut std::io::stdout(), declarations.as_bytes()),
        path => std::fs::write(path, declarations),
    };
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: cannot write {target}: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the command line `args` (without the program name): the examples server, or
/// `typescript FILE`. The server shuts down gracefully on SIGINT or SIGTERM.
pub async fn run(args: impl Iterator<Item = String>) -> ExitCode {
    let mut args = args.peekable();
    if args.peek().map(String::as_str) == Some("typescript") {
        return match (args.nth(1), args.next()) {
            (Some(target), None) => write_typescript(&target),
            _ => {
                eprintln!("error: typescript takes one FILE\n\n{USAGE}");
                ExitCode::from(2)
            }
        };
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .try_init()
        .ok();
    let options = match parse(args) {
        Ok(Some(options)) => options,
        Ok(None) => {
            // A reader that stopped early (`--help | head`) is not an error of the help.
            let _ = writeln!(std::io::stdout(), "{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(error) => {
            eprintln!("error: {error}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    // Before the server is bound: a SIGTERM from then on shuts it down gracefully.
    let shutdown = agents_runtime::shutdown_signal();
    let mut builder = crate::server()
        .data_dir(&options.data_dir)
        .hibernate_after(options.hibernate_after)
        .storage_timeout(options.storage_timeout);
    if let Some(max) = options.max_connections {
        builder = builder.max_connections(max);
    }
    if let Some(bytes) = options.max_unfinished_input {
        builder = builder.max_unfinished_input(bytes);
    }
    if let Some(timeout) = options.message_timeout {
        builder = builder.message_timeout(timeout);
    }
    if let Some(timeout) = options.request_head_timeout {
        builder = builder.request_head_timeout(timeout);
    }
    if let Some(max) = options.max_open_databases {
        builder = builder.max_open_databases(max);
    }
    if let Some(bytes) = options.max_sql_database_size {
        builder = builder.max_sql_database_size(bytes as u64);
    }
    let cluster = options.cluster.is_some();
    // ANCHOR: cluster
    // `--cluster-url`, `--node-addr`, `--node-id` and `--cluster-lease` fill a `ClusterConfig`:
    // `ClusterConfig::new(url)`, then its `node_addr`, `node_id` and `lease` fields.
    if let Some(config) = options.cluster {
        builder = builder.cluster(config);
    }
    // ANCHOR_END: cluster
    let server = match builder.bind(options.addr).await {
        Ok(server) => server,
        Err(error) => {
            eprintln!("error: cannot start the server on {}: {error}", options.addr);
            return ExitCode::FAILURE;
        }
    };
    let addr = server.local_addr();
    match cluster {
        true => tracing::info!(
            "agents-rs examples on http://{addr} (a cluster node: data in PostgreSQL)"
        ),
        false => tracing::info!(
            "agents-rs examples on http://{addr} (data in {})",
            options.data_dir.display()
        ),
    }
    tracing::info!("  open http://{addr}/ in a browser for the demo page");
    for agent in server.agents() {
        tracing::info!("  ws://{addr}/agents/{agent}/{{name}}");
    }
    match server.run_until(shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{parse, parse_bytes, parse_duration};

    fn args(list: &[&str]) -> impl Iterator<Item = String> {
        list.iter().map(|s| s.to_string()).collect::<Vec<_>>().into_iter()
    }

    #[test]
    fn the_systemd_unit_passes_valid_flags() {
        let unit = include_str!("../deploy/agents-examples.service");
        let exec = unit.lines().find_map(|l| l.strip_prefix("ExecStart=")).expect("ExecStart");
        let mut words = exec.split_whitespace().map(String::from);
        assert_eq!(words.next().as_deref(), Some("/usr/local/bin/agents-examples"));
        let options = parse(words).expect("valid flags").expect("not help");
        assert_eq!(options.data_dir.to_str(), Some("/var/lib/agents-examples"));
        assert_eq!(options.addr.to_string(), "127.0.0.1:8787", "behind the reverse proxy");
    }

    #[test]
    fn the_cluster_unit_passes_valid_flags() {
        let unit = include_str!("../deploy/cluster/agents-node@.service");
        let exec = unit.lines().find_map(|l| l.strip_prefix("ExecStart=")).expect("ExecStart");
        // systemd fills in the environment file's values and the instance name.
        let exec = exec
            .replace("${NODE_ADDR}", "10.0.0.5:8787")
            .replace("${CLUSTER_URL}", "postgres://agents:pw@db.internal:5432/agents")
            .replace("%i", "a");
        let mut words = exec.split_whitespace().map(String::from);
        assert_eq!(words.next().as_deref(), Some("/usr/local/bin/agents-examples"));
        let options = parse(words).expect("valid flags").expect("not help");
        let cluster = options.cluster.expect("a cluster node");
        assert_eq!(cluster.node_id.as_deref(), Some("a"));
        assert_eq!(cluster.node_addr.as_deref(), Some("10.0.0.5:8787"));
        assert_eq!(cluster.lease, Duration::from_secs(10));
    }

    #[test]
    fn cluster_flags_are_checked() {
        let options = parse(args(&["--cluster-url", "postgres://u@h/db", "--cluster-lease", "2s"]))
            .expect("valid")
            .expect("not help");
        let cluster = options.cluster.expect("a cluster node");
        assert_eq!(
            (cluster.lease, cluster.node_id, cluster.node_addr),
            (Duration::from_secs(2), None, None)
        );
        let err = |list: &[&str]| parse(args(list)).err().expect("an error");
        assert!(err(&["--cluster-url", "mysql://x"]).contains("not a URL like postgres://"));
        assert!(err(&["--node-id", "a"]).contains("need --cluster-url"));
        assert!(err(&["--node-addr", "h:1"]).contains("need --cluster-url"));
        let url = "postgres://u@h/db";
        assert!(err(&["--cluster-url", url, "--node-addr", "nohost"]).contains("not an address"));
        assert!(err(&["--cluster-url", url, "--node-addr", ":80"]).contains("not an address"));
        assert!(
            err(&["--cluster-url", url, "--cluster-lease", "100ms"]).contains("shorter than 300ms")
        );
        assert!(err(&["--cluster-url"]).contains("needs a value"));
    }

    #[test]
    fn defaults_and_flags() {
        let options = parse(args(&[])).expect("valid").expect("not help");
        assert_eq!(options.addr.to_string(), "127.0.0.1:8787");
        let options = parse(args(&["--addr", "127.0.0.1:9000", "--data-dir=/tmp/x"]))
            .expect("valid")
            .expect("not help");
        assert_eq!(options.addr.to_string(), "127.0.0.1:9000");
        assert_eq!(options.data_dir.to_str(), Some("/tmp/x"));
        assert!(parse(args(&["--help"])).expect("valid").is_none());
        assert_eq!(options.max_connections, None);
        let options = parse(args(&["--max-connections", "50"])).expect("valid").expect("not help");
        assert_eq!(options.max_connections, Some(50));
        let flags = ["--max-open-databases", "64", "--max-sql-database-size=1MiB"];
        let options = parse(args(&flags)).expect("valid").expect("not help");
        assert_eq!(options.max_open_databases, Some(64));
        assert_eq!(options.max_sql_database_size, Some(1 << 20));
        for bad in ["0", "-1", "many"] {
            let err = parse(args(&["--max-open-databases", bad])).err().expect("an error");
            assert_eq!(err, format!("--max-open-databases: `{bad}` is not a count above 0"));
        }
        let err = parse(args(&["--max-sql-database-size", "big"])).err().expect("an error");
        assert!(err.starts_with("--max-sql-database-size: `big` is not a size"), "{err}");
    }

    #[test]
    fn bad_arguments_are_errors() {
        assert_eq!(parse(args(&["--addr"])).err().as_deref(), Some("--addr needs a value"));
        assert!(parse(args(&["--addr", "nope"])).err().is_some_and(|e| e.contains("`nope`")));
        assert_eq!(
            parse(args(&["--port", "1"])).err().as_deref(),
            Some("unknown argument `--port`")
        );
        for bad in ["0", "-1", "many", ""] {
            let err = parse(args(&["--max-connections", bad])).err().expect("an error");
            assert_eq!(err, format!("--max-connections: `{bad}` is not a count above 0"));
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        for bad in ["", "10", "s", "1.5s", "-1s", "10 s", "10sec", "ten s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_duration("0s"), Err("must be more than zero"));
        assert_eq!(parse_duration("99999999999999999h"), Err("is too long"));
        let options =
            parse(args(&["--hibernate-after", "250ms"])).expect("valid").expect("not help");
        assert_eq!(options.hibernate_after, Duration::from_millis(250));
        let err = parse(args(&["--hibernate-after=soon"])).err().expect("an error");
        assert!(err.starts_with("--hibernate-after: `soon` is not a duration"), "{err}");
        assert_eq!(options.storage_timeout, Duration::from_secs(5));
        let options = parse(args(&["--storage-timeout", "2s"])).expect("valid").expect("not help");
        assert_eq!(options.storage_timeout, Duration::from_secs(2));
        let err = parse(args(&["--storage-timeout", "0s"])).err().expect("an error");
        assert_eq!(err, "--storage-timeout: `0s` must be more than zero");
        let flags = ["--message-timeout", "3s", "--request-head-timeout=2s"];
        let options = parse(args(&flags)).expect("valid").expect("not help");
        assert_eq!(options.message_timeout, Some(Duration::from_secs(3)));
        assert_eq!(options.request_head_timeout, Some(Duration::from_secs(2)));
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("1048576"), Ok(1 << 20));
        assert_eq!(parse_bytes("64KiB"), Ok(64 << 10));
        assert_eq!(parse_bytes("256MiB"), Ok(256 << 20));
        assert_eq!(parse_bytes("1GiB"), Ok(1 << 30));
        for bad in ["", "MiB", "1.5MiB", "-1", "1 MiB", "1mb", "1M"] {
            assert!(parse_bytes(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_bytes("0KiB"), Err("must be more than zero"));
        assert_eq!(
            parse_bytes("99999999999999999999GiB"),
            Err("is not a size like 256MiB (units: KiB, MiB, GiB, or none for bytes)")
        );
        let options =
            parse(args(&["--max-unfinished-input", "64MiB"])).expect("valid").expect("not help");
        assert_eq!(options.max_unfinished_input, Some(64 << 20));
        let err = parse(args(&["--max-unfinished-input", "lots"])).err().expect("an error");
        assert!(err.starts_with("--max-unfinished-input: `lots` is not a size"), "{err}");
    }
}
