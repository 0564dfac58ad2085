use agents_runtime::prelude::*;

#[derive(Default)]
struct Chat;

#[agent]
impl Chat {
    fn on_state_changed(&mut self, _ctx: &mut Context<Self>, _state: &(), _source: StateSource<'_, ()>) {}
}

fn main() {}
