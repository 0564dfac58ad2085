//! The examples server: every reference agent on one address.
//!
//! `cargo run --release -p agents-examples -- --addr 127.0.0.1:8787 --data-dir ./.agents-data`

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    agents_examples::cli::run(std::env::args().skip(1)).await
}
