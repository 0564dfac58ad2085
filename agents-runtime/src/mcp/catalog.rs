//! What a server offers: its instructions, capabilities, tools, prompts and resources, listed
//! page by page as the SDK lists them, each item tagged with its server's id, within bounds a
//! server cannot push past (every client gets the lists in the `cf_agent_mcp_servers` frame).

use std::future::Future;

use rmcp::RoleClient;
use rmcp::model::{ErrorCode, PaginatedRequestParams};
use rmcp::service::{Peer, ServiceError};
use serde::Serialize;
use serde_json::Value;

use super::http::error_chain;
use super::table::Live;

/// The most pages one list may take.
const MAX_PAGES: usize = 64;
/// The most items one list may hold.
const MAX_ITEMS: usize = 1024;
/// The most bytes a server's instructions and lists may take in the frame.
const MAX_CATALOG_BYTES: usize = 1 << 20;

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

    /// The bytes it takes in the frame.
    fn size(&self) -> usize {
        let instructions = self.instructions.as_ref().map_or(0, String::len);
        [
            instructions,
            json_len(&self.capabilities),
            json_len(&self.tools),
            json_len(&self.prompts),
            json_len(&self.resources),
        ]
        .into_iter()
        .fold(0, usize::saturating_add)
    }
}

fn json_len<T: Serialize>(value: &T) -> usize {
    serde_json::to_vec(value).map_or(usize::MAX, |json| json.len())
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
        found.tools = all("tools", server_id, |params| async {
            peer.list_tools(params).await.map(|page| (page.tools, page.next_cursor))
        })
        .await?;
    }
    if caps.prompts.is_some() {
        found.prompts = all("prompts", server_id, |params| async {
            peer.list_prompts(params).await.map(|page| (page.prompts, page.next_cursor))
        })
        .await?;
    }
    if caps.resources.is_some() {
        found.resources = all("resources", server_id, |params| async {
            peer.list_resources(params).await.map(|page| (page.resources, page.next_cursor))
        })
        .await?;
    }
    if found.size() > MAX_CATALOG_BYTES {
        return Err(format!(
            "the server's instructions and lists take more than {MAX_CATALOG_BYTES} bytes"
        ));
    }
    Ok(found)
}

/// Every page of a list, as JSON objects with `serverId`.
async fn all<T, F, Fut>(what: &str, server_id: &str, mut page: F) -> Result<Vec<Value>, String>
where
    T: Serialize,
    F: FnMut(Option<PaginatedRequestParams>) -> Fut,
    Fut: Future<Output = Result<(Vec<T>, Option<String>), ServiceError>>,
{
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    for pages in 1.. {
        if pages > MAX_PAGES {
            return Err(format!("the server lists its {what} in more than {MAX_PAGES} pages"));
        }
        let params = cursor.take().map(|c| PaginatedRequestParams::default().with_cursor(Some(c)));
        let (batch, next) = match page(params).await {
            Ok(found) => found,
            Err(ServiceError::McpError(e)) if e.code == ErrorCode::METHOD_NOT_FOUND => break,
            Err(e) => return Err(format!("listing its {what}: {}", error_chain(&e))),
        };
        if items.len() + batch.len() > MAX_ITEMS {
            return Err(format!("the server lists more than {MAX_ITEMS} {what}"));
        }
        for item in batch {
            let mut value = serde_json::to_value(item).map_err(|e| e.to_string())?;
            if let Value::Object(object) = &mut value {
                object.insert("serverId".into(), server_id.into());
            }
            items.push(value);
        }
        match next {
            Some(next) if !next.is_empty() => cursor = Some(next),
            _ => break,
        }
    }
    Ok(items)
}
