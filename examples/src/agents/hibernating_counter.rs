//! `HibernatingCounter`: the seeds' hibernation example. A persisted state counter and an
//! in-memory one; after hibernation the first keeps counting and the second starts over.

use agents_runtime::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::json;

// ANCHOR: hibernating_counter
/// `{"counter":0}`: persisted, so it survives hibernation and restarts.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct CounterState {
    /// Every `count` message ever received by this instance.
    pub counter: u64,
}

/// Each text message `count` adds one to both counters and replies
/// `{"counter":C,"local":L}`; `ping` is answered `pong` by the runtime without waking it.
#[derive(Default)]
pub struct HibernatingCounter {
    /// Lost on hibernation, as a class field is on Cloudflare: do not keep data here.
    local: u64,
}

#[agent(state = CounterState)]
impl HibernatingCounter {
    fn on_start(&mut self, ctx: &mut Context<Self>) -> Result<()> {
        ctx.set_websocket_auto_response(Some(WebSocketRequestResponsePair::new("ping", "pong")?));
        Ok(())
    }

    fn on_message(
        &mut self,
        ctx: &mut Context<Self>,
        conn: &Connection,
        message: Message,
    ) -> Result<()> {
        if message.as_text() != Some("count") {
            conn.send(json!({ "error": "send the text message `count`" }).to_string())?;
            return Ok(());
        }
        // Persists across hibernation (and is on disk before the reply goes out).
        let counter = ctx.state().counter + 1;
        ctx.set_state(CounterState { counter })?;
        // Lost after hibernation.
        self.local += 1;
        conn.send(json!({ "counter": counter, "local": self.local }).to_string())?;
        Ok(())
    }
}
// ANCHOR_END: hibernating_counter
