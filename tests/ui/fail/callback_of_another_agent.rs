use agents_runtime::prelude::*;

#[derive(Default)]
struct Planner;

#[agent]
impl Planner {
    #[callback]
    fn tick(&mut self) {}
}

#[derive(Default)]
struct Other;

#[agent]
impl Other {
    #[callable]
    fn plan(&mut self, ctx: &mut Context<Self>) -> Result<()> {
        ctx.queue(PlannerCallback::Tick)?;
        Ok(())
    }
}

fn main() {}
