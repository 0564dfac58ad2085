//! The list of MCP servers an instance added, in its storage: one record per server, written
//! in the turn that adds it (behind the output gate, as any write), deleted when it is removed.

use serde::{Deserialize, Serialize};

use super::types::McpServerOptions;
use crate::error::{Error, Result};
use crate::instance::shared::Instance;
use crate::storage::{decode_value, encode_value};

/// One server on the list (the SDK's `cf_agents_mcp_servers` row).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredServer {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) server_url: String,
    #[serde(default)]
    pub(crate) options: McpServerOptions,
}

/// Writes `server` to the instance's storage.
pub(crate) fn save(instance: &Instance, server: &StoredServer) -> Result<()> {
    let gate = &instance.gate;
    gate.may_write()?;
    let value = encode_value(&serde_json::to_vec(server)?);
    gate.wrote(gate.store().put(&instance.keys.mcp_server(&server.id), &value))?;
    Ok(())
}

/// Deletes server `id` from the instance's storage.
pub(crate) fn delete(instance: &Instance, id: &str) -> Result<()> {
    let gate = &instance.gate;
    gate.may_write()?;
    gate.wrote(gate.store().delete(&instance.keys.mcp_server(id)))?;
    Ok(())
}

/// The servers on the instance's list, in the order of their ids. A record that does not
/// decode is logged and skipped (the others still connect).
pub(crate) fn load(instance: &Instance) -> Result<Vec<StoredServer>> {
    let prefix = instance.keys.mcp_server_prefix();
    let mut servers = Vec::new();
    for entry in instance.gate.store().scan_prefix(&prefix) {
        let (key, value) = entry?;
        let decoded = decode_value(&value)
            .map_err(Error::from)
            .and_then(|json| Ok(serde_json::from_slice::<StoredServer>(json)?));
        match decoded {
            Ok(server) => servers.push(server),
            Err(e) => tracing::error!(
                name = %instance.name,
                key = %String::from_utf8_lossy(&key[prefix.len()..]),
                "an MCP server record cannot be read; it is skipped: {e}"
            ),
        }
    }
    Ok(servers)
}
