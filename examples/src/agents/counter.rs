//! `Counter`: the reference agent of the Cloudflare Agents protocol, state plus callables.

use agents_runtime::TypeScript;
use agents_runtime::prelude::*;
use serde::{Deserialize, Serialize};

// ANCHOR: counter
/// The synced state: `{"count":0}` to start with.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, TypeScript)]
pub struct CounterState {
    /// How many times `increment` ran (or what a client set).
    pub count: i64,
}

/// State `{"count":N}` and the callables of the reference test agent; `?readonly=true`
/// connections are readonly.
#[derive(Default)]
pub struct Counter;

#[agent(state = CounterState, rename_all = "camelCase", typescript)]
impl Counter {
    /// `?readonly=true` connections see the count but cannot change it.
    fn should_connection_be_readonly(
        &mut self,
        _ctx: &mut Context<Self>,
        _conn: &Connection,
        conn_ctx: &ConnectionContext,
    ) -> bool {
        conn_ctx.query("readonly").as_deref() == Some("true")
    }

    // ANCHOR: callables
    /// Adds one through `set_state`, so every client sees it, and returns the new count.
    #[callable(description = "Adds one to the count and returns it")]
    fn increment(&mut self, ctx: &mut Context<Self>) -> Result<i64> {
        let Some(count) = ctx.state().count.checked_add(1) else {
            return Err(Error::msg(format!("the count is at its maximum ({})", i64::MAX)));
        };
        ctx.set_state(CounterState { count })?;
        Ok(count)
    }

    /// `a + b` with JavaScript numbers: `add(2, 3)` is `5`, `add(0.5, 1)` is `1.5`.
    #[callable]
    fn add(&self, a: f64, b: f64) -> JsNumber {
        JsNumber(a + b)
    }

    /// Always fails, for clients to see an RPC error.
    #[callable]
    fn fail(&self) -> Result<()> {
        Err(Error::msg("Invalid data format"))
    }

    /// Streams `0, 1, …, count - 1`, then ends with `count` (at most 1000: one turn queues
    /// the whole stream, and a connection's outbox is bounded).
    #[callable(streaming)]
    fn stream_numbers(&self, stream: StreamingResponse, count: u32) -> Result<()> {
        if count > 1000 {
            return Err(Error::msg("count must be at most 1000"));
        }
        for i in 0..count {
            if !stream.send(i) {
                return Ok(()); // the client is gone
            }
        }
        stream.end(count);
        Ok(())
    }
    // ANCHOR_END: callables

    /// A method of the agent that clients may not call: `Method notCallable is not callable`.
    pub fn not_callable(&self) -> i64 {
        42
    }
}
// ANCHOR_END: counter

/// A JavaScript number: serialized as `JSON.stringify` writes it (`5`, not `5.0`), and
/// `number` in TypeScript.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(transparent)]
pub struct JsNumber(pub f64);

impl Serialize for JsNumber {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        const SAFE: f64 = 9_007_199_254_740_991.0; // Number.MAX_SAFE_INTEGER
        if self.0.fract() == 0.0 && self.0.abs() <= SAFE {
            serializer.serialize_i64(self.0 as i64)
        } else {
            serializer.serialize_f64(self.0)
        }
    }
}

impl agents_runtime::typescript::TypeScript for JsNumber {
    fn ts_type(_: &mut agents_runtime::typescript::Declarations) -> String {
        "number".into()
    }
}
