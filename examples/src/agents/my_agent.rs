//! `MyAgent`: HTTP and WebSocket side by side; echoes every message.

use agents_runtime::prelude::*;

// ANCHOR: my_agent
/// Answers HTTP with a greeting, welcomes each connection and echoes text and binary.
#[derive(Default)]
pub struct MyAgent;

#[agent]
impl MyAgent {
    async fn on_request(&mut self, _ctx: &mut Context<Self>, _request: Request) -> Response {
        Response::new("Hello from HTTP!".into())
    }

    async fn on_connect(
        &mut self,
        _ctx: &mut Context<Self>,
        conn: &Connection,
        _conn_ctx: &ConnectionContext,
    ) -> Result<()> {
        conn.send("Welcome!")?;
        Ok(())
    }

    async fn on_message(
        &mut self,
        _ctx: &mut Context<Self>,
        conn: &Connection,
        message: Message,
    ) -> Result<()> {
        conn.send(message)?;
        Ok(())
    }
}
// ANCHOR_END: my_agent
