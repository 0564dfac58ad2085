//! One module per reference agent.

mod chat_agent;
mod chat_room;
mod counter;
mod file_agent;
mod my_agent;
mod presence;
mod secure_agent;
mod tags_agent;

pub use chat_agent::ChatAgent;
pub use chat_room::ChatRoom;
pub use counter::{Counter, CounterClient, CounterState, JsNumber};
pub use file_agent::FileAgent;
pub use my_agent::MyAgent;
pub use presence::PresenceAgent;
pub use secure_agent::SecureAgent;
pub use tags_agent::TagsAgent;
