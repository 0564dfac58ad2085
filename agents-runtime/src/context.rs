//! [`Context`]: what a hook can reach besides `self` (the seeds' agent properties and methods).

use std::fmt;
use std::sync::Arc;

use crate::agent::Agent;
use crate::connection::Connection;
use crate::connections::{ConnectionTable, Connections};
use crate::env::Env;
use crate::error::ConnectionError;
use crate::message::Message;

/// The instance's context, passed to every hook as `ctx`.
///
/// It gives what the docs reach through `this`: the instance [`name`](Self::name), the
/// [`env`](Self::env), [`broadcast`](Self::broadcast), [`get_connections`](Self::get_connections)
/// and [`get_connection`](Self::get_connection).
pub struct Context<A: Agent> {
    name: Arc<str>,
    env: Env,
    pub(crate) connections: ConnectionTable<A::ConnectionState>,
}

impl<A: Agent> Context<A> {
    pub(crate) fn new(name: Arc<str>, env: Env) -> Self {
        Self { name, env, connections: ConnectionTable::default() }
    }

    /// The instance name (`this.name`): the raw `{name}` path segment it is addressed by.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn name_arc(&self) -> &Arc<str> {
        &self.name
    }

    /// The agent's route name (`/agents/{agent}/...`), e.g. `chat-room`.
    pub fn agent(&self) -> &'static str {
        A::NAME
    }

    /// The shared resources given to the server builder (`this.env`).
    pub fn env(&self) -> &Env {
        &self.env
    }

    /// Sends `message` to every open connection whose id is not in `without`
    /// (`this.broadcast(message, without)`), and returns how many it was queued for.
    ///
    /// The message is built once; every outbox shares its bytes.
    pub fn broadcast(&self, message: impl Into<Message>, without: &[&str]) -> usize {
        let message = message.into();
        self.connections
            .iter(None)
            .filter(|conn| !without.contains(&conn.id()))
            .filter(|conn| conn.send(message.clone()).is_ok())
            .count()
    }

    /// Open connections, all of them (`None`) or those with a tag (`Some("admin")`)
    /// (`this.getConnections(tag?)`). Connections that are closing are left out.
    pub fn get_connections(&self, tag: Option<&str>) -> Connections<'_, A::ConnectionState> {
        self.connections.iter(tag)
    }

    /// The connection with this id (`this.getConnection(id)`).
    ///
    /// Ids come from the client's `_pk`, so two live sockets can share one; that case is an
    /// error ([`ConnectionError::DuplicateId`]) as in the reference, not a silent pick.
    pub fn get_connection(
        &self,
        id: &str,
    ) -> Result<Option<&Connection<A::ConnectionState>>, ConnectionError> {
        let mut found = self.connections.iter(Some(id)).filter(|conn| conn.id() == id);
        let first = found.next();
        if found.next().is_some() {
            return Err(ConnectionError::DuplicateId(id.to_owned()));
        }
        Ok(first)
    }
}

impl<A: Agent> fmt::Debug for Context<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("agent", &A::NAME)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}
