use agents_runtime::prelude::*;

#[derive(Default)]
struct Chat;

#[agent(name = "chat", name = "room")]
impl Chat {}

fn main() {}
