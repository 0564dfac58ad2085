use agents_runtime::prelude::*;

#[derive(Clone, Default, serde::Serialize, serde::Deserialize)]
struct Count(i64);

#[derive(Default)]
struct Chat;

#[agent(state = Count)]
impl Chat {
    fn validate_state_change(&self, _ctx: &Context<Self>, _next: &Count, _source: StateSource<'_, ()>) -> Result<()> {
        Ok(())
    }
}

fn main() {}
