use agents_runtime::prelude::*;

#[derive(Default)]
struct Chat;

#[agent(nmae = "chat")]
impl Chat {}

fn main() {}
