use agents_runtime::prelude::*;

struct Session {
    _user: String,
}

#[derive(Default)]
struct Chat;

#[agent(connection_state = Session)]
impl Chat {}

fn main() {}
