use agents_runtime::prelude::*;

#[derive(Default)]
struct Chat;

#[agent]
impl Chat {
    #[callable(streaming)]
    fn numbers(&self, count: u32) {
        let _ = count;
    }
}

fn main() {}
