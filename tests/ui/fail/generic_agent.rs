use agents_runtime::prelude::*;

#[derive(Default)]
struct Chat<T>(T);

#[agent]
impl<T: Default + Send + 'static> Chat<T> {}

fn main() {}
