//! `ChatRoom`: the seeds' chat room with broadcast.

use agents_runtime::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::now_ms;

// ANCHOR: chat_room
/// Per-connection state: who is typing on this socket.
#[derive(Clone, Serialize, Deserialize)]
pub struct Chatter {
    username: String,
}

/// Broadcasts joins, messages and leaves to everyone in the room.
#[derive(Default)]
pub struct ChatRoom;

#[agent(connection_state = Chatter)]
impl ChatRoom {
    fn on_connect(
        &mut self,
        ctx: &mut Context<Self>,
        conn: &Connection<Chatter>,
        conn_ctx: &ConnectionContext,
    ) -> Result<()> {
        let username = conn_ctx.query("username").map_or("Anonymous".into(), |u| u.into_owned());
        let join = json!({ "type": "join", "user": username, "timestamp": now_ms() });
        conn.set_state(Chatter { username })?;
        // Everyone but the joiner.
        ctx.broadcast(join, &[conn.id()]);
        Ok(())
    }

    fn on_message(
        &mut self,
        ctx: &mut Context<Self>,
        conn: &Connection<Chatter>,
        message: Message,
    ) -> Result<()> {
        let Some(text) = message.as_text() else { return Ok(()) }; // binary is ignored
        let user = conn.with_state(|s| s.map(|s| s.username.clone())).unwrap_or_default();
        let frame = json!({ "type": "message", "user": user, "text": text, "timestamp": now_ms() });
        ctx.broadcast(frame, &[]);
        Ok(())
    }

    fn on_close(
        &mut self,
        ctx: &mut Context<Self>,
        conn: &Connection<Chatter>,
        _code: u16,
        _reason: &str,
        _was_clean: bool,
    ) {
        if let Some(Chatter { username }) = conn.state() {
            ctx.broadcast(json!({ "type": "leave", "user": username, "timestamp": now_ms() }), &[]);
        }
    }
}
// ANCHOR_END: chat_room
