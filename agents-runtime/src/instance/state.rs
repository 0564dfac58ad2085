//! Agent state: who changed it.

use std::fmt;

use crate::instance::connection::Connection;

/// Where a state change came from (the docs' `source`: a `Connection` or `"server"`).
pub enum StateSource<'a, S> {
    /// The agent itself, `ctx.set_state(...)`, including from inside a callable.
    Server,
    /// A client's `cf_agent_state` frame (`AgentClient.setState`).
    Connection(&'a Connection<S>),
}

impl<S> StateSource<'_, S> {
    /// The connection, for a change a client made.
    pub fn connection(&self) -> Option<&Connection<S>> {
        match self {
            Self::Server => None,
            Self::Connection(conn) => Some(conn),
        }
    }
}

impl<S> Clone for StateSource<'_, S> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<S> Copy for StateSource<'_, S> {}

impl<S> fmt::Debug for StateSource<'_, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Server => f.write_str("Server"),
            Self::Connection(conn) => f.debug_tuple("Connection").field(&conn.id()).finish(),
        }
    }
}
