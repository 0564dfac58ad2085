use agents_runtime::prelude::*;

trait Greeter {}

#[derive(Default)]
struct Chat;

#[agent]
impl Greeter for Chat {}

fn main() {}
