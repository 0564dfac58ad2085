//! The load generator: drives a chat server (ours or a peer) or our `Counter` over real
//! loopback sockets and prints what it measured, one human line per figure and a final
//! `RESULT {json}` line for `bench/run.py`.
//!
//! ```text
//! loadgen chat    --url ws://127.0.0.1:PORT/agents/chat-room/bench --conns 32 --senders 32 --messages 500
//! loadgen idle    --url ws://127.0.0.1:PORT/agents/chat-room/idle --conns 19000 --hibernate-wait 4s
//! loadgen connect --url ws://127.0.0.1:PORT/agents/chat-room/connect --total 10000
//! loadgen storm   --url ws://127.0.0.1:PORT/agents/chat-room/storm --total 5000 --per-room 100
//! loadgen agents  --url ws://127.0.0.1:PORT/agents/hibernating-counter/a --instances 10000
//! loadgen rpc     --url ws://127.0.0.1:PORT/agents/counter/bench --rate 1000 --calls 10000
//! loadgen soak    --url ws://127.0.0.1:PORT --server-pid PID --duration 30m
//! loadgen schedules --url ws://127.0.0.1:PORT --server-pid PID --instances 10000 --schedules 100000
//! loadgen pending --url ws://127.0.0.1:PORT --instances 1000 --schedules 1000000
//! loadgen sql     --url ws://127.0.0.1:PORT/agents/catalog/w --op put --writers 8 --duration 10s
//! loadgen footprint --url ws://127.0.0.1:PORT/agents/catalog/f --instances 1000
//! loadgen fanout  --url ws://127.0.0.1:PORT/agents/chat-room/big?announce=false --conns 16000 --send true
//! loadgen takeover --url ws://127.0.0.1:P1/agents/counter/t,ws://127.0.0.1:P2/agents/counter/t --writers 6
//! ```
//!
//! Every mode takes `--server-pid PID` (server CPU time and RSS come from `/proc/PID`) and
//! `--stats-url URL` (our `bench-server`'s gauges). Connections are spread over the source
//! addresses 127.0.0.1 to 127.0.0.8; one process opens at most 19,000 sockets.

mod agents;
mod args;
mod chat;
mod client;
mod cluster;
mod connect;
mod idle;
mod probe;
mod rpc;
mod schedules;
mod soak;
mod sql;
mod stats;
mod storm;

use std::process::ExitCode;

use args::Args;

/// The machine allows 20,000 open files per process; the rest are kept for the runtime.
const MAX_SOCKETS: usize = 19_000;

fn main() -> ExitCode {
    let mut argv = std::env::args().skip(1);
    let Some(mode) = argv.next() else { return usage("a mode is required") };
    let args = match Args::parse(argv) {
        Ok(args) => args,
        Err(why) => return usage(&why),
    };
    // The generator is pinned to one core (taskset): one thread does all of its work.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(e) => return fail(&format!("cannot start tokio: {e}")),
    };
    let result = runtime.block_on(async {
        match mode.as_str() {
            "chat" => chat::run(&args).await,
            "idle" => idle::run(&args).await,
            "connect" => connect::run(&args).await,
            "storm" => storm::run(&args).await,
            "agents" => agents::run(&args).await,
            "rpc" => rpc::run(&args).await,
            "soak" => soak::run(&args).await,
            "schedules" => schedules::run(&args).await,
            "pending" => schedules::fill(&args).await,
            "sql" => sql::run(&args).await,
            "footprint" => sql::footprint(&args).await,
            "fanout" => cluster::fanout(&args).await,
            "takeover" => cluster::takeover(&args).await,
            other => Err(format!("unknown mode `{other}`")),
        }
    });
    match result {
        Ok(report) => {
            println!("RESULT {report}");
            ExitCode::SUCCESS
        }
        Err(why) => fail(&why),
    }
}

fn usage(why: &str) -> ExitCode {
    eprintln!(
        "loadgen: {why}\n\nusage: loadgen chat|idle|connect|storm|agents|rpc|soak|schedules|pending|sql|footprint|fanout|takeover --url WS_URL [options]"
    );
    eprintln!(
        "  chat     --conns N --senders S --messages M [--window W]\n  \
         idle     --conns N [--per-room R] [--hibernate-wait 4s]\n  \
         connect  --total K [--concurrency C]\n  \
         storm    --total K [--per-room R] [--concurrency C]\n  \
         agents   --instances N [--first I] [--http true] [--count true] [--hibernate-wait 30s]\n  \
         rpc      --rate R --calls K [--conns C]\n  \
         schedules --instances N --schedules K [--spread 10s] [--lead 20s]\n  \
         pending  --instances N --schedules K [--concurrency C]\n  \
         sql      --op put|get [--writers W] [--rows N] [--duration 10s]\n  \
         footprint --instances N [--hibernate-wait 4s] [--settle 2s]\n  \
         fanout   --conns N [--first I] [--send true]   (one room on one gateway; stdin says go)\n  \
         takeover --writers W [--duration 60s] [--gap 200ms]   (--url: every node, comma-separated)\n  \
         all:     --server-pid PID [--stats-url http://HOST:PORT/agents/bench-stats/x] [--timeout 120s]"
    );
    ExitCode::from(2)
}

fn fail(why: &str) -> ExitCode {
    eprintln!("loadgen: {why}");
    ExitCode::FAILURE
}
