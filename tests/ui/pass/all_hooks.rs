//! Every hook, in every accepted form: async or not, `&self` or `&mut self`, returning the
//! value itself or a `Result` with any convertible error.
use agents_runtime::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Serialize, Deserialize)]
struct Presence {
    name: String,
}

#[derive(Default)]
struct Everything {
    started: bool,
}

#[agent(name = "everything", connection_state = Presence)]
impl Everything {
    async fn on_start(&mut self, _ctx: &mut Context<Self>) -> Result<()> {
        self.started = true;
        Ok(())
    }

    fn on_request(&mut self, _ctx: &mut Context<Self>, _request: Request) -> Result<Response, serde_json::Error> {
        Ok(Response::new(serde_json::to_vec(&self.started)?.into()))
    }

    fn connection_tags(&self, _ctx: &mut Context<Self>, _conn: &Connection<Presence>, _c: &ConnectionContext) -> Vec<String> {
        vec!["everyone".into()]
    }

    async fn on_connect(&mut self, ctx: &mut Context<Self>, conn: &Connection<Presence>, c: &ConnectionContext) -> Result<()> {
        let name = c.query("name").unwrap_or_default().into_owned();
        conn.set_state(Presence { name })?;
        ctx.broadcast("joined", &[conn.id()]);
        Ok(())
    }

    async fn on_message(&mut self, _ctx: &mut Context<Self>, conn: &Connection<Presence>, message: Message) {
        let _ = conn.send(message);
    }

    fn on_close(&mut self, _ctx: &mut Context<Self>, _conn: &Connection<Presence>, _code: u16, _reason: &str, _clean: bool) {}

    async fn on_error(&mut self, _ctx: &mut Context<Self>, _conn: Option<&Connection<Presence>>, _error: &Error) {}

    // Helpers whose names are not near a hook's are left alone.
    fn broadcast_presence(&self) {}
}

fn main() {}
