use agents_runtime::prelude::*;

#[derive(Default)]
struct Chat;

#[agent]
impl Chat {
    #[callable]
    fn on_start(&mut self, _ctx: &mut Context<Self>) {}
}

fn main() {}
