//! `env`: typed shared resources handed to the server builder (configuration, clients, pools).

use std::any::{Any, TypeId, type_name};
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use crate::error::Error;

/// The agent's environment: the Rust counterpart of the Worker `env` bindings.
///
/// Values are put in with [`ServerBuilder::env`](crate::ServerBuilder::env), one per type, and
/// read from any hook with `ctx.env().get::<T>()`. Cloning is cheap (one shared map).
#[derive(Clone, Default)]
pub struct Env {
    values: Arc<HashMap<TypeId, Box<dyn Any + Send + Sync>>>,
}

impl Env {
    pub(crate) fn from_map(values: HashMap<TypeId, Box<dyn Any + Send + Sync>>) -> Self {
        Self { values: Arc::new(values) }
    }

    /// The value of type `T`, if the server builder was given one.
    pub fn get<T: Any + Send + Sync>(&self) -> Option<&T> {
        self.values.get(&TypeId::of::<T>())?.downcast_ref()
    }

    /// The value of type `T`, or an error naming the type that is missing.
    pub fn require<T: Any + Send + Sync>(&self) -> Result<&T, Error> {
        self.get().ok_or_else(|| {
            Error::msg(format!(
                "env has no value of type `{}`: pass one to ServerBuilder::env",
                type_name::<T>()
            ))
        })
    }
}

impl fmt::Debug for Env {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Env").field("values", &self.values.len()).finish()
    }
}
