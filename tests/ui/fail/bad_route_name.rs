use agents_runtime::prelude::*;

#[derive(Default)]
struct Chat;

#[agent(name = "chat/room")]
impl Chat {}

fn main() {}
