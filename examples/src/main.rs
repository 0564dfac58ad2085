//! The examples server: every reference agent on one address.
//!
//! `cargo run --release -p agents-examples -- --addr 127.0.0.1:8787 --data-dir ./.agents-data`

use std::process::ExitCode;

// ANCHOR: allocator
/// jemalloc gives freed pages back to the system; glibc's malloc keeps those inside its heap,
/// so the memory parked sockets free would stay with the process.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> ExitCode {
    // jemalloc's background thread returns the pages without waiting for the next allocation.
    agents_examples::return_freed_memory();
    agents_examples::cli::run(std::env::args().skip(1)).await
}
// ANCHOR_END: allocator
