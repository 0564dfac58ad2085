//! `ChatAgent`: the seeds' first example, token check in `on_connect`.

use agents_runtime::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::json;

// ANCHOR: chat_agent
/// Set once the connection showed a token.
#[derive(Clone, Serialize, Deserialize)]
pub struct Session {
    authenticated: bool,
}

/// Refuses connections without `?token=`; echoes JSON (or raw text) and binary back.
#[derive(Default)]
pub struct ChatAgent;

#[agent(connection_state = Session)]
impl ChatAgent {
    async fn on_connect(
        &mut self,
        _ctx: &mut Context<Self>,
        conn: &Connection<Session>,
        conn_ctx: &ConnectionContext,
    ) -> Result<()> {
        if conn_ctx.query("token").is_none_or(|token| token.is_empty()) {
            conn.close(4001, "Unauthorized")?;
            return Ok(());
        }
        conn.set_state(Session { authenticated: true })?;
        conn.send(json!({ "type": "welcome", "id": conn.id() }))?;
        Ok(())
    }

    async fn on_message(
        &mut self,
        _ctx: &mut Context<Self>,
        conn: &Connection<Session>,
        message: Message,
    ) -> Result<()> {
        match message.as_text() {
            Some(text) => {
                // Parsed JSON when it is JSON, the raw string when it is not.
                let data = serde_json::from_str(text)
                    .unwrap_or_else(|_| serde_json::Value::String(text.to_owned()));
                conn.send(json!({ "type": "echo", "data": data }))?;
            }
            None => conn.send(message)?,
        }
        Ok(())
    }
}
// ANCHOR_END: chat_agent
