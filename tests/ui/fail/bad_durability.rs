use agents_runtime::prelude::*;

#[derive(Default)]
struct Fast;

#[agent(durability = "fast")]
impl Fast {}

fn main() {}
