//! The WebSocket wire: frames read from and written to a socket (RFC 6455), close codes, and
//! the Cloudflare Agents protocol's frames.
//!
//! Nothing here knows about agents or instances; every layer above may use it.

pub(crate) mod budget;
pub(crate) mod close;
pub(crate) mod frame;
pub(crate) mod handshake;
pub(crate) mod protocol;
pub(crate) mod read;

pub use close::close_code;
pub(crate) use close::{AGENT_UNAVAILABLE, CloseFrame, is_sendable_close_code, truncate_reason};
