use agents_runtime::prelude::*;

#[derive(Default)]
struct Planner;

#[agent]
impl Planner {
    #[callback]
    fn run(&mut self, _ctx: &mut Context<Self>, _name: String, _count: u32) {}
}

fn main() {}
