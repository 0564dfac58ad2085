//! `#[agent(crate = ...)]`: the generated code names the runtime by the given path, here a
//! renamed import, written as a path or as a string. (`#[callable]` is read by `#[agent]`
//! under that name.)
use agents_runtime as renamed;

use renamed::prelude::{Connection, Context, Message, Result, StateSource, StreamingResponse, callable};

#[derive(Default)]
struct Counter {
    count: u32,
}

#[renamed::agent(crate = renamed, state = u32, typescript)]
impl Counter {
    async fn on_message(&mut self, _ctx: &mut Context<Self>, conn: &Connection, message: Message) -> Result<()> {
        conn.send(message)?;
        Ok(())
    }

    fn validate_state_change(_ctx: &Context<Self>, next: &u32, _source: StateSource<'_, ()>) -> Result<()> {
        let _ = next;
        Ok(())
    }

    #[callable]
    fn add(&mut self, by: u32) -> u32 {
        self.count += by;
        self.count
    }

    #[callable(streaming)]
    async fn count(&self, stream: StreamingResponse, to: u32) {
        for n in 0..to {
            let _ = stream.send(&n);
        }
        let _ = stream.end(&to);
    }
}

#[derive(Default)]
struct Quiet;

#[renamed::agent(crate = "renamed", name = "quiet")]
impl Quiet {}

#[derive(Default)]
struct Global;

#[renamed::agent(crate = ::agents_runtime)]
impl Global {}

fn main() {
    let _ = renamed::Server::builder().agent::<Counter>().agent::<Quiet>().agent::<Global>();
    let _: Option<CounterClient> = None;
    const { assert!(<Counter as renamed::Agent>::HAS_STATE) };
}
