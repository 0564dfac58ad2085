//! [`McpClientManager`]: what `ctx.mcp()` gives a hook (`this.mcp`, `this.addMcpServer`,
//! `this.removeMcpServer`, `this.getMcpServers`).

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use rmcp::RoleClient;
use rmcp::model::{
    CallToolRequestParams, GetPromptRequestParams, JsonObject, ReadResourceRequestParams,
};
use rmcp::service::{Peer, ServiceError};
use serde_json::Value;
use tokio::time::Instant;

use super::clients::McpClients;
use super::connection;
use super::http::{error_chain, parse_headers, parse_server_url};
use super::stored::{self, StoredServer};
use super::table::{Shared, Snapshot};
use super::types::{
    AddMcpServerResult, MAX_MCP_SERVERS, McpConnectionState, McpServerOptions, McpServersState,
    McpTool,
};
use crate::error::{Error, Result};
use crate::instance::directory::Directory;
use crate::instance::shared::Instance;

/// How long a call to a server may take, waiting for it to be ready included (the MCP SDK's
/// default request timeout).
pub const MCP_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest server name accepted, in bytes.
const MAX_NAME_LEN: usize = 256;

/// The instance's MCP client manager: add and remove servers, see their state, use their
/// tools, prompts and resources. Got from [`Context::mcp`](crate::Context::mcp).
///
/// Adding a server returns at once; the connection is made in the background, and every
/// change of state reaches clients in a `cf_agent_mcp_servers` frame. A call to a server
/// that is still connecting waits for it (up to [`MCP_REQUEST_TIMEOUT`]); while a call
/// waits, the instance's turn does too, as any `await` in a hook.
///
/// ```no_run
/// use agents_runtime::mcp::McpServerOptions;
/// use agents_runtime::prelude::*;
///
/// #[derive(Default)]
/// struct Assistant;
///
/// #[agent]
/// impl Assistant {
///     #[callable]
///     fn connect_github(&mut self, ctx: &mut Context<Self>, token: String) -> Result<String> {
///         let options = McpServerOptions::default().bearer_token(token);
///         let added = ctx.mcp().add_server("github", "https://api.githubcopilot.com/mcp/", options)?;
///         Ok(added.id)
///     }
///
///     #[callable]
///     async fn weather(&mut self, ctx: &mut Context<Self>, server: String, city: String) -> Result<serde_json::Value> {
///         ctx.mcp().call_tool(&server, "get_weather", serde_json::json!({ "city": city })).await
///     }
/// }
/// ```
pub struct McpClientManager<'a> {
    clients: &'a mut McpClients,
    directory: &'a Directory,
    instance: &'a Arc<Instance>,
}

impl<'a> McpClientManager<'a> {
    pub(crate) fn new(
        clients: &'a mut McpClients,
        directory: &'a Directory,
        instance: &'a Arc<Instance>,
    ) -> Self {
        Self { clients, directory, instance }
    }

    /// Adds a server by name and URL (`addMcpServer(name, url, options)`), keeps it on the
    /// instance's list, and starts connecting to it. Returns its id and state (`connecting`).
    /// The same name and URL again give the server already listed; with other options (a new
    /// token, say), it is stored with them and connects again.
    ///
    /// Errors: an empty or over-long name, a URL that is not `http(s)` or names a private
    /// address, a header HTTP does not allow, more than [`MAX_MCP_SERVERS`] servers, or a
    /// storage failure.
    pub fn add_server(
        &mut self,
        name: &str,
        url: &str,
        options: McpServerOptions,
    ) -> Result<AddMcpServerResult> {
        check_name(name)?;
        parse_server_url(url, self.directory.limits.mcp_loopback).map_err(Error::msg)?;
        parse_headers(&options.headers).map_err(Error::msg)?;
        let shared = self.clients.shared(self.directory, self.instance)?;
        let (count, existing) = shared.find(name, url, &options);
        if let Some((id, listed)) = existing {
            if listed.options_match && listed.state != McpConnectionState::Failed {
                return Ok(AddMcpServerResult { id, state: listed.state });
            }
            if listed.options_match {
                // Added again after it failed: it is tried again.
                if let Some((server, generation)) = shared.renew(&id, None) {
                    connection::connect(shared, server, generation);
                }
                return Ok(AddMcpServerResult { id, state: McpConnectionState::Connecting });
            }
            let server =
                StoredServer { id, name: name.to_owned(), server_url: url.to_owned(), options };
            stored::save(self.instance, &server)?;
            let id = server.id.clone();
            if let Some((server, generation)) = shared.renew(&id, Some(server)) {
                connection::connect(shared, server, generation);
            }
            return Ok(AddMcpServerResult { id, state: McpConnectionState::Connecting });
        }
        if count >= MAX_MCP_SERVERS {
            return Err(Error::msg(format!(
                "this agent has {MAX_MCP_SERVERS} MCP servers, the most it may have"
            )));
        }
        let server = StoredServer {
            id: new_id(),
            name: name.to_owned(),
            server_url: url.to_owned(),
            options,
        };
        stored::save(self.instance, &server)?;
        let id = server.id.clone();
        let generation = shared.insert(server.clone());
        connection::connect(shared, server, generation);
        Ok(AddMcpServerResult { id, state: McpConnectionState::Connecting })
    }

    /// Removes server `id` (`removeMcpServer(id)`): its connection closes and it leaves the
    /// instance's list. Errors if there is no such server.
    pub fn remove_server(&mut self, id: &str) -> Result<()> {
        let Some(shared) = self.clients.get() else { return Err(not_found(id)) };
        if shared.snapshot(id).is_none() {
            return Err(not_found(id));
        }
        stored::delete(self.instance, id)?;
        shared.remove(id);
        Ok(())
    }

    /// The servers and what the ready ones offer (`getMcpServers()`): what clients receive in
    /// `cf_agent_mcp_servers`.
    pub fn get_servers(&self) -> McpServersState {
        self.clients.get().map(|shared| shared.state()).unwrap_or_default()
    }

    /// The tools of every ready server (`this.mcp.listTools()`).
    pub fn list_tools(&self) -> Vec<McpTool> {
        let tools = self.get_servers().tools;
        tools.into_iter().filter_map(|tool| serde_json::from_value(tool).ok()).collect()
    }

    /// The prompts of every ready server, as MCP `Prompt` objects with `serverId`.
    pub fn list_prompts(&self) -> Vec<Value> {
        self.get_servers().prompts
    }

    /// The resources of every ready server, as MCP `Resource` objects with `serverId`.
    pub fn list_resources(&self) -> Vec<Value> {
        self.get_servers().resources
    }

    /// Calls tool `name` of server `server_id` with `arguments` (a JSON object, or null for
    /// none) and returns the MCP `CallToolResult` (`content`, `structuredContent`, `isError`).
    /// A tool that fails answers with `isError: true`; an unknown server or tool, arguments
    /// that are not an object, or a server that cannot be reached is an error.
    pub async fn call_tool(&self, server_id: &str, name: &str, arguments: Value) -> Result<Value> {
        let deadline = Instant::now() + MCP_REQUEST_TIMEOUT;
        let (server, peer) = self.ready(server_id, deadline).await?;
        let listed = self.clients.get().is_some_and(|shared| shared.has_tool(server_id, name));
        if !listed {
            return Err(Error::msg(format!(
                "MCP server {} ({server_id}) has no tool named {name:?}",
                server.name
            )));
        }
        let mut params = CallToolRequestParams::new(name.to_owned());
        params.arguments = arguments_object(arguments, "a tool call")?;
        let result = self.request(server_id, &server, deadline, peer.call_tool(params)).await?;
        Ok(serde_json::to_value(result)?)
    }

    /// Reads resource `uri` of server `server_id`; returns the MCP `ReadResourceResult`
    /// (`contents`).
    pub async fn read_resource(&self, server_id: &str, uri: &str) -> Result<Value> {
        let deadline = Instant::now() + MCP_REQUEST_TIMEOUT;
        let (server, peer) = self.ready(server_id, deadline).await?;
        let params = ReadResourceRequestParams::new(uri);
        let result = self.request(server_id, &server, deadline, peer.read_resource(params)).await?;
        Ok(serde_json::to_value(result)?)
    }

    /// Gets prompt `name` of server `server_id` with `arguments` (an object of strings, or
    /// null); returns the MCP `GetPromptResult` (`description`, `messages`).
    pub async fn get_prompt(&self, server_id: &str, name: &str, arguments: Value) -> Result<Value> {
        let deadline = Instant::now() + MCP_REQUEST_TIMEOUT;
        let (server, peer) = self.ready(server_id, deadline).await?;
        let mut params = GetPromptRequestParams::new(name);
        params.arguments = arguments_object(arguments, "a prompt")?;
        let result = self.request(server_id, &server, deadline, peer.get_prompt(params)).await?;
        Ok(serde_json::to_value(result)?)
    }

    /// Waits until no connection is under way (`waitForConnections`), or `timeout` passed.
    pub async fn wait_for_connections(&self, timeout: Duration) {
        let Some(shared) = self.clients.get() else { return };
        let _ = tokio::time::timeout(timeout, async {
            loop {
                let news = shared.news();
                tokio::pin!(news);
                news.as_mut().enable();
                if !shared.any_pending() {
                    return;
                }
                news.await;
            }
        })
        .await;
    }

    /// Server `id` once it is ready, with its session; waits while it connects.
    async fn ready(&self, id: &str, deadline: Instant) -> Result<(Snapshot, Peer<RoleClient>)> {
        let shared: &Arc<Shared> = self.clients.get().ok_or_else(|| not_found(id))?;
        loop {
            let news = shared.news();
            tokio::pin!(news);
            news.as_mut().enable();
            let mut server = shared.snapshot(id).ok_or_else(|| not_found(id))?;
            let name = &server.name;
            match server.state {
                McpConnectionState::Ready => {
                    if let Some(peer) = server.peer.take() {
                        return Ok((server, peer));
                    }
                }
                McpConnectionState::Failed => {
                    let why = server.error.as_deref().unwrap_or("unknown error");
                    return Err(Error::msg(format!(
                        "MCP server {name} ({id}) is not connected: {why}"
                    )));
                }
                state if !state.is_pending() => {
                    return Err(Error::msg(format!("MCP server {name} ({id}) is {state}")));
                }
                _ => {}
            }
            if tokio::time::timeout_at(deadline, news).await.is_err() {
                let state = server.state;
                return Err(Error::msg(format!(
                    "MCP server {name} ({id}) is still {state} after {} s",
                    MCP_REQUEST_TIMEOUT.as_secs()
                )));
            }
        }
    }
    /// A request to ready server `id`, within `deadline`, its errors in words. A request that
    /// cannot be sent at all means the session is lost: the server is `failed`.
    async fn request<T>(
        &self,
        id: &str,
        server: &Snapshot,
        deadline: Instant,
        call: impl Future<Output = std::result::Result<T, ServiceError>>,
    ) -> Result<T> {
        let name = &server.name;
        let why = match tokio::time::timeout_at(deadline, call).await {
            Ok(Ok(result)) => return Ok(result),
            Ok(Err(ServiceError::McpError(e))) => {
                return Err(Error::msg(format!(
                    "MCP server {name} answered with an error: {}",
                    e.message
                )));
            }
            Ok(Err(e)) if connection::is_gone(&e) => {
                let why = error_chain(&e);
                if let Some(shared) = self.clients.get() {
                    shared.lose(id, server.generation, format!("Connection lost: {why}"));
                }
                why
            }
            Ok(Err(e)) => error_chain(&e),
            Err(_) => {
                let secs = MCP_REQUEST_TIMEOUT.as_secs();
                return Err(Error::msg(format!(
                    "MCP server {name} did not answer within {secs} s"
                )));
            }
        };
        Err(Error::msg(format!("MCP server {name} is unreachable: {why}")))
    }
}

/// Arguments as MCP takes them: a JSON object, or none.
fn arguments_object(arguments: Value, of: &str) -> Result<Option<JsonObject>> {
    match arguments {
        Value::Null => Ok(None),
        Value::Object(object) => Ok(Some(object)),
        other => Err(Error::msg(format!(
            "the arguments of {of} must be a JSON object, not {}",
            kind(&other)
        ))),
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn check_name(name: &str) -> Result<()> {
    if name.trim().is_empty() {
        return Err(Error::msg("an MCP server needs a name"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(Error::msg(format!("an MCP server name is at most {MAX_NAME_LEN} bytes")));
    }
    if name.chars().any(char::is_control) {
        return Err(Error::msg("an MCP server name cannot hold control characters"));
    }
    Ok(())
}

fn not_found(id: &str) -> Error {
    Error::msg(format!("MCP server {id} not found"))
}

/// A new server id: 8 characters of nanoid's alphabet, as the SDK makes them.
fn new_id() -> String {
    const ALPHABET: &[u8; 64] = b"useandom-26T198340PX75pxJACKVERYMINDBUSHWOLF_GQZbfghjklqvwyzrict";
    let mut rng = rand::rng();
    (0..8).map(|_| char::from(ALPHABET[rng.random_range(0..64)])).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_arguments_are_checked() {
        assert!(check_name("github").is_ok());
        for bad in ["", "  ", "a\u{7}b"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_name(&"n".repeat(MAX_NAME_LEN + 1)).is_err());
        assert_eq!(arguments_object(Value::Null, "x").expect("null"), None);
        let object = serde_json::json!({ "a": 1 });
        assert!(arguments_object(object, "x").expect("object").is_some());
        let error = arguments_object(serde_json::json!([1]), "a tool call").expect_err("array");
        assert_eq!(
            error.to_string(),
            "the arguments of a tool call must be a JSON object, not an array"
        );
    }

    #[test]
    fn ids_are_eight_url_safe_characters() {
        let id = new_id();
        assert_eq!(id.len(), 8);
        assert!(id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_ne!(new_id(), new_id());
    }
}
