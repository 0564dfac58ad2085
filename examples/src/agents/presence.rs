//! `PresenceAgent`: the seeds' presence tracking with per-connection state.

use std::collections::BTreeMap;

use agents_runtime::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::now_ms;

// ANCHOR: presence
/// Who is behind a connection, and when they were last heard from.
#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserState {
    name: String,
    joined_at: u64,
    last_seen: u64,
}

/// Keeps everyone's presence list current; `ping` answers `pong` and refreshes `lastSeen`.
#[derive(Default)]
pub struct PresenceAgent;

#[agent(connection_state = UserState)]
impl PresenceAgent {
    fn on_connect(
        &mut self,
        ctx: &mut Context<Self>,
        conn: &Connection<UserState>,
        conn_ctx: &ConnectionContext,
    ) -> Result<()> {
        let name = conn_ctx.query("name").map_or("Anonymous".into(), |n| n.into_owned());
        let now = now_ms();
        conn.set_state(UserState { name, joined_at: now, last_seen: now })?;
        // The current presence to the new user, then the news to everyone.
        conn.send(Self::presence(ctx))?;
        ctx.broadcast(Self::presence(ctx), &[]);
        Ok(())
    }

    fn on_close(
        &mut self,
        ctx: &mut Context<Self>,
        _conn: &Connection<UserState>,
        _code: u16,
        _reason: &str,
        _was_clean: bool,
    ) {
        // No cleanup: a closed connection and its state are already gone from the list.
        ctx.broadcast(Self::presence(ctx), &[]);
    }

    fn on_message(
        &mut self,
        _ctx: &mut Context<Self>,
        conn: &Connection<UserState>,
        message: Message,
    ) -> Result<()> {
        if message.as_text() == Some("ping") {
            conn.update_state(|prev| {
                let mut next = prev.cloned().unwrap_or_else(|| UserState {
                    name: "Anonymous".into(),
                    joined_at: now_ms(),
                    last_seen: 0,
                });
                next.last_seen = now_ms();
                next
            })?;
            conn.send("pong")?;
        }
        Ok(())
    }

    /// `{"type":"presence","users":{id:{name,lastSeen}}}`, built once per broadcast.
    fn presence(ctx: &Context<Self>) -> Message {
        let users: BTreeMap<&str, serde_json::Value> = ctx
            .get_connections(None)
            .filter_map(|conn| {
                conn.with_state(|s| {
                    s.map(|s| (conn.id(), json!({ "name": s.name, "lastSeen": s.last_seen })))
                })
            })
            .collect();
        json!({ "type": "presence", "users": users }).into()
    }
}
// ANCHOR_END: presence
