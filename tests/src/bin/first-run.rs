//! A first server, as the quick start has a new user write it: `Server::builder()` with its
//! default settings (data in `./.agents-data` of the working directory) and no tracing
//! subscriber, hosting the examples' `Counter`. Integration tests run it as a child process
//! (`CARGO_BIN_EXE_first-run`) to check that a first server keeps its data across restarts.
//!
//! `first-run HOST:PORT` prints `listening on ADDR` once bound.

use agents_examples::Counter;
use agents_runtime::{Server, shutdown_signal};

#[tokio::main]
async fn main() -> agents_runtime::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:8787".into());
    let shutdown = shutdown_signal();
    let server = Server::builder().agent::<Counter>().bind(addr).await?;
    println!("listening on {}", server.local_addr());
    server.run_until(shutdown).await
}
