use agents_runtime::prelude::*;

#[agent]
#[derive(Default)]
struct Chat;

fn main() {}
