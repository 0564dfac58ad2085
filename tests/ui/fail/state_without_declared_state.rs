use agents_runtime::prelude::*;

#[derive(Default)]
struct Stateless;

#[agent]
impl Stateless {
    fn on_message(&mut self, ctx: &mut Context<Self>, _conn: &Connection, _message: Message) -> Result<()> {
        let _ = ctx.state();
        ctx.set_state(3)?;
        Ok(())
    }
}

fn main() {}
