//! Durable storage: the [`Store`] trait every backend implements, the embedded [`SledStore`]
//! default, the agent-facing [`Storage`] API, and the output gate's group commit.
//!
//! One store holds every instance's data. Keys are namespaced per `(agent, name)` by the
//! runtime; a backend sees opaque, ordered byte keys. Every value the runtime writes starts with
//! a format version byte ([`FORMAT_VERSION`]) so a later release can migrate old values.

pub(crate) mod alarm;
pub mod conformance;
pub(crate) mod durability;
pub(crate) mod file_syncs;
mod keys;
mod kv;
mod memory;
mod sled_journal;
mod sled_store;
mod store;
pub(crate) mod timers;
pub(crate) mod wakeups;

pub use alarm::{AlarmInfo, MAX_ALARM_RETRIES};
pub(crate) use alarm::{AlarmSlot, alarm_retry_delay};
pub use durability::StorageStats;
pub use kv::{ListOptions, MAX_KEY_SIZE, MAX_VALUE_SIZE, Storage, StorageBatch};
pub use memory::MemoryStore;
pub use sled_store::SledStore;

pub(crate) use keys::{InstanceKeys, instance_of, namespace_len};
pub use store::{BatchOp, Durability, FORMAT_VERSION, ScanIter, Store, StoreError, WriteBatch};
pub(crate) use store::{decode_value, encode_value};
