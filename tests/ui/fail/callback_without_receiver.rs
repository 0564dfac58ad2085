use agents_runtime::prelude::*;

#[derive(Default)]
struct Planner;

#[agent]
impl Planner {
    #[callback]
    fn run(_name: String) {}
}

fn main() {}
