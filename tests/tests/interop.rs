//! The official npm clients (`agents` AgentClient, `partysocket`) run unchanged under Node
//! against a real examples server, and a TypeScript front end compiles with `tsc` against the
//! declarations agents-rs generates. The packages are installed from
//! `tests/js/package-lock.json` the first time (`npm ci`); Node 20+ and npm must be on the PATH.

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use agents_tests::child::ChildServer;
use agents_tests::node::{McpServer, describe, npm_ci, run};

/// `tests/js`, installed once per test run.
fn npm_packages() -> &'static Path {
    static INSTALLED: OnceLock<std::path::PathBuf> = OnceLock::new();
    INSTALLED.get_or_init(|| npm_ci("tests/js"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_agents_client_works_unchanged() {
    let server = agents_tests::start(agents_examples::server()).await;
    // For the tests of the MCP frame (`onMcpUpdate`).
    let mcp_server = McpServer::start().await;
    run_interop(&server.addr.to_string(), &mcp_server.url("/mcp")).await;
}

/// Runs `interop.test.mjs` with `hosts` (comma-separated) and `mcp_url`.
async fn run_interop(hosts: &str, mcp_url: &str) {
    let mut node = tokio::process::Command::new("node");
    node.args(["--test", "--test-reporter=spec", "interop.test.mjs"])
        .current_dir(npm_packages())
        .env("AGENTS_HOSTS", hosts)
        .env("MCP_SERVER_URL", mcp_url)
        .kill_on_drop(true);
    let output = tokio::time::timeout(std::time::Duration::from_secs(120), node.output())
        .await
        .expect("the Node tests finish within two minutes")
        .expect("node runs");
    println!("{}", String::from_utf8_lossy(&output.stdout));
    assert!(output.status.success(), "the Node interop tests failed:\n{}", describe(&output));
}

/// The same tests through a cluster of three nodes: each client connects to the next node in
/// turn, so the clients of one agent meet through different nodes and the relay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_agents_client_works_through_any_node_of_a_cluster() {
    let Some(postgres) = agents_tests::postgres("interop through a cluster") else { return };
    let url = postgres.database();
    let mcp_server = McpServer::start().await;
    let mut nodes = Vec::new();
    let mut dirs = Vec::new();
    for i in 0..3 {
        let dir = agents_tests::TempDir::new("interop-node");
        let id = format!("n{i}");
        let args = ["--cluster-url", url.as_str(), "--node-id", &id, "--cluster-lease", "3s"];
        nodes.push(
            ChildServer::start_args(env!("CARGO_BIN_EXE_examples-server"), dir.path(), &args).await,
        );
        dirs.push(dir);
    }
    let hosts: Vec<String> = nodes.iter().map(|node| node.addr.to_string()).collect();
    run_interop(&hosts.join(","), &mcp_server.url("/mcp")).await;
}

#[test]
fn generated_typescript_types_an_official_client_front_end() {
    // Linking the examples registers their agents; this is what `agents-examples typescript` writes.
    let _ = agents_examples::server();
    let declarations = agents_runtime::typescript::render_all();
    for expected in [
        "export interface Counter {",
        "  readonly state: CounterState;",
        "  /** Adds one to the count and returns it */\n  increment(): Promise<number>;",
        "  add(a: number, b: number): Promise<number>;",
        "  fail(): Promise<void>;",
        "  streamNumbers(count: number): Promise<unknown>;",
        "export interface CounterState {",
        "  count: number;",
        "export interface TagsAgent {\n  notifyAdmins(message: string): Promise<number>;\n}",
        "  addServer(name: string, url: string): Promise<AddMcpServerResult>;",
        "export interface AddMcpServerResult {\n  id: string;\n  state: McpConnectionState;\n}",
        "export type McpConnectionState = \"authenticating\" | \"connecting\" | \"connected\" | \"discovering\" | \"ready\" | \"failed\" | \"not-connected\";",
    ] {
        assert!(declarations.contains(expected), "missing `{expected}` in:\n{declarations}");
    }
    let dir = npm_packages();
    std::fs::create_dir_all(dir.join("generated")).expect("creates generated/");
    std::fs::write(dir.join("generated/agents.ts"), &declarations)
        .expect("writes the declarations");
    let tsc = dir.join("node_modules/typescript/bin/tsc");
    let output =
        run(Command::new("node").arg(tsc).args(["-p", "tsconfig.json"]).current_dir(dir), "tsc");
    assert!(output.status.success(), "tsc rejected the typed front end:\n{}", describe(&output));
}
