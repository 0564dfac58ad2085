use agents_runtime::prelude::*;

#[derive(Default)]
struct Chat;

#[agent]
impl Chat {
    async fn on_message(&mut self, _conn: &Connection, _message: Message) {}
}

fn main() {}
