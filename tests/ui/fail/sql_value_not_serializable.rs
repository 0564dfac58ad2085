use agents_runtime::prelude::*;

#[derive(Default)]
struct Lab;

struct Opaque;

#[agent]
impl Lab {
    #[callable]
    fn run(&mut self, ctx: &mut Context<Self>) -> Result<()> {
        let value = Opaque;
        sql!(ctx, "SELECT {value}")?;
        Ok(())
    }
}

fn main() {}
