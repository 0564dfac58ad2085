use agents_runtime::prelude::*;

#[derive(Default)]
struct Chat;

#[agent]
impl Chat {
    #[callable]
    fn connect(&self) {}
}

fn main() {}
