//! Cluster mode: three nodes of the examples server on one PostgreSQL, each test starting its
//! own PostgreSQL (`initdb` in a temporary directory) and its own nodes.

use std::collections::HashMap;

use agents_tests::child::ChildServer;
use agents_tests::{Client, Postgres, TempDir};

const SERVER: &str = env!("CARGO_BIN_EXE_examples-server");

/// A cluster of `n` nodes on a fresh database of `postgres`, with a lease of `lease`.
struct Cluster {
    nodes: Vec<ChildServer>,
    url: String,
    _dirs: Vec<TempDir>,
}

impl Cluster {
    async fn start(postgres: &Postgres, n: usize, lease: &str) -> Self {
        let url = postgres.database();
        let mut nodes = Vec::new();
        let mut dirs = Vec::new();
        for i in 0..n {
            let dir = TempDir::new("cluster-node");
            let id = format!("n{i}");
            let args = ["--cluster-url", &url, "--node-id", &id, "--cluster-lease", lease];
            nodes.push(ChildServer::start_args(SERVER, dir.path(), &args).await);
            dirs.push(dir);
        }
        Self { nodes, url, _dirs: dirs }
    }

    fn db(&self) -> &str {
        self.url.rsplit('/').next().expect("a database name")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_room_spans_three_nodes_and_every_message_arrives_once() {
    let Some(postgres) = agents_tests::postgres("cluster chat room") else { return };
    let cluster = Cluster::start(&postgres, 3, "2s").await;
    // Two clients on each node, joining one after another.
    let mut clients: Vec<(String, Client)> = Vec::new();
    for i in 0..6 {
        let node = &cluster.nodes[i % 3];
        let user = format!("u{i}");
        let client =
            node.server().connect(&format!("/agents/chat-room/lobby?username={user}")).await;
        // Everyone already in hears the join, wherever they are.
        for (_, earlier) in clients.iter_mut() {
            let join = earlier.recv_json().await;
            assert_eq!(join["type"], "join");
            assert_eq!(join["user"], user.as_str());
        }
        clients.push((user, client));
    }
    let owners = postgres.psql(
        cluster.db(),
        "SELECT count(*) FROM agents_rs_agents WHERE agent = 'chat-room' AND name = 'lobby' AND owner_node IS NOT NULL",
    );
    assert_eq!(owners, "1", "one owner row");
    for (user, client) in clients.iter_mut() {
        client.send_text(format!("hello from {user}")).await;
    }
    for (me, client) in clients.iter_mut() {
        let mut seen: HashMap<String, usize> = HashMap::new();
        for _ in 0..6 {
            let message = client.recv_json().await;
            assert_eq!(message["type"], "message", "{me}: {message}");
            *seen.entry(message["text"].as_str().expect("text").to_owned()).or_default() += 1;
        }
        assert_eq!(seen.len(), 6, "{me} heard every message: {seen:?}");
        assert!(seen.values().all(|&n| n == 1), "{me} heard each once: {seen:?}");
        client.expect_silence(std::time::Duration::from_millis(200)).await;
    }
    // A client leaving is heard on every node.
    let (gone, mut client) = clients.remove(0);
    client.close(Some((1000, "bye"))).await;
    for (_, other) in clients.iter_mut() {
        let leave = other.recv_json().await;
        assert_eq!(leave["type"], "leave");
        assert_eq!(leave["user"], gone.as_str());
    }
}
