//! The server the benchmarks measure: every reference agent of `agents-examples` (the
//! `ChatRoom` and `Counter` among them), plus `RelaxedCounter`, the same counter without the
//! output gate, and `GET /agents/bench-stats/any` with the server's gauges and group-commit
//! figures as JSON, and `KvCatalog`, `Catalog`'s `put` and `get` on the key-value storage.
//!
//! `bench-server --addr 127.0.0.1:PORT --data-dir DIR [--hibernate-after 2s]
//! [--max-open-databases N]`

use std::process::ExitCode;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use agents_runtime::prelude::*;
use agents_runtime::{ServerHandle, shutdown_signal};
use serde::{Deserialize, Serialize};

/// `Counter`'s state, kept by a counter whose frames do not wait for the disk.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RelaxedCounterState {
    /// How many times `increment` ran.
    pub count: i64,
}

/// `Counter.increment` with `durability = "relaxed"`: the answer goes out as soon as the turn
/// ends, before the write is flushed (Cloudflare's `allowUnconfirmed`).
#[derive(Default)]
pub struct RelaxedCounter;

#[agent(state = RelaxedCounterState, durability = "relaxed", rename_all = "camelCase")]
impl RelaxedCounter {
    /// Adds one through `set_state` and returns the new count.
    #[callable]
    fn increment(&mut self, ctx: &mut Context<Self>) -> Result<i64> {
        let count = ctx.state().count + 1;
        ctx.set_state(RelaxedCounterState { count })?;
        Ok(count)
    }
}

/// `Catalog.put` and `Catalog.get` through the key-value storage instead of SQL: the same
/// calls, for the SQL benchmark to compare with.
#[derive(Default)]
pub struct KvCatalog;

#[agent(rename_all = "camelCase")]
impl KvCatalog {
    /// Sets `key` to `value`; returns 1, as `Catalog.put`.
    #[callable]
    fn put(&mut self, ctx: &mut Context<Self>, key: String, value: String) -> Result<u64> {
        ctx.storage().put(&key, &value)?;
        Ok(1)
    }

    /// The value of `key`, or `null`.
    #[callable]
    fn get(&mut self, ctx: &mut Context<Self>, key: String) -> Result<Option<String>> {
        ctx.storage().get(&key)
    }
}

/// The running server, for [`BenchStats`] to read (set once the server is bound).
#[derive(Clone, Default)]
struct Handle(Arc<OnceLock<ServerHandle>>);

/// `GET /agents/bench-stats/{any}`: open sockets, instances and group-commit figures.
#[derive(Default)]
pub struct BenchStats;

#[agent]
impl BenchStats {
    fn on_request(&mut self, ctx: &mut Context<Self>, _request: Request) -> Result<Response> {
        let handle =
            ctx.env().require::<Handle>()?.0.get().ok_or_else(|| Error::msg("starting"))?;
        let storage = handle.storage_stats();
        let body = serde_json::json!({
            "open_connections": handle.open_connections(),
            "live_instances": handle.live_instances(),
            "hibernated_instances": handle.hibernated_instances(),
            "parked_connections": handle.parked_connections(),
            "durable_writes": storage.durable_writes,
            "flushes": storage.flushes,
            "largest_batch": storage.largest_batch,
        });
        Ok(Response::new(body.to_string().into()))
    }
}

/// The examples server's allocator (see `agents_examples::return_freed_memory`).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

// The benchmarks give the server one core: tokio's single-threaded scheduler is the one for
// that (no work-stealing queues to keep, no timing of each batch of tasks), as an event loop
// is for Bun and Node. In chat 32x32 it measured 1.021 over one worker of the multi-threaded
// scheduler (8 interleaved runs); the other workloads did not move beyond their noise.
#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    agents_examples::return_freed_memory();
    let mut addr = "127.0.0.1:8787".to_owned();
    let mut data_dir = None;
    let mut hibernate_after = Duration::from_secs(10);
    let mut max_open_databases = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next();
        match (flag.as_str(), value) {
            ("--addr", Some(value)) => addr = value,
            ("--data-dir", Some(value)) => data_dir = Some(value),
            ("--hibernate-after", Some(value)) => match value.strip_suffix('s').map(str::parse) {
                Some(Ok(secs)) => hibernate_after = Duration::from_secs_f64(secs),
                _ => return usage(&format!("--hibernate-after: `{value}` is not like 2s")),
            },
            ("--max-open-databases", Some(value)) => match value.parse() {
                Ok(max) => max_open_databases = Some(max),
                Err(_) => return usage(&format!("--max-open-databases: `{value}` is not a count")),
            },
            (flag, _) => return usage(&format!("unknown or incomplete argument `{flag}`")),
        }
    }
    let Some(data_dir) = data_dir else { return usage("--data-dir is required") };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    // Before the server is bound: a SIGTERM from then on shuts it down gracefully.
    let shutdown = shutdown_signal();
    let handle = Handle::default();
    let mut builder = agents_examples::server()
        .agent::<RelaxedCounter>()
        .agent::<KvCatalog>()
        .agent::<BenchStats>()
        .env(handle.clone())
        .data_dir(data_dir)
        .hibernate_after(hibernate_after)
        // Enough for the idle benchmark's 19,000 sockets and their rooms.
        .max_connections(100_000);
    if let Some(max) = max_open_databases {
        builder = builder.max_open_databases(max);
    }
    let server = match builder.bind(addr.as_str()).await {
        Ok(server) => server,
        Err(e) => {
            eprintln!("bench-server: {e}");
            return ExitCode::FAILURE;
        }
    };
    let _ = handle.0.set(server.handle());
    println!("bench-server listening on {}", server.local_addr());
    match server.run_until(shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-server: {e}");
            ExitCode::FAILURE
        }
    }
}

fn usage(why: &str) -> ExitCode {
    eprintln!(
        "bench-server: {why}\nusage: bench-server --addr HOST:PORT --data-dir DIR [--hibernate-after 2s] [--max-open-databases N]"
    );
    ExitCode::from(2)
}
