use agents_runtime::prelude::*;

#[derive(Default)]
struct Café;

#[agent]
impl Café {}

fn main() {}
