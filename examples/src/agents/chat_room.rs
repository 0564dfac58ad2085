//! `ChatRoom`: the seeds' chat room with broadcast.

use agents_runtime::close_code;
use agents_runtime::prelude::*;
use serde::{Deserialize, Serialize};

use crate::now_ms;

// ANCHOR: chat_room
/// Per-connection state: who is typing on this socket.
#[derive(Clone, Serialize, Deserialize)]
pub struct Chatter {
    username: String,
}

/// The tag of a socket that joined with `?announce=false`: a listener the room does not tell
/// the others about (a room of a hundred thousand sockets would otherwise tell each of them
/// about every other one).
const LISTENER: &str = "listener";

/// What the room sends, as `{"type": "join" | "message" | "leave", "user", "text"?,
/// "timestamp"}`: a typed frame serializes straight to its JSON text, with no `Value` built
/// on the way.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum RoomFrame<'a> {
    Join { user: &'a str, timestamp: u64 },
    Message { user: &'a str, text: &'a str, timestamp: u64 },
    Leave { user: &'a str, timestamp: u64 },
}

/// The longest `?username=` the room takes, in characters.
const MAX_USERNAME: usize = 64;

/// Broadcasts joins, messages and leaves to everyone in the room.
#[derive(Default)]
pub struct ChatRoom;

#[agent(connection_state = Chatter)]
impl ChatRoom {
    fn connection_tags(
        &mut self,
        _ctx: &mut Context<Self>,
        _conn: &Connection<Chatter>,
        conn_ctx: &ConnectionContext,
    ) -> Vec<String> {
        match conn_ctx.query("announce").as_deref() {
            Some("false") => vec![LISTENER.to_owned()],
            _ => Vec::new(),
        }
    }

    fn on_connect(
        &mut self,
        ctx: &mut Context<Self>,
        conn: &Connection<Chatter>,
        conn_ctx: &ConnectionContext,
    ) -> Result<()> {
        let username = conn_ctx.query("username").map_or("Anonymous".into(), |u| u.into_owned());
        if username.chars().count() > MAX_USERNAME {
            // A name nobody could read: refused, rather than chatting under no name.
            conn.close(close_code::POLICY_VIOLATION, "Username too long (at most 64 characters)")?;
            return Ok(());
        }
        if !is_listener(conn) {
            let join = Message::json(&RoomFrame::Join { user: &username, timestamp: now_ms() })?;
            // Everyone but the joiner.
            ctx.broadcast(join, &[conn.id()]);
        }
        conn.set_state(Chatter { username })?;
        Ok(())
    }

    fn on_message(
        &mut self,
        ctx: &mut Context<Self>,
        conn: &Connection<Chatter>,
        message: Message,
    ) -> Result<()> {
        let Some(text) = message.as_text() else { return Ok(()) }; // binary is ignored
        let frame = conn.with_state(|chatter| {
            let user = chatter.map_or("", |chatter| chatter.username.as_str());
            Message::json(&RoomFrame::Message { user, text, timestamp: now_ms() })
        })?;
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
        if is_listener(conn) {
            return;
        }
        let leave = conn.with_state(|chatter| {
            let user = chatter?.username.as_str();
            Message::json(&RoomFrame::Leave { user, timestamp: now_ms() }).ok()
        });
        if let Some(leave) = leave {
            ctx.broadcast(leave, &[]);
        }
    }
}
/// Whether `conn` joined with `?announce=false`.
fn is_listener(conn: &Connection<Chatter>) -> bool {
    conn.tags().iter().any(|tag| &**tag == LISTENER)
}
// ANCHOR_END: chat_room
