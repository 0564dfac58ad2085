use agents_runtime::prelude::*;

#[derive(Default)]
struct Chat;

#[agent]
impl Chat {
    #[callable(name = "go")]
    fn first(&self) {}

    #[callable(name = "go")]
    fn second(&self) {}
}

fn main() {}
