//! `ctx.mcp()`: the agent as a client of remote MCP (Model Context Protocol) servers, as
//! `this.mcp`, `addMcpServer` and `getMcpServers` in the Cloudflare Agents SDK.
//!
//! Each instance keeps the list of servers it added in its storage and connects to them in the
//! background: adding a server returns at once, in state `connecting`, and the instance goes on
//! with its turns while the connection is made and the server's tools, prompts and resources
//! are listed. Every change reaches the protocol-enabled connections as a
//! `cf_agent_mcp_servers` frame (what `useAgent`'s `onMcpUpdate` receives). The connections
//! outlive hibernation; when the instance starts again (after a restart of the server, or after
//! it left memory) it connects again to every server on its list.
//!
//! The transports are the SDK's: streamable HTTP, and the older HTTP with server-sent events
//! (SSE), tried when a server answers streamable HTTP's first request with 404 or 405.
//! Custom headers (a bearer token, say) go with every request. OAuth is not supported yet: a
//! server that asks for it (401) fails with an error that says so.

mod catalog;
mod clients;
mod connection;
mod http;
mod manager;
mod sse;
mod stored;
mod table;
mod types;

pub(crate) use clients::McpClients;
pub use manager::{MCP_REQUEST_TIMEOUT, McpClientManager};
pub use types::{
    AddMcpServerResult, MAX_MCP_SERVERS, McpConnectionState, McpServer, McpServerOptions,
    McpServersState, McpTool, McpTransport,
};
