use agents_runtime::prelude::*;

struct Plain;

impl Plain {
    #[callback]
    fn tick(&mut self) {}
}

fn main() {}
