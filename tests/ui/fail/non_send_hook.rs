use std::rc::Rc;

use agents_runtime::prelude::*;

#[derive(Default)]
struct Chat;

#[agent]
impl Chat {
    async fn on_start(&mut self, _ctx: &mut Context<Self>) {
        let local = Rc::new(1);
        tokio::task::yield_now().await;
        drop(local);
    }
}

fn main() {}
