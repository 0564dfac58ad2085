use agents_runtime::prelude::*;

struct Opaque;

#[derive(Default)]
struct Chat;

#[agent]
impl Chat {
    #[callable]
    fn take(&self, _value: Opaque) {}
}

fn main() {}
