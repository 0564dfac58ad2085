//! The examples server: every reference agent on one address.
//!
//! `cargo run --release -p agents-examples -- --addr 127.0.0.1:8787 --data-dir ./.agents-data`

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "\
usage: agents-examples [--addr HOST:PORT] [--data-dir DIR]
       agents-examples typescript FILE    (FILE `-` writes to standard output)

  --addr HOST:PORT   address to listen on (default 127.0.0.1:8787)
  --data-dir DIR     where agents keep their data (default ./.agents-data)
  -h, --help         this text";

struct Options {
    addr: SocketAddr,
    data_dir: PathBuf,
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<Option<Options>, String> {
    let mut options = Options {
        addr: SocketAddr::from(([127, 0, 0, 1], 8787)),
        data_dir: PathBuf::from("./.agents-data"),
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
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    Ok(Some(options))
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

#[tokio::main]
async fn main() -> ExitCode {
    let mut args = std::env::args().skip(1).peekable();
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
        .init();
    let options = match parse(args) {
        Ok(Some(options)) => options,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(error) => {
            eprintln!("error: {error}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let server =
        match agents_examples::server().data_dir(&options.data_dir).bind(options.addr).await {
            Ok(server) => server,
            Err(error) => {
                eprintln!("error: cannot start the server on {}: {error}", options.addr);
                return ExitCode::FAILURE;
            }
        };
    let addr = server.local_addr();
    tracing::info!("agents-rs examples on http://{addr} (data in {})", options.data_dir.display());
    for agent in server.agents() {
        tracing::info!("  ws://{addr}/agents/{agent}/{{name}}");
    }
    match server.run_until(shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Ctrl-C, or SIGTERM on Unix.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    tracing::info!("shutting down");
}

#[cfg(test)]
mod tests {
    use super::parse;

    fn args(list: &[&str]) -> impl Iterator<Item = String> {
        list.iter().map(|s| s.to_string()).collect::<Vec<_>>().into_iter()
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
    }

    #[test]
    fn bad_arguments_are_errors() {
        assert_eq!(parse(args(&["--addr"])).err().as_deref(), Some("--addr needs a value"));
        assert!(parse(args(&["--addr", "nope"])).err().is_some_and(|e| e.contains("`nope`")));
        assert_eq!(
            parse(args(&["--port", "1"])).err().as_deref(),
            Some("unknown argument `--port`")
        );
    }
}
