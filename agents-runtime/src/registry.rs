//! Agent classes: registered by `#[agent]` through `inventory`, or explicitly on the builder.

use std::any::TypeId;
use std::fmt;
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::agent::Agent;
use crate::host::{self, Event};
use crate::instances::Instance;
use crate::server::Shared;
use crate::storage::Durability;

/// A type-erased agent class: its route name and how to start an instance of it.
#[derive(Clone, Copy)]
pub(crate) struct AgentClass {
    pub(crate) name: &'static str,
    pub(crate) type_name: &'static str,
    pub(crate) type_id: fn() -> TypeId,
    pub(crate) spawn: fn(Arc<Shared>, Arc<str>, Arc<Instance>) -> mpsc::Sender<Event>,
    /// Whether frames wait for the agent's writes (`Durability::Confirmed`).
    pub(crate) confirmed_writes: bool,
}

impl AgentClass {
    pub(crate) fn of<A: Agent>() -> Self {
        Self {
            name: A::NAME,
            type_name: std::any::type_name::<A>(),
            type_id: TypeId::of::<A>,
            spawn: host::spawn::<A>,
            confirmed_writes: matches!(A::DURABILITY, Durability::Confirmed),
        }
    }
}

impl fmt::Debug for AgentClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentClass")
            .field("name", &self.name)
            .field("type", &self.type_name)
            .finish()
    }
}

/// An entry `#[agent]` submits to `inventory`; not for direct use.
#[doc(hidden)]
pub struct AgentRegistration {
    class: fn() -> AgentClass,
}

impl AgentRegistration {
    /// The registration of agent `A`.
    pub const fn of<A: Agent>() -> Self {
        Self { class: AgentClass::of::<A> }
    }
}

inventory::collect!(AgentRegistration);

/// Every agent class `#[agent]` registered in this binary.
pub(crate) fn registered() -> impl Iterator<Item = AgentClass> {
    inventory::iter::<AgentRegistration>.into_iter().map(|r| (r.class)())
}
