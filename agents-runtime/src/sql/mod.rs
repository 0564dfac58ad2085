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

/// The compound methods of a `serde::Serializer` that turn every compound away with `$err`
/// (a newtype variant, tuple structs and variants, maps, structs, struct variants): the value
/// serializers of [`value`] and [`blob`] take scalars or byte lists only.
macro_rules! refuse_compounds {
    ($ok:ty, $err:expr) => {
        fn serialize_newtype_variant<T: serde::Serialize + ?Sized>(
            self,
            _: &'static str,
            _: u32,
            _: &'static str,
            _: &T,
        ) -> Result<$ok, Self::Error> {
            Err($err)
        }
        fn serialize_tuple_struct(
            self,
            _: &'static str,
            _: usize,
        ) -> Result<Self::SerializeTupleStruct, Self::Error> {
            Err($err)
        }
        fn serialize_tuple_variant(
            self,
            _: &'static str,
            _: u32,
            _: &'static str,
            _: usize,
        ) -> Result<Self::SerializeTupleVariant, Self::Error> {
            Err($err)
        }
        fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, Self::Error> {
            Err($err)
        }
        fn serialize_struct(
            self,
            _: &'static str,
            _: usize,
        ) -> Result<Self::SerializeStruct, Self::Error> {
            Err($err)
        }
        fn serialize_struct_variant(
            self,
            _: &'static str,
            _: u32,
            _: &'static str,
            _: usize,
        ) -> Result<Self::SerializeStructVariant, Self::Error> {
            Err($err)
        }
    };
}

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
