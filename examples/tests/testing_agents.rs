//! How to test your own agents, as the book's "Testing your agents" chapter shows it: a server
//! with the agents under test on an ephemeral port, real sockets, every wait bounded.

// ANCHOR: raw_client
use agents_examples::{ChatRoom, Counter, CounterClient};
use agents_runtime::Server;
use agents_runtime::testing::{self, TempDir};
use serde_json::json;

#[tokio::test]
async fn the_chat_room_broadcasts_to_everyone_but_the_joiner() {
    // Only the agents under test; 127.0.0.1 and a free port.
    let server = testing::start(Server::builder().agent::<ChatRoom>()).await;

    // `connect` reads the protocol preamble (identity, state, MCP servers) for you.
    let mut alice = server.connect("/agents/chat-room/lobby?username=alice").await;
    let mut bob = server.connect("/agents/chat-room/lobby?username=bob").await;

    let join = alice.recv_json().await; // waits at most testing::WAIT, then fails the test
    assert_eq!((join["type"].as_str(), join["user"].as_str()), (Some("join"), Some("bob")));

    bob.send_text("hello").await;
    for client in [&mut alice, &mut bob] {
        let frame = client.recv_json().await;
        assert_eq!(frame["text"], "hello");
        assert_eq!(frame["user"], "bob");
    }
}
// ANCHOR_END: raw_client

// ANCHOR: typed_client
#[tokio::test]
async fn the_counter_keeps_its_count_across_a_restart() {
    let data = TempDir::new("counter");
    let builder = || Server::builder().agent::<Counter>().data_dir(data.path());

    let server = testing::start(builder()).await;
    // The generated typed client over the Rust `AgentClient`.
    let counter = CounterClient::new(server.agent_client("/agents/counter/c1").await);
    assert_eq!(counter.increment().await.expect("increments"), 1);
    assert_eq!(counter.increment().await.expect("increments"), 2);
    server.shut_down().await; // as SIGTERM: sockets close with 1001, the store is flushed

    let server = testing::start(builder()).await;
    let mut raw = server.connect("/agents/counter/c1").await;
    assert_eq!(raw.initial_state, Some(json!({ "count": 2 })));
    raw.send_rpc("1", "add", json!([2, 3])).await;
    let answer = raw.recv_json_skipping_state().await;
    assert_eq!(answer["result"], 5);
}
// ANCHOR_END: typed_client
