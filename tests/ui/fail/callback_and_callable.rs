use agents_runtime::prelude::*;

#[derive(Default)]
struct Planner;

#[agent]
impl Planner {
    #[callable]
    #[callback]
    fn run(&mut self) {}
}

fn main() {}
