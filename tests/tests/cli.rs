//! The examples server's command line as a shell uses it: its help piped into a program that
//! stops reading (`agents-examples --help | head -3`) ends cleanly instead of panicking.

use std::process::{Command, Stdio};

#[test]
fn help_into_a_closed_pipe_ends_cleanly() {
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader); // nobody reads: every write fails with EPIPE
    let output = Command::new(env!("CARGO_BIN_EXE_examples-server"))
        .arg("--help")
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .expect("the examples server runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(output.status.success(), "{:?}: {stderr}", output.status);
}
