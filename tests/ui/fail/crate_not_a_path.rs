use agents_runtime::prelude::*;

#[derive(Default)]
struct Chat;

#[agent(crate = 42)]
impl Chat {}

#[derive(Default)]
struct Room;

#[agent(crate = "agents_runtime::")]
impl Room {}

fn main() {}
