//! `SecureAgent`: the seeds' authentication pattern, with the user kept on the connection.

use agents_runtime::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::json;

// ANCHOR: secure_agent
/// The authenticated user of a connection.
#[derive(Clone, Serialize, Deserialize)]
pub struct User {
    id: String,
    role: String,
}

/// Closes 4001 without a token; otherwise tells the client who it is.
#[derive(Default)]
pub struct SecureAgent;

#[agent(connection_state = User)]
impl SecureAgent {
    async fn on_connect(
        &mut self,
        _ctx: &mut Context<Self>,
        conn: &Connection<User>,
        conn_ctx: &ConnectionContext,
    ) -> Result<()> {
        let token = match conn_ctx.query("token") {
            Some(token) if !token.is_empty() => token,
            _ => {
                conn.close(4001, "Unauthorized")?;
                return Ok(());
            }
        };
        let user = User { id: format!("user-{token}"), role: "member".into() };
        conn.send(json!({ "type": "authenticated", "user": user }))?;
        conn.set_state(user)?;
        Ok(())
    }
}
// ANCHOR_END: secure_agent
