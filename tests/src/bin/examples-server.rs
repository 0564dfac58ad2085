//! The examples server's command line, built inside this package so integration tests can run
//! it as a child process (`CARGO_BIN_EXE_examples-server`) and kill it.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    agents_examples::cli::run(std::env::args().skip(1)).await
}
