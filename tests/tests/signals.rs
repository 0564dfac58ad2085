//! `shutdown_signal` installs its handlers when it is called. A SIGTERM that comes before its
//! future is first polled (the server already accepting, its main thread not yet at the
//! `select!`) is heard, instead of killing the process with the sockets open. Alone in its
//! test binary: if the handler were missing, SIGTERM would end this process.

use std::time::Duration;

#[tokio::test]
async fn a_sigterm_before_the_first_poll_is_heard() {
    let shutdown = agents_runtime::shutdown_signal();
    let pid = std::process::id();
    // The shell's own `kill`: no procps needed on a fresh machine.
    let status =
        std::process::Command::new("sh").args(["-c", &format!("kill -TERM {pid}")]).status();
    assert!(status.expect("kill runs").success());
    tokio::time::timeout(Duration::from_secs(10), shutdown).await.expect("the signal was heard");
}
