use agents_runtime::prelude::*;

#[derive(Default)]
struct Chat;

#[agent]
impl Chat {
    async fn on_mesage(&mut self, _ctx: &mut Context<Self>, _conn: &Connection, _message: Message) {}
}

fn main() {}
