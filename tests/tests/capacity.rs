//! The examples server at its limits, as a child process: over `--max-connections`, upgrades
//! get 503 at once while the open sockets are served; out of file descriptors, the accept
//! loop backs off and logs about once a second, and serves again once descriptors free up.

use std::time::Duration;

use agents_tests::TempDir;
use agents_tests::child::ChildServer;

const EXAMPLES_SERVER: &str = env!("CARGO_BIN_EXE_examples-server");

#[tokio::test]
async fn over_max_connections_upgrades_get_503_and_open_sockets_are_served() {
    let dir = TempDir::new("capacity");
    let args = ["--max-connections", "3"];
    let child = ChildServer::start_limited(EXAMPLES_SERVER, dir.path(), 1024, &args).await;
    let server = child.server();
    let mut open = Vec::new();
    for n in 0..3 {
        let mut client = server.connect(&format!("/agents/my-agent/cap{n}")).await;
        assert_eq!(client.recv_text().await, "Welcome!");
        open.push(client);
    }
    for _ in 0..5 {
        let refused = server.refused_upgrade("/agents/my-agent/more").await;
        assert_eq!(refused, (503, "Too many connections".into()));
    }
    for (n, client) in open.iter_mut().enumerate() {
        client.send_text(format!("still here {n}")).await;
        assert_eq!(client.recv_text().await, format!("still here {n}"));
    }
    // HTTP is not a WebSocket: it is served meanwhile.
    assert_eq!(server.http("GET", "/agents/my-agent/x", b"").await.0, 200);
    child.kill().await;
}

#[tokio::test]
async fn out_of_file_descriptors_the_accept_loop_backs_off_and_recovers() {
    let dir = TempDir::new("fd-limit");
    let child = ChildServer::start_limited(EXAMPLES_SERVER, dir.path(), 64, &[]).await;
    let server = child.server();
    let mut first = server.connect("/agents/my-agent/fd").await;
    assert_eq!(first.recv_text().await, "Welcome!");
    // Plain TCP connections that never send a request: each one the server accepts holds a
    // descriptor, until it has none left and the rest wait in the listen backlog.
    let mut idle = Vec::new();
    for _ in 0..100 {
        idle.push(tokio::net::TcpStream::connect(child.addr).await.expect("connects"));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let failures = child.log().iter().filter(|line| line.contains("accept failed")).count();
    assert!(failures >= 1, "the server ran out of descriptors: {:?}", child.log());
    assert!(failures <= 5, "{failures} lines about failed accepts in 3 s");
    // The socket it already had is served all along.
    first.send_text("still here").await;
    assert_eq!(first.recv_text().await, "still here");
    // Descriptors free up: new connections are served again.
    drop(idle);
    let mut again = server.connect("/agents/my-agent/fd2").await;
    assert_eq!(again.recv_text().await, "Welcome!");
    child.kill().await;
}
