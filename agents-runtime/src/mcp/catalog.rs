//! What a server offers: its instructions, capabilities, tools, prompts and resources, listed
//! (every page) as the SDK lists them, each item tagged with its server's id.

use rmcp::RoleClient;
use rmcp::model::ErrorCode;
use rmcp::service::{Peer, ServiceError};
use serde::Serialize;
use serde_json::Value;

use super::clients::Live;

/// A server's answers to `initialize` and to the list requests.
pub(crate) struct Discovered {
    instructions: Option<String>,
    capabilities: Option<Value>,
    tools: Vec<Value>,
    prompts: Vec<Value>,
    resources: Vec<Value>,
}

impl Discovered {
    /// Writes what was found into a server's entry.
    pub(crate) fn apply(self, live: &mut Live) {
        live.instructions = self.instructions;
        live.capabilities = self.capabilities;
        live.tools = self.tools;
        live.prompts = self.prompts;
        live.resources = self.resources;
    }
}

/// Lists what the server behind `peer` offers; a list its capabilities do not announce is
/// not asked for, and one it does not implement after all (`-32601`) is empty.
pub(crate) async fn discover(
    peer: &Peer<RoleClient>,
    server_id: &str,
) -> Result<Discovered, String> {
    let info = peer.peer_info().ok_or("The MCP Server failed to return server capabilities")?;
    let caps = &info.capabilities;
    let mut found = Discovered {
        instructions: info.instructions.clone(),
        capabilities: serde_json::to_value(caps).ok(),
        tools: Vec::new(),
        prompts: Vec::new(),
        resources: Vec::new(),
    };
    if caps.tools.is_some() {
        found.tools = tagged(optional(peer.list_all_tools().await)?, server_id)?;
    }
    if caps.prompts.is_some() {
        found.prompts = tagged(optional(peer.list_all_prompts().await)?, server_id)?;
    }
    if caps.resources.is_some() {
        found.resources = tagged(optional(peer.list_all_resources().await)?, server_id)?;
    }
    Ok(found)
}

/// A list, or none if the server does not implement the method.
fn optional<T>(listed: Result<Vec<T>, ServiceError>) -> Result<Vec<T>, String> {
    match listed {
        Ok(items) => Ok(items),
        Err(ServiceError::McpError(e)) if e.code == ErrorCode::METHOD_NOT_FOUND => Ok(Vec::new()),
        Err(e) => Err(super::sse::full_error(&e)),
    }
}

/// The items as JSON objects with `serverId`.
fn tagged<T: Serialize>(items: Vec<T>, server_id: &str) -> Result<Vec<Value>, String> {
    items
        .into_iter()
        .map(|item| {
            let mut value = serde_json::to_value(item).map_err(|e| e.to_string())?;
            if let Value::Object(object) = &mut value {
                object.insert("serverId".into(), server_id.into());
            }
            Ok(value)
        })
        .collect()
}
