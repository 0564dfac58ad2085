//! The Cloudflare Agents wire protocol, frame by frame: every frame of the reference's wire
//! summary, sent in the same situation, compared as JSON (key order aside). Also the bad input
//! a client can send, and that the instance keeps working after it.

use agents_examples::Counter;
use agents_runtime::prelude::*;
use agents_tests::{Client, TestServer, start};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

const MCP: &str = r#"{"mcp":{"prompts":[],"resources":[],"servers":{},"tools":[]},"type":"cf_agent_mcp_servers"}"#;

fn mcp() -> Value {
    serde_json::from_str(MCP).expect("valid JSON")
}

fn ok(id: &str, result: Value) -> Value {
    json!({ "done": true, "id": id, "result": result, "success": true, "type": "rpc" })
}

fn failed(id: &str, error: &str) -> Value {
    json!({ "error": error, "id": id, "success": false, "type": "rpc" })
}

fn state(state: Value) -> Value {
    json!({ "state": state, "type": "cf_agent_state" })
}

/// The state every test below checks against.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Guard {
    count: i64,
}

/// Exercises every state and RPC path: validation, readonly, protocol opt-out,
/// `on_state_changed` sources, void and null results, streams that end in every way.
#[derive(Default)]
struct Guarded {
    changes: Vec<String>,
    parked: Option<StreamingResponse>,
}

#[agent(state = Guard, rename_all = "camelCase")]
impl Guarded {
    fn initial_state() -> Guard {
        Guard { count: 10 }
    }

    // ANCHOR: guards
    fn should_connection_be_readonly(
        &mut self,
        _ctx: &mut Context<Self>,
        _conn: &Connection,
        c: &ConnectionContext,
    ) -> Result<bool> {
        match c.query("readonly").as_deref() {
            Some("boom") => Err(Error::msg("the permission service is down")),
            readonly => Ok(readonly == Some("true")),
        }
    }

    fn should_send_protocol_messages(
        &mut self,
        _ctx: &mut Context<Self>,
        _conn: &Connection,
        c: &ConnectionContext,
    ) -> bool {
        c.query("protocol").as_deref() != Some("false")
    }

    fn validate_state_change(
        _ctx: &Context<Self>,
        next: &Guard,
        _source: StateSource<'_, ()>,
    ) -> Result<()> {
        if next.count < 0 {
            return Err(Error::msg("count must not be negative"));
        }
        Ok(())
    }

    fn on_state_changed(
        &mut self,
        _ctx: &mut Context<Self>,
        state: &Guard,
        source: StateSource<'_, ()>,
    ) {
        let who = source.connection().map_or("server", |conn| conn.id());
        self.changes.push(format!("{}:{who}", state.count));
    }
    // ANCHOR_END: guards

    fn on_message(
        &mut self,
        _ctx: &mut Context<Self>,
        conn: &Connection,
        message: Message,
    ) -> Result<()> {
        let heard = match &message {
            Message::Text(text) => format!("on_message: {text}"),
            Message::Binary(bytes) => format!("on_message: {} bytes", bytes.len()),
        };
        Ok(conn.send(heard)?)
    }

    #[callable]
    fn set(&mut self, ctx: &mut Context<Self>, count: i64) -> Result<i64> {
        ctx.set_state(Guard { count })?;
        Ok(ctx.state().count)
    }

    #[callable]
    fn peek(&self, ctx: &mut Context<Self>) -> Guard {
        ctx.state().clone()
    }

    #[callable]
    fn changes(&self) -> Vec<String> {
        self.changes.clone()
    }

    #[callable]
    fn noop(&self) {}

    #[callable]
    fn nothing(&self) -> Option<i64> {
        None
    }

    #[callable]
    fn set_readonly(&self, ctx: &mut Context<Self>, id: String, readonly: bool) -> Result<()> {
        let conn = ctx.get_connection(&id)?.ok_or_else(|| Error::msg("no such connection"))?;
        ctx.set_connection_readonly(conn, readonly);
        Ok(())
    }

    #[callable(streaming)]
    fn end_empty(&self, stream: StreamingResponse) {
        stream.end_empty();
    }

    #[callable(streaming)]
    fn chunk_then_fail(&self, stream: StreamingResponse) -> Result<()> {
        stream.send("chunk1");
        Err(Error::msg("Stream failed"))
    }

    #[callable(streaming)]
    fn double_close(&self, stream: StreamingResponse) {
        assert!(stream.end("First close"));
        assert!(!stream.end("Second close"));
        assert!(!stream.error("too late"));
    }

    /// Keeps the stream open past the call; `finish` ends it.
    #[callable(streaming)]
    fn later(&mut self, stream: StreamingResponse) {
        self.parked = Some(stream);
    }

    #[callable]
    fn finish(&mut self, value: u32) -> bool {
        self.parked.take().is_some_and(|stream| stream.end(value))
    }
}

async fn server() -> TestServer {
    start(
        Server::builder().agent::<Guarded>().agent::<Counter>().agent::<agents_examples::MyAgent>(),
    )
    .await
}

// --- connect ---------------------------------------------------------------------------------

#[tokio::test]
async fn connect_sends_identity_state_and_mcp_in_order() {
    let server = server().await;
    let mut client = server.connect_raw("/agents/counter/room-1").await;
    assert_eq!(
        client.recv_json().await,
        json!({ "type": "cf_agent_identity", "name": "room-1", "agent": "counter", "stateFollows": true })
    );
    assert_eq!(client.recv_json().await, state(json!({ "count": 0 })));
    assert_eq!(client.recv_json().await, mcp());

    // No state: no `stateFollows`, no state frame; the agent's own frames come after.
    let mut client = server.connect_raw("/agents/my-agent/plain").await;
    assert_eq!(
        client.recv_json().await,
        json!({ "type": "cf_agent_identity", "name": "plain", "agent": "my-agent" })
    );
    assert_eq!(client.recv_json().await, mcp());
    assert_eq!(client.recv_text().await, "Welcome!");
}

#[tokio::test]
async fn initial_state_comes_from_the_agent() {
    let server = server().await;
    let client = server.connect("/agents/guarded/g").await;
    assert_eq!(client.initial_state, Some(json!({ "count": 10 })));
}

// --- state sync --------------------------------------------------------------------------------

#[tokio::test]
async fn a_callable_set_state_reaches_everyone_then_the_result() {
    let server = server().await;
    let mut a = server.connect("/agents/counter/c").await;
    let mut b = server.connect("/agents/counter/c").await;
    a.send_rpc("r1", "increment", json!([])).await;
    // Server-side set_state: the caller gets the broadcast too, before the answer.
    assert_eq!(a.recv_json().await, state(json!({ "count": 1 })));
    assert_eq!(a.recv_json().await, ok("r1", json!(1)));
    assert_eq!(b.recv_json().await, state(json!({ "count": 1 })));
    // A newcomer starts from the current state.
    assert_eq!(
        server.connect("/agents/counter/c").await.initial_state,
        Some(json!({ "count": 1 }))
    );
}

#[tokio::test]
async fn increment_past_the_largest_count_is_an_rpc_error_not_a_wrap() {
    let server = server().await;
    let mut a = server.connect("/agents/counter/max").await;
    a.send_json(json!({ "type": "cf_agent_state", "state": { "count": i64::MAX } })).await;
    a.send_rpc("r", "increment", json!([])).await;
    let error = format!("the count is at its maximum ({})", i64::MAX);
    assert_eq!(a.recv_json().await, failed("r", &error));
    // Nothing changed: a newcomer sees the largest count, not a negative one.
    let b = server.connect("/agents/counter/max").await;
    assert_eq!(b.initial_state, Some(json!({ "count": i64::MAX })));
}

#[tokio::test]
async fn a_client_state_update_reaches_the_others_but_not_the_sender() {
    let server = server().await;
    let mut a = server.connect("/agents/guarded/s?_pk=a").await;
    let mut b = server.connect("/agents/guarded/s?_pk=b").await;
    a.send_json(json!({ "state": { "count": 5 }, "type": "cf_agent_state" })).await;
    assert_eq!(b.recv_json().await, state(json!({ "count": 5 })));
    // Nothing came back to `a`: its next frame is the answer to this call.
    a.send_rpc("p", "peek", json!([])).await;
    assert_eq!(a.recv_json().await, ok("p", json!({ "count": 5 })));
    // on_state_changed saw both sources.
    a.send_rpc("s", "set", json!([7])).await;
    assert_eq!(a.recv_json().await, state(json!({ "count": 7 })));
    assert_eq!(a.recv_json().await, ok("s", json!(7)));
    a.send_rpc("c", "changes", json!([])).await;
    assert_eq!(a.recv_json().await, ok("c", json!(["5:a", "7:server"])));
}

#[tokio::test]
async fn a_client_state_the_type_normalises_goes_back_to_the_sender_too() {
    let server = server().await;
    let mut a = server.connect("/agents/counter/normal").await;
    let mut b = server.connect("/agents/counter/normal").await;
    // `extra` is no field of the counter's state: it is dropped, and the sender, which holds
    // its own copy with it, is told the state everyone else has.
    a.send_json(json!({ "type": "cf_agent_state", "state": { "count": 5, "extra": true } })).await;
    assert_eq!(a.recv_json().await, state(json!({ "count": 5 })));
    assert_eq!(b.recv_json().await, state(json!({ "count": 5 })));
    // A state that reads back as sent is not echoed.
    a.send_json(json!({ "type": "cf_agent_state", "state": { "count": 6 } })).await;
    assert_eq!(b.recv_json().await, state(json!({ "count": 6 })));
    a.send_rpc("p", "add", json!([1, 2])).await;
    assert_eq!(a.recv_json().await, ok("p", json!(3)));
}

#[tokio::test]
async fn a_rejected_update_is_answered_and_changes_nothing() {
    let server = server().await;
    let mut a = server.connect("/agents/guarded/v").await;
    let mut b = server.connect("/agents/guarded/v").await;
    a.send_json(json!({ "type": "cf_agent_state", "state": { "count": -1 } })).await;
    assert_eq!(
        a.recv_json().await,
        json!({ "type": "cf_agent_state_error", "error": "State update rejected" })
    );
    // A state of the wrong shape is rejected the same way.
    a.send_json(json!({ "type": "cf_agent_state", "state": "not a guard" })).await;
    assert_eq!(
        a.recv_json().await,
        json!({ "type": "cf_agent_state_error", "error": "State update rejected" })
    );
    // From the server side the validator's own message is the RPC error.
    a.send_rpc("s", "set", json!([-5])).await;
    assert_eq!(a.recv_json().await, failed("s", "count must not be negative"));
    b.send_rpc("p", "peek", json!([])).await;
    assert_eq!(b.recv_json().await, ok("p", json!({ "count": 10 })));
}

// --- readonly and protocol opt-out ---------------------------------------------------------

#[tokio::test]
async fn a_readonly_connection_reads_but_cannot_write() {
    let server = server().await;
    let mut reader = server.connect("/agents/guarded/ro?readonly=true&_pk=reader").await;
    let mut writer = server.connect("/agents/guarded/ro?_pk=writer").await;
    reader.send_json(json!({ "type": "cf_agent_state", "state": { "count": 1 } })).await;
    assert_eq!(
        reader.recv_json().await,
        json!({ "type": "cf_agent_state_error", "error": "Connection is readonly" })
    );
    reader.send_rpc("w", "set", json!([1])).await;
    assert_eq!(reader.recv_json().await, failed("w", "Connection is readonly"));
    reader.send_rpc("r", "peek", json!([])).await;
    assert_eq!(reader.recv_json().await, ok("r", json!({ "count": 10 })));
    // Broadcasts still reach it.
    writer.send_rpc("w", "set", json!([2])).await;
    assert_eq!(reader.recv_json().await, state(json!({ "count": 2 })));
    // Flipped at runtime, both ways.
    assert_eq!(writer.recv_json().await, state(json!({ "count": 2 })));
    assert_eq!(writer.recv_json().await, ok("w", json!(2)));
    writer.send_rpc("t", "setReadonly", json!(["reader", false])).await;
    assert_eq!(
        writer.recv_json().await,
        json!({ "done": true, "id": "t", "success": true, "type": "rpc" })
    );
    reader.send_rpc("w2", "set", json!([3])).await;
    assert_eq!(reader.recv_json().await, state(json!({ "count": 3 })));
    assert_eq!(reader.recv_json().await, ok("w2", json!(3)));
    assert_eq!(writer.recv_json().await, state(json!({ "count": 3 })));
    writer.send_rpc("t2", "setReadonly", json!(["reader", true])).await;
    assert_eq!(
        writer.recv_json().await,
        json!({ "done": true, "id": "t2", "success": true, "type": "rpc" })
    );
    reader.send_rpc("w3", "set", json!([4])).await;
    assert_eq!(reader.recv_json().await, failed("w3", "Connection is readonly"));
}

#[tokio::test]
async fn a_failing_readonly_predicate_refuses_the_connection() {
    let server = server().await;
    let mut client = server.connect_raw("/agents/guarded/boom?readonly=boom").await;
    assert_eq!(client.recv_json().await, json!({ "error": "the permission service is down" }));
    assert_eq!(client.expect_close_now().await.code, 1011);
}

#[tokio::test]
async fn a_connection_without_protocol_gets_no_frames_but_rpc_works() {
    let server = server().await;
    let mut quiet = server.connect_raw("/agents/guarded/np?protocol=false").await;
    // A round trip first, so `quiet` is surely connected before the broadcast below.
    quiet.send_rpc("p", "peek", json!([])).await;
    assert_eq!(quiet.recv_json().await, ok("p", json!({ "count": 10 })));
    let mut loud = server.connect("/agents/guarded/np").await;
    loud.send_rpc("s", "set", json!([4])).await;
    assert_eq!(loud.recv_json().await, state(json!({ "count": 4 })));
    // No identity, state or MCP frame, and no state broadcast: the first frame is the answer.
    quiet.send_rpc("q", "set", json!([5])).await;
    assert_eq!(quiet.recv_json().await, ok("q", json!(5)));
    assert_eq!(loud.recv_json().await, ok("s", json!(4)));
    assert_eq!(loud.recv_json().await, state(json!({ "count": 5 })));
}

// --- RPC -----------------------------------------------------------------------------------------

#[tokio::test]
async fn rpc_results_and_errors_have_the_reference_shape() {
    let server = server().await;
    let mut client = server.connect("/agents/counter/rpc").await;
    let call = async |client: &mut Client, id: &str, method: &str, args: Value| {
        client.send_rpc(id, method, args).await;
        client.recv_json().await
    };
    assert_eq!(call(&mut client, "1", "add", json!([2, 3])).await, ok("1", json!(5)));
    assert_eq!(call(&mut client, "2", "add", json!([0.5, 1])).await, ok("2", json!(1.5)));
    assert_eq!(call(&mut client, "3", "fail", json!([])).await, failed("3", "Invalid data format"));
    assert_eq!(
        call(&mut client, "4", "foo", json!([])).await,
        failed("4", "Method foo does not exist")
    );
    for method in ["notCallable", "setState", "onMessage", "constructor"] {
        let error = format!("Method {method} is not callable");
        assert_eq!(call(&mut client, "5", method, json!([])).await, failed("5", &error));
    }
    let mut guarded = server.connect("/agents/guarded/rpc").await;
    // A method returning nothing answers without `result`; one returning None with `null`.
    assert_eq!(
        call(&mut guarded, "6", "noop", json!([])).await,
        json!({ "done": true, "id": "6", "success": true, "type": "rpc" })
    );
    assert_eq!(call(&mut guarded, "7", "nothing", json!([])).await, ok("7", Value::Null));
}

#[tokio::test]
async fn streaming_sends_chunks_then_the_end() {
    let server = server().await;
    let mut client = server.connect("/agents/counter/stream").await;
    client.send_rpc("s", "streamNumbers", json!([5])).await;
    for i in 0..5 {
        assert_eq!(
            client.recv_json().await,
            json!({ "done": false, "id": "s", "result": i, "success": true, "type": "rpc" })
        );
    }
    assert_eq!(client.recv_json().await, ok("s", json!(5)));

    let mut guarded = server.connect("/agents/guarded/stream").await;
    guarded.send_rpc("e", "endEmpty", json!([])).await;
    assert_eq!(
        guarded.recv_json().await,
        json!({ "done": true, "id": "e", "success": true, "type": "rpc" })
    );
    guarded.send_rpc("f", "chunkThenFail", json!([])).await;
    assert_eq!(
        guarded.recv_json().await,
        json!({ "done": false, "id": "f", "result": "chunk1", "success": true, "type": "rpc" })
    );
    assert_eq!(guarded.recv_json().await, failed("f", "Stream failed"));
    guarded.send_rpc("d", "doubleClose", json!([])).await;
    assert_eq!(guarded.recv_json().await, ok("d", json!("First close")));
    // A stream can outlive its call; other calls are answered meanwhile.
    guarded.send_rpc("l", "later", json!([])).await;
    guarded.send_rpc("n", "noop", json!([])).await;
    assert_eq!(
        guarded.recv_json().await,
        json!({ "done": true, "id": "n", "success": true, "type": "rpc" })
    );
    guarded.send_rpc("f2", "finish", json!([9])).await;
    assert_eq!(guarded.recv_json().await, ok("l", json!(9)));
    assert_eq!(guarded.recv_json().await, ok("f2", json!(true)));
}

#[tokio::test]
async fn tags_agent_notify_admins_counts_who_got_it() {
    let server = start(agents_examples::server()).await;
    let mut admin = server.connect("/agents/tags-agent/t?role=admin").await;
    let mut user = server.connect("/agents/tags-agent/t").await;
    admin.recv_json().await; // its tags frame
    user.recv_json().await;
    user.send_rpc("n", "notifyAdmins", json!(["deploy at 5"])).await;
    assert_eq!(user.recv_json().await, ok("n", json!(1)));
    assert_eq!(admin.recv_text().await, "deploy at 5");
}

#[test]
fn callable_methods_are_listed() {
    use agents_runtime::{Agent, CallableInfo};
    let names: Vec<&str> = Counter::CALLABLES.iter().map(|c| c.name).collect();
    assert_eq!(names, ["increment", "add", "fail", "streamNumbers"]);
    assert_eq!(
        Counter::CALLABLES[0],
        CallableInfo {
            name: "increment",
            description: Some("Adds one to the count and returns it"),
            streaming: false
        }
    );
    assert!(Counter::CALLABLES[3].streaming);
}

// --- bad input ---------------------------------------------------------------------------------

#[tokio::test]
async fn frames_that_are_not_protocol_frames_reach_on_message_untouched() {
    let server = server().await;
    let mut client = server.connect("/agents/guarded/in").await;
    for text in [
        "this is not json {{{",
        "null",
        "",
        "{}",
        "[]",
        r#"{"type":"cf_agent_state"}"#,
        r#"{"type":"rpc","id":"1","method":"peek"}"#,
        r#"{"type":"rpc","id":"1","method":"peek","args":null}"#,
        r#"{"type":"rpc","id":1,"method":"peek","args":[]}"#,
        r#"{"type":"cf_unknown","x":1}"#,
        r#"{"type":999}"#,
    ] {
        client.send_text(text).await;
        assert_eq!(client.recv_text().await, format!("on_message: {text}"));
    }
    let binary = br#"{"type":"rpc","id":"b","method":"peek","args":[]}"#;
    client.send_binary(binary.to_vec()).await;
    assert_eq!(client.recv_text().await, format!("on_message: {} bytes", binary.len()));
}

#[tokio::test]
async fn bad_rpc_arguments_are_answered_and_the_instance_keeps_working() {
    let server = server().await;
    let mut client = server.connect("/agents/counter/bad").await;
    let cases = [
        (
            json!(["x", 1]),
            "Invalid argument 0 (`a`) for method add: invalid type: string \"x\", expected f64",
        ),
        (json!([1]), "Invalid argument 1 (`b`) for method add: invalid type: null, expected f64"),
        (json!([1, 2, 3]), "Method add takes 2 arguments, got 3"),
        (
            json!([{ "a": 1 }, [2]]),
            "Invalid argument 0 (`a`) for method add: invalid type: map, expected f64",
        ),
    ];
    for (args, error) in cases {
        client.send_rpc("x", "add", args).await;
        assert_eq!(client.recv_json().await, failed("x", error));
    }
    // Trailing nulls are JavaScript's `undefined` arguments: ignored.
    client.send_rpc("n", "add", json!([1, 2, null, null])).await;
    assert_eq!(client.recv_json().await, ok("n", json!(3)));
    client.send_rpc("big", "streamNumbers", json!([5000])).await;
    assert_eq!(client.recv_json().await, failed("big", "count must be at most 1000"));
    let huge = Value::Array(vec![json!(1); 50_000]);
    client.send_rpc("h", "add", huge).await;
    assert_eq!(client.recv_json().await, failed("h", "Method add takes 2 arguments, got 50000"));
    client.send_rpc("w", "streamNumbers", json!([-1])).await;
    let error = client.recv_json().await;
    assert_eq!(error["success"], false);
    assert!(error["error"].as_str().is_some_and(|e| e.starts_with("Invalid argument 0 (`count`) for method streamNumbers")));
    // Still serving.
    client.send_rpc("i", "increment", json!([])).await;
    assert_eq!(client.recv_json().await, state(json!({ "count": 1 })));
    assert_eq!(client.recv_json().await, ok("i", json!(1)));
}
