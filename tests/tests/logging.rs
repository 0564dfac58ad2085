//! What clients cause reaches the log in bounded amounts: a flood of failing calls with large
//! arguments is answered in full, while the examples server's log grows by a few kilobytes.

use agents_tests::child::ChildServer;
use agents_tests::{TempDir, eventually};
use serde_json::json;

#[tokio::test]
async fn a_flood_of_failing_calls_with_large_arguments_does_not_flood_the_log() {
    let dir = TempDir::new("logging");
    let child = ChildServer::start(env!("CARGO_BIN_EXE_examples-server"), dir.path()).await;
    let mut client = child.server().connect("/agents/counter/flood").await;
    // `add` takes numbers: each call fails, and its error quotes the start and the end of the
    // 10 KB string it got (a client is not sent its megabyte back either).
    let big = "x".repeat(10_000);
    const CALLS: usize = 500;
    for n in 0..CALLS {
        client.send_rpc(&format!("c{n}"), "add", json!([big, 1])).await;
    }
    for _ in 0..CALLS {
        let answer = client.recv_json().await;
        assert_eq!(answer["success"], false, "{answer}");
        let error = answer["error"].as_str().expect("an error");
        assert!(error.starts_with("Invalid argument 0 (`a`) for method add: invalid type"));
        assert!(error.ends_with("expected f64 (10037 bytes in all)"), "{error}");
        assert!(error.len() < 400, "{} bytes of error", error.len());
    }
    // The log is read from the child's output as it comes: wait for the first RPC error line,
    // then a moment more for the rest.
    let logged = || child.log().iter().any(|line| line.contains("RPC error"));
    eventually("the first RPC error is logged", logged).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let log = child.log();
    let errors: Vec<&String> = log.iter().filter(|line| line.contains("RPC error")).collect();
    let bytes: usize = log.iter().map(String::len).sum();
    // 500 calls quoting 10 KB each would be 5 MB of log; a second's allowance is 10 lines of
    // at most 256 quoted bytes each (the calls may span two seconds).
    assert!(!errors.is_empty(), "the errors are logged at all");
    assert!(errors.len() <= 30, "{} lines of RPC errors", errors.len());
    assert!(errors.iter().all(|line| line.contains("bytes in all)")), "{}", errors[0]);
    assert!(bytes < 32 * 1024, "{bytes} bytes of log for {CALLS} failing calls");
    child.kill().await;
}
