use agents_runtime::prelude::*;

#[derive(Default)]
struct Chat;

#[agent(crate = agents_runtime, crate = "agents_runtime")]
impl Chat {}

fn main() {}
