use agents_runtime::prelude::*;

#[derive(Default)]
struct AlwaysOn;

#[agent(hibernate = "no")]
impl AlwaysOn {}

fn main() {}
