//! `FileAgent`: the seeds' binary-data example.

use agents_runtime::prelude::*;
use serde_json::json;

// ANCHOR: file_agent
/// Acknowledges each binary upload with its size; text is a JSON command.
#[derive(Default)]
pub struct FileAgent;

#[agent]
impl FileAgent {
    async fn on_message(
        &mut self,
        _ctx: &mut Context<Self>,
        conn: &Connection,
        message: Message,
    ) -> Result<()> {
        match message {
            Message::Binary(bytes) => {
                conn.send(json!({ "status": "received", "size": bytes.len() }))?;
            }
            Message::Text(text) => {
                // A command; none is defined yet. Text that is not JSON is an error, which
                // reaches `on_error` (logged) while the connection stays open.
                let _command: serde_json::Value = serde_json::from_str(&text)?;
            }
        }
        Ok(())
    }
}
// ANCHOR_END: file_agent
