use agents_runtime::prelude::*;

#[derive(Default)]
struct Chat;

#[agent]
impl Chat {
    fn on_start(self, _ctx: &mut Context<Self>) {}
}

fn main() {}
