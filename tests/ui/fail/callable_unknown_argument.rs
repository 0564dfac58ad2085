use agents_runtime::prelude::*;

#[derive(Default)]
struct Chat;

#[agent]
impl Chat {
    #[callable(stream)]
    fn numbers(&self) {}
}

fn main() {}
