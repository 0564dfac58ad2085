use agents_runtime::prelude::*;

struct Opaque;

#[derive(Default)]
struct Planner;

#[agent]
impl Planner {
    #[callback]
    fn run(&mut self, _job: Opaque) {}
}

fn main() {}
