//! [`AgentClass`]: an agent type with its type erased, as the directory starts instances of it.

use std::any::TypeId;
use std::fmt;
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::instance::directory::Directory;
use crate::instance::event::Event;
use crate::instance::shared::Instance;

/// A type-erased agent class: its route name and how to start an instance of it.
#[derive(Clone, Copy)]
pub(crate) struct AgentClass {
    pub(crate) name: &'static str,
    pub(crate) type_name: &'static str,
    pub(crate) type_id: fn() -> TypeId,
    pub(crate) spawn: fn(Arc<Directory>, Arc<str>, Arc<Instance>) -> mpsc::Sender<Event>,
    /// Whether frames wait for the agent's writes (`Durability::Confirmed`).
    pub(crate) confirmed_writes: bool,
}

impl fmt::Debug for AgentClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentClass")
            .field("name", &self.name)
            .field("type", &self.type_name)
            .finish()
    }
}
