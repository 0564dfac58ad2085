//! The examples server: every reference agent on one address.
//!
//! `cargo run --release -p agents-examples -- --addr 127.0.0.1:8787 --data-dir ./.agents-data`

use std::process::ExitCode;

// ANCHOR: allocator
/// jemalloc gives freed pages back to the system; glibc's malloc keeps those inside its heap,
/// so the memory parked sockets free would stay with the process.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
// ANCHOR_END: allocator

// ANCHOR: runtime
fn main() -> ExitCode {
    // jemalloc's background thread returns the pages without waiting for the next allocation.
    agents_examples::return_freed_memory();
    // Given one core (a container limited to one CPU, or `taskset`), tokio's single-threaded
    // scheduler, as the book's production chapter advises; otherwise a worker per core.
    let one_core = std::thread::available_parallelism().is_ok_and(|cores| cores.get() == 1);
    let mut runtime = if one_core {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let runtime = match runtime.enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("agents-examples: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(agents_examples::cli::run(std::env::args().skip(1)))
}
// ANCHOR_END: runtime
