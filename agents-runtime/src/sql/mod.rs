//! `ctx.sql()`: each instance's own SQLite database (`this.sql` in the Agents SDK,
//! `ctx.storage.sql` in Durable Objects).
//!
//! - [`Sql`]: the handle hooks get from [`Context::sql`](crate::Context::sql): [`Sql::exec`],
//!   [`Sql::database_size`], [`Sql::delete_all`]; [`sql!`](crate::sql!) binds the `{expr}`s of
//!   its text as parameters.
//! - [`SqlCursor`]: a statement's rows, read into any `Deserialize` type.
//! - [`SqlValue`], [`SqlParams`]: what columns hold and parameters bind.
//!
//! Inside: [`databases`] finds and bounds the open databases, [`database`] runs statements and
//! the turn's transaction, [`guard`] says what statements may do, [`session`] ties a database
//! to the output gate.

mod blob;
mod database;
mod databases;
mod error;
mod guard;
mod rows;
mod session;
mod value;

pub(crate) use databases::Databases;
pub use error::SqlError;
pub use rows::SqlCursor;
pub use session::Sql;
pub(crate) use session::SqlSession;
pub use value::{Bindings, SqlParams, SqlValue};
