use agents_runtime::prelude::*;

struct Chat {
    _history: Vec<String>,
}

#[agent]
impl Chat {}

fn main() {}
