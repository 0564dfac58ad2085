use agents_runtime::prelude::*;

#[derive(Default)]
struct Planner;

#[agent]
impl Planner {
    #[callback]
    fn on_alarm(&mut self, _ctx: &mut Context<Self>, _info: AlarmInfo) {}
}

fn main() {}
