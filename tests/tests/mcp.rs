//! `ctx.mcp()` against a real MCP server: the official TypeScript SDK's, run under Node from
//! `tests/js/package-lock.json` (`tests/js/mcp-server.mjs`), reached over streamable HTTP and
//! over the older SSE transport. The `Toolbox` example agent adds servers, lists and calls
//! their tools; clients follow it all in `cf_agent_mcp_servers` frames.

use std::time::Duration;

use agents_runtime::mcp::McpServerOptions;
use agents_runtime::prelude::*;
use agents_tests::child::ChildServer;
use agents_tests::node::McpServer;
use agents_tests::{Client, TempDir};
use serde_json::{Value, json};

/// The examples server binary this package builds.
const EXAMPLES_SERVER: &str = env!("CARGO_BIN_EXE_examples-server");

/// How long a connection to a server may take to settle (three tries, with waits between).
const SETTLE: Duration = Duration::from_secs(30);

/// A port nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
    listener.local_addr().expect("an address").port()
}

/// Calls `method` over `client`'s socket; the frames that come before the answer are skipped.
async fn call(client: &mut Client, method: &str, args: Value) -> Result<Value, String> {
    let id = format!("{method}-{}", rand_id());
    client.send_rpc(&id, method, args).await;
    loop {
        let frame = client.recv_json().await;
        if frame["type"] == "rpc" && frame["id"] == id.as_str() {
            return match frame["success"].as_bool() {
                Some(true) => Ok(frame["result"].clone()),
                _ => Err(frame["error"].as_str().unwrap_or_default().to_owned()),
            };
        }
    }
}

fn rand_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Reads frames until a `cf_agent_mcp_servers` frame whose `mcp` satisfies `done`.
async fn mcp_until(client: &mut Client, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    tokio::time::timeout(SETTLE, async {
        loop {
            let frame = client.recv_json().await;
            if frame["type"] == "cf_agent_mcp_servers" && done(&frame["mcp"]) {
                return frame["mcp"].clone();
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no MCP frame with {what} in time"))
}

fn state_of<'a>(mcp: &'a Value, id: &str) -> &'a str {
    mcp["servers"][id]["state"].as_str().unwrap_or("absent")
}

/// Adds `url` as `name` and waits for it to be ready; returns its id and the ready frame.
async fn add_ready(client: &mut Client, name: &str, url: &str) -> (String, Value) {
    let added = call(client, "addServer", json!([name, url])).await.expect("added");
    assert_eq!(added["state"], "connecting", "adding returns at once: {added}");
    let id = added["id"].as_str().expect("an id").to_owned();
    let mcp = mcp_until(client, "the server ready", |mcp| {
        let state = state_of(mcp, &id);
        assert_ne!(state, "failed", "{mcp}");
        state == "ready"
    })
    .await;
    (id, mcp)
}

fn tool_names(mcp: &Value) -> Vec<&str> {
    let tools = mcp["tools"].as_array().expect("tools");
    tools.iter().map(|tool| tool["name"].as_str().expect("a name")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_is_added_its_tools_listed_and_called() {
    let mcp_server = McpServer::start().await;
    let server = agents_tests::examples().await;
    let mut client = server.connect("/agents/toolbox/listed").await;
    let empty = json!({ "prompts": [], "resources": [], "servers": {}, "tools": [] });
    assert_eq!(client.initial_mcp, Some(empty), "no servers yet");

    let (id, mcp) = add_ready(&mut client, "tools", &mcp_server.url("/mcp")).await;
    let entry = &mcp["servers"][&id];
    assert_eq!(entry["name"], "tools");
    assert_eq!(entry["server_url"], mcp_server.url("/mcp"));
    assert_eq!(entry["auth_url"], Value::Null);
    assert_eq!(entry["error"], Value::Null);
    assert_eq!(entry["instructions"], "Tools for the agents-rs tests.");
    assert!(entry["capabilities"]["tools"].is_object(), "{entry}");
    assert_eq!(tool_names(&mcp), ["add", "echo", "fail", "grow"]);
    for item in ["tools", "prompts", "resources"] {
        let items = mcp[item].as_array().expect("a list");
        assert!(!items.is_empty(), "{item}: {mcp}");
        assert!(items.iter().all(|i| i["serverId"] == id.as_str()), "{item}: {mcp}");
    }
    let add = &mcp["tools"][0];
    assert_eq!(add["description"], "Adds two numbers");
    assert_eq!(add["inputSchema"]["properties"]["a"]["type"], "number", "{add}");

    let tools = call(&mut client, "listTools", json!([])).await.expect("listed");
    assert_eq!(
        tools[0],
        json!({ "serverId": id, "name": "add", "description": "Adds two numbers" })
    );
    assert_eq!(tools.as_array().expect("a list").len(), 4);

    let sum = call(&mut client, "callTool", json!([id, "add", { "a": 2, "b": 3 }])).await;
    assert_eq!(sum.expect("called"), json!({ "content": [{ "type": "text", "text": "5" }] }));
    let failed = call(&mut client, "callTool", json!([id, "fail", {}])).await.expect("answered");
    assert_eq!(failed["isError"], true, "a tool's failure is its result: {failed}");
    assert_eq!(failed["content"][0]["text"], "the tool failed on purpose");

    // A client connecting now gets the servers in its first MCP frame.
    let late = server.connect("/agents/toolbox/listed").await;
    let seen = late.initial_mcp.expect("an MCP frame");
    assert_eq!(state_of(&seen, &id), "ready");
    assert_eq!(tool_names(&seen), ["add", "echo", "fail", "grow"]);
    server.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_calls_that_cannot_be_made_are_rpc_errors() {
    let mcp_server = McpServer::start().await;
    let server = agents_tests::examples().await;
    let mut client = server.connect("/agents/toolbox/errors").await;
    let (id, _) = add_ready(&mut client, "tools", &mcp_server.url("/mcp")).await;
    let cases = [
        (json!(["nope", "add", {}]), "MCP server nope not found".to_owned()),
        (json!([id, "nope", {}]), format!("MCP server tools ({id}) has no tool named \"nope\"")),
        (
            json!([id, "add", [1, 2]]),
            "the arguments of a tool call must be a JSON object, not an array".to_owned(),
        ),
    ];
    for (args, expected) in cases {
        let error = call(&mut client, "callTool", args.clone()).await.expect_err("an error");
        assert_eq!(error, expected, "{args}");
    }
    // Arguments the tool's schema refuses: the server says so, as a tool error.
    let refused = call(&mut client, "callTool", json!([id, "add", { "a": "x" }])).await;
    let refused = refused.expect("the server answers");
    assert_eq!(refused["isError"], true, "{refused}");
    // Bad servers: refused before anything is stored or connected.
    for (name, url, expected) in [
        ("", mcp_server.url("/mcp"), "an MCP server needs a name"),
        ("a", "http://10.0.0.1/mcp".to_owned(), "Blocked URL"),
        ("a", "http://169.254.169.254/".to_owned(), "Blocked URL"),
        ("a", "ftp://example.com/mcp".to_owned(), "the scheme must be http or https"),
        ("a", "not a url".to_owned(), "invalid MCP server URL"),
    ] {
        let error = call(&mut client, "addServer", json!([name, url])).await.expect_err(&url);
        assert!(error.contains(expected), "{url}: {error}");
    }
    let error = call(&mut client, "removeServer", json!(["nope"])).await.expect_err("unknown");
    assert_eq!(error, "MCP server nope not found");
    // The same name and URL again: the server already listed.
    let again = call(&mut client, "addServer", json!(["tools", mcp_server.url("/mcp")])).await;
    assert_eq!(again.expect("added"), json!({ "id": id, "state": "ready" }));
    server.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn older_servers_are_reached_over_sse() {
    let mcp_server = McpServer::start().await;
    let server = agents_tests::examples().await;
    let mut client = server.connect("/agents/toolbox/sse").await;
    // Streamable HTTP's first request to /sse gets 405: the SSE transport follows.
    let (id, mcp) = add_ready(&mut client, "legacy", &mcp_server.url("/sse")).await;
    assert_eq!(tool_names(&mcp), ["add", "echo", "fail", "grow"]);
    let echoed = call(&mut client, "callTool", json!([id, "echo", { "text": "über" }])).await;
    assert_eq!(echoed.expect("called")["content"][0]["text"], "über");
    server.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_is_down_fails_and_the_agent_keeps_serving() {
    let mcp_server = McpServer::start().await;
    let server = agents_tests::examples().await;
    let mut client = server.connect("/agents/toolbox/down").await;
    let url = format!("http://127.0.0.1:{}/mcp", closed_port());
    let added = call(&mut client, "addServer", json!(["down", url])).await.expect("added");
    let id = added["id"].as_str().expect("an id").to_owned();
    // Other calls are answered while it tries to connect.
    assert_eq!(call(&mut client, "listTools", json!([])).await, Ok(json!([])));
    let mcp =
        mcp_until(&mut client, "the server failed", |mcp| state_of(mcp, &id) == "failed").await;
    let error = mcp["servers"][&id]["error"].as_str().expect("an error");
    assert!(error.contains("Connection refused"), "{error}");
    let call_error = call(&mut client, "callTool", json!([id, "add", {}])).await.expect_err("down");
    assert!(
        call_error.starts_with(&format!("MCP server down ({id}) is not connected")),
        "{call_error}"
    );
    // The agent serves on: another server is added and used.
    let (good, _) = add_ready(&mut client, "tools", &mcp_server.url("/mcp")).await;
    let sum = call(&mut client, "callTool", json!([good, "add", { "a": 1, "b": 1 }])).await;
    assert_eq!(sum.expect("called")["content"][0]["text"], "2");
    server.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_server_updates_every_client() {
    let mcp_server = McpServer::start().await;
    let server = agents_tests::examples().await;
    let mut first = server.connect("/agents/toolbox/removal").await;
    let mut second = server.connect("/agents/toolbox/removal").await;
    let (id, _) = add_ready(&mut first, "tools", &mcp_server.url("/mcp")).await;
    mcp_until(&mut second, "the server ready", |mcp| state_of(mcp, &id) == "ready").await;
    call(&mut first, "removeServer", json!([id])).await.expect("removed");
    let empty = json!({ "prompts": [], "resources": [], "servers": {}, "tools": [] });
    for client in [&mut first, &mut second] {
        let mcp = mcp_until(client, "the server gone", |mcp| state_of(mcp, &id) == "absent").await;
        assert_eq!(mcp, empty);
    }
    let error = call(&mut first, "callTool", json!([id, "add", {}])).await.expect_err("removed");
    assert_eq!(error, format!("MCP server {id} not found"));
    assert_eq!(call(&mut second, "listTools", json!([])).await, Ok(json!([])));
    server.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_tool_list_is_listed_again() {
    let mcp_server = McpServer::start().await;
    let server = agents_tests::examples().await;
    let mut client = server.connect("/agents/toolbox/grow").await;
    let (id, _) = add_ready(&mut client, "tools", &mcp_server.url("/mcp")).await;
    let grown = call(&mut client, "callTool", json!([id, "grow", {}])).await.expect("called");
    assert_eq!(grown["content"][0]["text"], "grown-1");
    // The server tells the client its tools changed; the agent lists them again.
    let mcp =
        mcp_until(&mut client, "the new tool", |mcp| tool_names(mcp).contains(&"grown-1")).await;
    assert_eq!(tool_names(&mcp), ["add", "echo", "fail", "grow", "grown-1"]);
    let called = call(&mut client, "callTool", json!([id, "grown-1", {}])).await.expect("called");
    assert_eq!(called["content"][0]["text"], "grown-1");
    server.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_list_survives_a_restart_and_reconnects() {
    let mcp_server = McpServer::start().await;
    let dir = TempDir::new("mcp-restart");
    let child = ChildServer::start(EXAMPLES_SERVER, dir.path()).await;
    let mut client = child.server().connect("/agents/toolbox/kept").await;
    let (id, _) = add_ready(&mut client, "tools", &mcp_server.url("/mcp")).await;
    let sse = add_ready(&mut client, "legacy", &mcp_server.url("/sse")).await.0;
    drop(client);
    child.kill().await;

    let child = ChildServer::start(EXAMPLES_SERVER, dir.path()).await;
    let mut client = child.server().connect("/agents/toolbox/kept").await;
    let first = client.initial_mcp.clone().expect("an MCP frame");
    assert_eq!(first["servers"][&id]["name"], "tools", "the list is back: {first}");
    let ready = |mcp: &Value| state_of(mcp, &id) == "ready" && state_of(mcp, &sse) == "ready";
    if !ready(&first) {
        mcp_until(&mut client, "both servers ready again", ready).await;
    }
    let sum = call(&mut client, "callTool", json!([id, "add", { "a": 20, "b": 22 }])).await;
    assert_eq!(sum.expect("called")["content"][0]["text"], "42");
    let echo = call(&mut client, "callTool", json!([sse, "echo", { "text": "back" }])).await;
    assert_eq!(echo.expect("called")["content"][0]["text"], "back");
    child.kill().await;
}

/// An agent whose servers need a bearer token.
#[derive(Default)]
struct Private;

#[agent(rename_all = "camelCase")]
impl Private {
    #[callable]
    fn add(
        &mut self,
        ctx: &mut Context<Self>,
        url: String,
        token: Option<String>,
    ) -> Result<String> {
        let mut options = McpServerOptions::default();
        if let Some(token) = token {
            options = options.bearer_token(token);
        }
        Ok(ctx.mcp().add_server("private", &url, options)?.id)
    }

    #[callable]
    async fn echo(&mut self, ctx: &mut Context<Self>, id: String) -> Result<Value> {
        ctx.mcp().call_tool(&id, "echo", json!({ "text": "with a token" })).await
    }

    #[callable]
    async fn prompt(&mut self, ctx: &mut Context<Self>, id: String, args: Value) -> Result<Value> {
        ctx.mcp().get_prompt(&id, "greet", args).await
    }

    #[callable]
    async fn resource(
        &mut self,
        ctx: &mut Context<Self>,
        id: String,
        uri: String,
    ) -> Result<Value> {
        ctx.mcp().read_resource(&id, &uri).await
    }

    #[callable]
    fn lists(&mut self, ctx: &mut Context<Self>) -> Value {
        let mcp = ctx.mcp();
        json!({ "prompts": mcp.list_prompts(), "resources": mcp.list_resources() })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_headers_go_with_every_request() {
    let mcp_server = McpServer::start().await;
    let server = agents_tests::start(agents_runtime::Server::builder().agent::<Private>()).await;
    let mut client = server.connect("/agents/private/headers").await;
    let url = mcp_server.url("/private/mcp");
    let without = call(&mut client, "add", json!([url, null])).await.expect("added");
    let without = without.as_str().expect("an id").to_owned();
    let mcp = mcp_until(&mut client, "a refusal", |mcp| state_of(mcp, &without) == "failed").await;
    let error = mcp["servers"][&without]["error"].as_str().expect("an error");
    assert!(error.contains("OAuth is not supported yet"), "{error}");

    // The same server again, now with its token: the one listed is kept, with its new
    // options, and connects again.
    let id = call(&mut client, "add", json!([url, "test-token"])).await.expect("added");
    assert_eq!(id, without.as_str(), "the same server");
    let id = without;
    mcp_until(&mut client, "the server ready", |mcp| state_of(mcp, &id) == "ready").await;
    let echoed = call(&mut client, "echo", json!([id])).await.expect("called");
    assert_eq!(echoed["content"][0]["text"], "with a token");

    // Prompts and resources, through the same session.
    let lists = call(&mut client, "lists", json!([])).await.expect("listed");
    assert_eq!(lists["prompts"][0]["name"], "greet");
    assert_eq!(lists["prompts"][0]["serverId"], id.as_str());
    assert_eq!(lists["resources"][0]["uri"], "info://server");
    let prompt = call(&mut client, "prompt", json!([id, { "name": "Ada" }])).await;
    let prompt = prompt.expect("got the prompt");
    assert_eq!(prompt["messages"][0]["content"]["text"], "Hello, Ada!", "{prompt}");
    let error = call(&mut client, "prompt", json!([id, "Ada"])).await.expect_err("not an object");
    assert_eq!(error, "the arguments of a prompt must be a JSON object, not a string");
    let info = call(&mut client, "resource", json!([id, "info://server"])).await;
    assert_eq!(info.expect("read")["contents"][0]["text"], "test-tools 1.0.0");
    let missing = call(&mut client, "resource", json!([id, "info://nothing"])).await;
    let missing = missing.expect_err("no such resource");
    assert!(missing.starts_with("MCP server private answered with an error: "), "{missing}");
    server.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_to_servers_outlive_hibernation() {
    let mcp_server = McpServer::start().await;
    let builder = agents_examples::server().hibernate_after(Duration::from_millis(100));
    let server = agents_tests::start(builder).await;
    let mut client = server.connect("/agents/toolbox/sleepy").await;
    let (id, _) = add_ready(&mut client, "tools", &mcp_server.url("/mcp")).await;
    agents_tests::eventually("the instance hibernated", || {
        server.handle.hibernated_instances() == 1
    })
    .await;
    // A new connection wakes it: the server is ready at once, no new connection made.
    let late = server.connect("/agents/toolbox/sleepy").await;
    assert_eq!(state_of(late.initial_mcp.as_ref().expect("an MCP frame"), &id), "ready");
    let sum = call(&mut client, "callTool", json!([id, "add", { "a": 3, "b": 4 }])).await;
    assert_eq!(sum.expect("called")["content"][0]["text"], "7");
    server.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_server_is_failed_and_sleeping_clients_are_told() {
    let mcp_server = McpServer::start().await;
    let builder = agents_examples::server().hibernate_after(Duration::from_millis(100));
    let server = agents_tests::start(builder).await;
    let mut client = server.connect("/agents/toolbox/lost").await;
    let (sse, _) = add_ready(&mut client, "legacy", &mcp_server.url("/sse")).await;
    let (http, _) = add_ready(&mut client, "tools", &mcp_server.url("/mcp")).await;
    agents_tests::eventually("the instance hibernated", || {
        server.handle.hibernated_instances() == 1
    })
    .await;
    // The server goes away while the instance sleeps. The SSE session ends with its event
    // stream, and the client hears of it without the agent waking (a parked socket resumes
    // to write the frame).
    drop(mcp_server);
    let mcp =
        mcp_until(&mut client, "the SSE server failed", |mcp| state_of(mcp, &sse) == "failed")
            .await;
    let error = mcp["servers"][&sse]["error"].as_str().expect("an error");
    assert_eq!(error, "Connection closed by the MCP server");
    assert!(tool_names(&mcp).len() == 4, "only the streamable HTTP server's tools are left: {mcp}");
    assert_eq!(server.handle.hibernated_instances(), 1, "the agent did not wake for it");
    // A streamable HTTP session has no stream to lose between requests: the next request
    // finds it gone, and the server is failed.
    let error = call(&mut client, "callTool", json!([http, "add", { "a": 1, "b": 2 }])).await;
    let error = error.expect_err("gone");
    assert!(error.starts_with("MCP server tools is unreachable"), "{error}");
    let mcp =
        mcp_until(&mut client, "the HTTP server failed", |mcp| state_of(mcp, &http) == "failed")
            .await;
    let error = mcp["servers"][&http]["error"].as_str().expect("an error");
    assert!(error.starts_with("Connection lost: "), "{error}");
    assert_eq!(mcp["tools"], json!([]), "a failed server's tools are gone");
    let error = call(&mut client, "callTool", json!([http, "add", {}])).await.expect_err("lost");
    assert!(error.contains("is not connected"), "{error}");
    server.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_servers_can_be_refused() {
    let mcp_server = McpServer::start().await;
    let builder = agents_examples::server().allow_loopback_mcp_servers(false);
    let server = agents_tests::start(builder).await;
    let mut client = server.connect("/agents/toolbox/no-loopback").await;
    let error = call(&mut client, "addServer", json!(["tools", mcp_server.url("/mcp")])).await;
    let error = error.expect_err("an address on loopback");
    assert!(error.starts_with("Blocked URL: http://127.0.0.1:"), "{error}");
    // A name is checked when it resolves, at every request.
    let url = format!("http://localhost:{}/mcp", mcp_server.port());
    let added = call(&mut client, "addServer", json!(["tools", url])).await.expect("added");
    let id = added["id"].as_str().expect("an id").to_owned();
    let mcp =
        mcp_until(&mut client, "the server failed", |mcp| state_of(mcp, &id) == "failed").await;
    let error = mcp["servers"][&id]["error"].as_str().expect("an error");
    assert!(error.contains("Blocked URL: localhost (which resolves to "), "{error}");
    server.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_of_the_stateless_protocol_are_reached() {
    let mcp_server = McpServer::start().await;
    let server = agents_tests::examples().await;
    let mut client = server.connect("/agents/toolbox/modern").await;
    // A 2026-07-28 server that refuses `initialize`: the client starts with `server/discover`.
    let (id, mcp) = add_ready(&mut client, "modern", &mcp_server.url("/modern/mcp")).await;
    assert_eq!(mcp["servers"][&id]["instructions"], "Stateless tools for the agents-rs tests.");
    assert_eq!(tool_names(&mcp), ["add"]);
    let sum = call(&mut client, "callTool", json!([id, "add", { "a": 40, "b": 2 }])).await;
    assert_eq!(sum.expect("called")["content"][0]["text"], "42");
    server.shut_down().await;
}
