//! The network edge, and the only module that knows warp: the accept loop, routing
//! `/agents/{agent}/{name}[/...]`, HTTP requests to `on_request`, static assets, WebSocket
//! upgrades and their socket tasks, and the parking lot of hibernated instances' sockets.

mod assets;
mod direct;
mod edge;
mod io;
mod link;
mod listener;
mod lot;
mod parked;
mod reply;
mod routes;
mod socket;
mod stream;
mod upgrade;

pub(crate) use assets::{AssetSpec, Assets};
pub(crate) use edge::Edge;
pub(crate) use listener::{bind, serve};
#[cfg(feature = "fuzzing")]
pub(crate) use routes::agent_and_name;
