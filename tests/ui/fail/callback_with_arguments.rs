use agents_runtime::prelude::*;

#[derive(Default)]
struct Planner;

#[agent]
impl Planner {
    #[callback(retries = 3)]
    fn run(&mut self) {}
}

fn main() {}
