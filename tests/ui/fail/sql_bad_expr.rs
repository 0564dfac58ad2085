use agents_runtime::prelude::*;

#[derive(Default)]
struct Lab;

#[agent]
impl Lab {
    #[callable]
    fn run(&mut self, ctx: &mut Context<Self>, key: String) -> Result<()> {
        let _ = &key;
        sql!(ctx, "SELECT {1 +}")?;
        Ok(())
    }
}

fn main() {}
