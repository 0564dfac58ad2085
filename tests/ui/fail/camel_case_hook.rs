use agents_runtime::prelude::*;

#[derive(Default)]
struct Chat;

#[agent]
impl Chat {
    async fn onConnect(&mut self, _ctx: &mut Context<Self>, _conn: &Connection, _c: &ConnectionContext) {}
}

fn main() {}
