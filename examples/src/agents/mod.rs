//! One module per reference agent.

mod catalog;
mod chat_agent;
mod chat_room;
mod counter;
mod file_agent;
mod hibernating_counter;
mod my_agent;
mod notebook;
mod presence;
mod reminders;
mod secure_agent;
mod tags_agent;
mod toolbox;

pub use catalog::{Catalog, CatalogClient, Entry as CatalogEntry, MAX_SEARCH_RESULTS};
pub use chat_agent::ChatAgent;
pub use chat_room::ChatRoom;
pub use counter::{Counter, CounterClient, CounterState, JsNumber};
pub use file_agent::FileAgent;
pub use hibernating_counter::{CounterState as HibernatingCounterState, HibernatingCounter};
pub use my_agent::MyAgent;
pub use notebook::{Note, Notebook, NotebookClient};
pub use presence::PresenceAgent;
pub use reminders::{
    Fired, MAX_FIRED, MAX_PENDING_REMINDERS, Pending, Reminders, RemindersCallback,
    RemindersClient, RemindersState,
};
pub use secure_agent::SecureAgent;
pub use tags_agent::TagsAgent;
pub use toolbox::{ToolInfo, Toolbox, ToolboxClient};
