//! An agent with no hooks at all is valid: every hook has a default.
use agents_runtime::agent;

#[derive(Default)]
pub struct Quiet;

#[agent]
impl Quiet {}

fn main() {
    let _ = agents_runtime::Server::builder().agent::<Quiet>();
}
