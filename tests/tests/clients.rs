//! The typed clients `#[agent]` generates: `CounterClient` over a WebSocket (`AgentClient`)
//! and in-process (`AgentStub`, the `getAgentByName` of agents-rs), from outside and from
//! inside another agent.

use agents_examples::{Counter, CounterClient, CounterState, JsNumber};
use agents_runtime::client::StreamItem;
use agents_runtime::prelude::*;
use agents_tests::{TestServer, WAIT, start};
use futures_util::StreamExt;
use serde_json::json;
use std::time::Duration;
use tokio::time::timeout;

async fn server() -> TestServer {
    start(agents_examples::server().agent::<Relay>()).await
}

fn url(server: &TestServer, path: &str) -> String {
    server.ws_url(path)
}

#[tokio::test]
async fn the_rust_client_calls_streams_and_follows_the_state() {
    let server = server().await;
    let counter =
        CounterClient::connect(&url(&server, "/agents/counter/rust")).await.expect("connects");
    assert_eq!(counter.transport().identity(), ("rust".to_owned(), "counter".to_owned()));
    assert_eq!(counter.state().expect("decodes"), Some(CounterState { count: 0 }));
    assert_eq!(counter.increment().await.expect("increments"), 1);
    assert_eq!(counter.add(2.0, 3.0).await.expect("adds"), JsNumber(5.0));
    assert_eq!(counter.fail().await.expect_err("fails").to_string(), "Invalid data format");

    let (chunks, last) =
        counter.stream_numbers(4).await.expect("streams").collect_all().await.expect("ends");
    assert_eq!(chunks, [json!(0), json!(1), json!(2), json!(3)]);
    assert_eq!(last, Some(json!(4)));

    // Two clients: one sets the state, the other sees it.
    let other =
        CounterClient::connect(&url(&server, "/agents/counter/rust")).await.expect("connects");
    assert_eq!(other.state().expect("decodes"), Some(CounterState { count: 1 }));
    let mut updates = other.transport().state_updates();
    counter.set_state(&CounterState { count: 40 }).expect("sends");
    timeout(WAIT, updates.changed()).await.expect("in time").expect("an update");
    assert_eq!(other.state().expect("decodes"), Some(CounterState { count: 40 }));
}

#[tokio::test]
async fn the_rust_client_sees_state_errors_and_rejections() {
    let server = server().await;
    let reader = CounterClient::connect(&url(&server, "/agents/counter/ro?readonly=true"))
        .await
        .expect("connects");
    let mut errors = reader.transport().state_errors();
    reader.set_state(&CounterState { count: 9 }).expect("sends");
    timeout(WAIT, errors.changed()).await.expect("in time").expect("an error");
    assert_eq!(errors.borrow().as_deref(), Some("Connection is readonly"));
    assert_eq!(
        reader.increment().await.expect_err("refused").to_string(),
        "Connection is readonly"
    );
    let untyped = reader.transport();
    use agents_runtime::client::RpcTransport;
    let error = untyped.call("notCallable", vec![]).await.expect_err("refused");
    assert_eq!(error.to_string(), "Method notCallable is not callable");
    // A plain call of a streaming method waits through the chunks for the final value.
    let last = timeout(WAIT, untyped.call("streamNumbers", vec![json!(3)])).await.expect("in time");
    assert_eq!(last.expect("streams"), Some(json!(3)));
}

#[tokio::test]
async fn in_process_calls_reach_the_same_instance_without_a_socket() {
    let server = server().await;
    let mut watcher = server.connect("/agents/counter/shared").await;
    let stub = server.handle.get_agent_by_name::<Counter>("shared").expect("registered");
    let counter = CounterClient::new(stub);
    assert_eq!(counter.increment().await.expect("increments"), 1);
    // Socket clients of that instance see the change.
    assert_eq!(
        watcher.recv_json().await,
        json!({ "type": "cf_agent_state", "state": { "count": 1 } })
    );
    assert_eq!(counter.add(1.5, 1.0).await.expect("adds"), JsNumber(2.5));
    assert_eq!(counter.fail().await.expect_err("fails").to_string(), "Invalid data format");
    let mut stream = counter.stream_numbers(2).await.expect("streams");
    let mut next = async || timeout(WAIT, stream.next()).await.expect("in time").map(Result::ok);
    assert_eq!(next().await, Some(Some(StreamItem::Chunk(json!(0)))));
    assert_eq!(next().await, Some(Some(StreamItem::Chunk(json!(1)))));
    assert_eq!(next().await, Some(Some(StreamItem::Done(Some(json!(2))))));

    let missing = server.handle.get_agent_by_name::<NotServed>("x").expect_err("not registered");
    assert_eq!(missing.to_string(), "no agent named `not-served` is registered on this server");
}

/// Calls other agents through typed stubs.
#[derive(Default)]
struct Relay;

#[agent(rename_all = "camelCase")]
impl Relay {
    /// Increments the counter named `name` and returns its new count.
    #[callable]
    async fn bump(&mut self, ctx: &mut Context<Self>, name: String) -> Result<i64> {
        CounterClient::new(ctx.get_agent_by_name::<Counter>(&name)?).increment().await
    }

    /// Calls `other`, which calls this instance back: a cycle, cut by the stubs' timeout.
    #[callable]
    async fn ping(&mut self, ctx: &mut Context<Self>, other: String) -> Result<()> {
        let me = ctx.name().to_owned();
        let stub = ctx.get_agent_by_name::<Relay>(&other)?.with_timeout(Duration::from_millis(300));
        RelayClient::new(stub).pong(me).await
    }

    /// Calls `back`, which is busy waiting for this very call.
    #[callable]
    async fn pong(&mut self, ctx: &mut Context<Self>, back: String) -> Result<()> {
        let stub = ctx.get_agent_by_name::<Relay>(&back)?.with_timeout(Duration::from_millis(100));
        RelayClient::new(stub).noop().await
    }

    #[callable]
    fn noop(&self) {}

    /// Tries to call itself, which is refused.
    #[callable]
    async fn call_self(&mut self, ctx: &mut Context<Self>) -> Result<()> {
        let me = ctx.name().to_owned();
        RelayClient::new(ctx.get_agent_by_name::<Relay>(&me)?).call_self().await
    }
}

/// A hand-written impl: `#[agent]` would register it through inventory, this one is never
/// registered on the test server.
struct NotServed;

impl Agent for NotServed {
    const NAME: &'static str = "not-served";
    type ConnectionState = ();
    type State = ();

    fn create() -> Self {
        NotServed
    }

    fn initial_state() {}
}

#[tokio::test]
async fn an_agent_calls_another_by_name() {
    let server = server().await;
    let relay = RelayClient::connect(&url(&server, "/agents/relay/r")).await.expect("connects");
    assert_eq!(
        timeout(WAIT, relay.bump("via-relay".into())).await.expect("in time").expect("bumps"),
        1
    );
    assert_eq!(
        timeout(WAIT, relay.bump("via-relay".into())).await.expect("in time").expect("bumps"),
        2
    );
    let counter =
        CounterClient::connect(&url(&server, "/agents/counter/via-relay")).await.expect("connects");
    assert_eq!(counter.state().expect("decodes"), Some(CounterState { count: 2 }));
    assert_eq!(
        relay.call_self().await.expect_err("refused").to_string(),
        "relay/r cannot call itself through a stub: call the method directly"
    );
    // A cycle (r → s → r) ends in a timeout error instead of hanging both instances, and both
    // keep working afterwards.
    let cycle = timeout(WAIT, relay.ping("s".into())).await.expect("in time").expect_err("cut");
    assert_eq!(cycle.to_string(), "RPC call to noop on relay/r timed out after 100ms");
    assert_eq!(timeout(WAIT, relay.noop()).await.expect("in time").ok(), Some(()));
}
