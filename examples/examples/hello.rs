//! The smallest server: one agent that greets and echoes (the README's agent, runnable).
//!
//! `cargo run -p agents-examples --example hello`, then connect to
//! `ws://127.0.0.1:8787/agents/hello/room-1`.

// ANCHOR: hello
use agents_runtime::prelude::*;

#[derive(Default)]
struct Hello;

#[agent]
impl Hello {
    async fn on_connect(
        &mut self,
        _ctx: &mut Context<Self>,
        conn: &Connection,
        _c: &ConnectionContext,
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
        conn.send(message)?; // echo, text or binary
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    Server::builder().bind("127.0.0.1:8787").await?.run().await
}
// ANCHOR_END: hello
