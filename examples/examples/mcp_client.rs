//! An agent that connects itself to an MCP server behind a token (the book's MCP chapter):
//! `on_start` adds the server the environment names, with its bearer token, and a callable
//! asks it for a prompt and a resource.
//!
//! `MCP_URL=https://mcp.example.com/mcp MCP_TOKEN=… cargo run -p agents-examples --example
//! mcp_client`, then call `greet(name)` on `ws://127.0.0.1:8787/agents/assistant/{name}`.

use agents_runtime::mcp::{McpServerOptions, McpTransport};
use agents_runtime::prelude::*;
use serde_json::{Value, json};

// ANCHOR: assistant
#[derive(Default)]
struct Assistant;

#[agent(rename_all = "camelCase")]
impl Assistant {
    /// Adds the server on every start: the same name and URL give back the one listed (with
    /// the token of this start, if it changed; a server that failed is tried again on every
    /// start anyway).
    async fn on_start(&mut self, ctx: &mut Context<Self>) -> Result<()> {
        let (Ok(url), Ok(token)) = (std::env::var("MCP_URL"), std::env::var("MCP_TOKEN")) else {
            return Ok(());
        };
        let options = McpServerOptions::default()
            .bearer_token(token) // Authorization: Bearer …
            .header("X-Client", "agents-rs") // any header, with every request
            .transport(McpTransport::Auto); // the default: streamable HTTP, else SSE
        ctx.mcp().add_server("tools", &url, options)?;
        Ok(())
    }

    /// The `greet` prompt and the `info://server` resource of the first server that has them.
    #[callable]
    async fn greet(&mut self, ctx: &mut Context<Self>, name: String) -> Result<Value> {
        let mcp = ctx.mcp();
        mcp.wait_for_connections(std::time::Duration::from_secs(10)).await;
        let Some(server) = mcp.get_servers().servers.into_keys().next() else {
            return Err(Error::msg("no MCP server: set MCP_URL and MCP_TOKEN"));
        };
        let prompt = mcp.get_prompt(&server, "greet", json!({ "name": name })).await?;
        let info = mcp.read_resource(&server, "info://server").await?;
        Ok(json!({ "prompt": prompt, "info": info }))
    }
}
// ANCHOR_END: assistant

#[tokio::main]
async fn main() -> Result<()> {
    Server::builder().agent::<Assistant>().bind("127.0.0.1:8787").await?.run().await
}
