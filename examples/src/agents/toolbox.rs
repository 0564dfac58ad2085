//! `Toolbox`: an agent that uses the tools of remote MCP servers, as an agent built on the
//! Cloudflare SDK does with `this.addMcpServer` and `this.mcp.callTool`. Its clients add
//! servers by URL, see them (and their tools) in the `cf_agent_mcp_servers` frame, and call
//! the tools through it.

use agents_runtime::TypeScript;
use agents_runtime::mcp::{AddMcpServerResult, McpServerOptions};
use agents_runtime::prelude::*;
use serde::{Deserialize, Serialize};

// ANCHOR: toolbox
/// A tool of a ready server, as `listTools` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, TypeScript)]
#[serde(rename_all = "camelCase")]
pub struct ToolInfo {
    /// The id of the server that has it.
    pub server_id: String,
    /// Its name, for `callTool`.
    pub name: String,
    /// What it does, if the server says.
    pub description: Option<String>,
}

/// Remote MCP servers and their tools, per instance; see the module documentation.
#[derive(Default)]
pub struct Toolbox;

#[agent(rename_all = "camelCase", typescript)]
impl Toolbox {
    /// Adds the MCP server at `url` (streamable HTTP, or SSE for older servers) and starts
    /// connecting to it; returns its id and state (`connecting`). Clients follow it to
    /// `ready` (or `failed`) in `cf_agent_mcp_servers`.
    #[callable(description = "Adds an MCP server by name and URL")]
    fn add_server(
        &mut self,
        ctx: &mut Context<Self>,
        name: String,
        url: String,
    ) -> Result<AddMcpServerResult> {
        ctx.mcp().add_server(&name, &url, McpServerOptions::default())
    }

    /// Removes server `id`: its connection closes and every client is told.
    #[callable(description = "Removes an MCP server")]
    fn remove_server(&mut self, ctx: &mut Context<Self>, id: String) -> Result<()> {
        ctx.mcp().remove_server(&id)
    }

    /// The tools of every ready server.
    #[callable(description = "Lists the tools of every ready MCP server")]
    fn list_tools(&mut self, ctx: &mut Context<Self>) -> Vec<ToolInfo> {
        let tools = ctx.mcp().list_tools();
        tools
            .into_iter()
            .map(|tool| ToolInfo {
                server_id: tool.server_id,
                name: tool.name,
                description: tool.description,
            })
            .collect()
    }

    /// Calls tool `name` of server `server_id` with `args` (an object); returns the MCP
    /// `CallToolResult` (`content`, `structuredContent`, `isError`).
    #[callable(description = "Calls a tool of an MCP server")]
    async fn call_tool(
        &mut self,
        ctx: &mut Context<Self>,
        server_id: String,
        name: String,
        args: Option<serde_json::Value>,
    ) -> Result<serde_json::Value> {
        let args = args.unwrap_or(serde_json::Value::Null);
        ctx.mcp().call_tool(&server_id, &name, args).await
    }
}
// ANCHOR_END: toolbox
