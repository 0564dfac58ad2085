use agents_runtime::prelude::*;

struct Chat;

impl Chat {
    #[callable]
    fn add(&self, a: i64, b: i64) -> i64 {
        a + b
    }
}

fn main() {}
