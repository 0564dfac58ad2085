//! The public types of `ctx.mcp()`: connection states, transports, options, and the shape of
//! the `cf_agent_mcp_servers` frame (the SDK's `MCPServersState`).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The most MCP servers one instance may add.
pub const MAX_MCP_SERVERS: usize = 32;

/// Where a connection to an MCP server stands (`MCPConnectionState`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum McpConnectionState {
    /// The server requires OAuth, which this runtime does not run yet.
    Authenticating,
    /// The connection is being made (the transport, then MCP's `initialize`).
    Connecting,
    /// Connected; its tools, prompts and resources are listed next.
    Connected,
    /// Listing the server's tools, prompts and resources.
    Discovering,
    /// Connected and listed: its tools can be called.
    Ready,
    /// The connection failed or was lost; the error says why. It is tried again when the
    /// instance starts or wakes.
    Failed,
    /// On the list, with no connection under way.
    NotConnected,
}

impl McpConnectionState {
    /// The name the SDK and the `cf_agent_mcp_servers` frame use: `ready`, `failed`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Authenticating => "authenticating",
            Self::Connecting => "connecting",
            Self::Connected => "connected",
            Self::Discovering => "discovering",
            Self::Ready => "ready",
            Self::Failed => "failed",
            Self::NotConnected => "not-connected",
        }
    }

    /// Whether a connection is under way (the state will change by itself).
    pub fn is_pending(self) -> bool {
        matches!(self, Self::Connecting | Self::Connected | Self::Discovering)
    }
}

impl fmt::Display for McpConnectionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which transport reaches a server (`transport.type`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum McpTransport {
    /// Streamable HTTP first; SSE if the server answers it with 404 or 405.
    #[default]
    Auto,
    /// Streamable HTTP only.
    StreamableHttp,
    /// HTTP with server-sent events only (the older transport).
    Sse,
}

/// How to reach a server: its transport and the headers sent with every request.
///
/// ```
/// use agents_runtime::mcp::{McpServerOptions, McpTransport};
///
/// let options = McpServerOptions::default()
///     .bearer_token("secret")
///     .header("CF-Access-Client-Id", "id")
///     .transport(McpTransport::StreamableHttp);
/// # let _ = options;
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct McpServerOptions {
    /// The transport; [`McpTransport::Auto`] by default.
    #[serde(default)]
    pub transport: McpTransport,
    /// Headers for every request (`transport.headers`): at most 32 names, each once, of 8 KiB
    /// in all; not the ones the transports set themselves (`Accept`, `Content-Type`,
    /// `Mcp-Session-Id`, ...).
    #[serde(default)]
    pub headers: Vec<(String, String)>,
}

impl McpServerOptions {
    /// Uses `transport`.
    pub fn transport(mut self, transport: McpTransport) -> Self {
        self.transport = transport;
        self
    }

    /// Adds a header sent with every request.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Adds `Authorization: Bearer {token}`.
    pub fn bearer_token(self, token: impl fmt::Display) -> Self {
        self.header("Authorization", format!("Bearer {token}"))
    }
}

/// What adding a server returns (`{ id, state }`): its id, and `connecting` while the
/// connection is made in the background.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddMcpServerResult {
    /// The server's id, for tool calls and
    /// [`remove_server`](super::McpClientManager::remove_server).
    pub id: String,
    /// Its state now.
    pub state: McpConnectionState,
}

/// One server in [`McpServersState`] (the SDK's `MCPServer`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct McpServer {
    /// Where to authorize, for OAuth (always `None` here: OAuth is not supported yet).
    pub auth_url: Option<String>,
    /// The server's capabilities, from its `initialize` answer.
    pub capabilities: Option<Value>,
    /// Why it failed, if it did (at most 500 characters, control characters removed).
    pub error: Option<String>,
    /// The server's instructions, from its `initialize` answer.
    pub instructions: Option<String>,
    /// The name it was added with.
    pub name: String,
    /// Its URL.
    pub server_url: String,
    /// Where its connection stands.
    pub state: McpConnectionState,
}

/// The agent's MCP servers and what they offer (`getMcpServers()`, the SDK's
/// `MCPServersState`): the payload of the `cf_agent_mcp_servers` frame.
///
/// Tools, prompts and resources are the MCP objects as the servers listed them, each with a
/// `serverId`. (Fields in the order the SDK sends them.)
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct McpServersState {
    /// The prompts of every ready server.
    pub prompts: Vec<Value>,
    /// The resources of every ready server.
    pub resources: Vec<Value>,
    /// The servers, by id.
    pub servers: BTreeMap<String, McpServer>,
    /// The tools of every ready server.
    pub tools: Vec<Value>,
}

/// A tool of a ready server, as
/// [`McpClientManager::list_tools`](super::McpClientManager::list_tools) lists it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct McpTool {
    /// The id of the server that has it.
    pub server_id: String,
    /// Its name, for [`McpClientManager::call_tool`](super::McpClientManager::call_tool).
    pub name: String,
    /// What it does, if the server says.
    pub description: Option<String>,
    /// The JSON Schema of its arguments.
    pub input_schema: Value,
}
