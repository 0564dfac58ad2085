use agents_runtime::prelude::*;

#[derive(Default)]
struct Lab;

#[agent]
impl Lab {
    #[callable]
    fn run(&mut self, ctx: &mut Context<Self>, statement: String) -> Result<()> {
        // Only a literal: a statement built at run time would splice values into the text.
        sql!(ctx, statement)?;
        Ok(())
    }
}

fn main() {}
