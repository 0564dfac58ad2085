//! Forms that must keep compiling: an agent built by `macro_rules!` (hygiene), a typed
//! receiver, a `#[cfg]`'d-out hook, and helpers whose names resemble hooks.
use agents_runtime::prelude::*;

macro_rules! echo_agent {
    ($name:ident) => {
        #[derive(Default)]
        struct $name;

        #[agent]
        impl $name {
            async fn on_message(&mut self, _ctx: &mut Context<Self>, conn: &Connection, message: Message) -> Result<()> {
                conn.send(message)?;
                Ok(())
            }
        }
    };
}

echo_agent!(MacroMade);

/// Serialize only: the server can answer with it, the generated client cannot decode it.
#[derive(serde::Serialize)]
struct Report {
    lines: usize,
}

#[derive(Default)]
struct Shapes;

#[agent]
impl Shapes {
    fn on_start(self: &mut Self, _ctx: &mut Context<Self>) {}

    #[cfg(any())]
    fn on_request(&mut self, _ctx: &mut Context<Self>, _request: Request) -> Response {
        unreachable!()
    }

    fn on_state(&self) {}
    fn on_closed(&self) {}
    fn on_messages(&self) {}
    fn on_starting(&self) {}

    #[callable]
    fn report(&self, ctx: &Context<Self>, r#type: String) -> Report {
        Report { lines: ctx.name().len() + r#type.len() }
    }
}

fn main() {
    let _ = Server::builder().agent::<MacroMade>().agent::<Shapes>();
}
