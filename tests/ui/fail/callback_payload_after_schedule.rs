use agents_runtime::prelude::*;

#[derive(Default)]
struct Planner;

#[agent]
impl Planner {
    #[callback]
    fn run(&mut self, _schedule: &Schedule, _name: String) {}
}

fn main() {}
