//! Agent classes: registered by `#[agent]` through `inventory`, or explicitly on the builder.

use std::any::TypeId;

use crate::agent::{Agent, host};
use crate::instance::AgentClass;
use crate::storage::Durability;

impl AgentClass {
    /// The class of agent `A`.
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
