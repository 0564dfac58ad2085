//! [`SqlValue`]: what an SQLite column holds and a parameter binds, and how any `Serialize`
//! value becomes one ([`SqlParams`]).

use serde::Serialize;
use serde::ser::{self, Impossible};

use super::SqlError;
use super::blob::Bytes;

/// One SQLite value: a column of a row, or a bound parameter.
#[derive(Clone, Debug, PartialEq)]
pub enum SqlValue {
    /// `NULL`.
    Null,
    /// A 64-bit integer.
    Integer(i64),
    /// A 64-bit float.
    Real(f64),
    /// UTF-8 text.
    Text(String),
    /// Bytes.
    Blob(Vec<u8>),
}

impl SqlValue {
    /// The value a `Serialize` value binds as: `None` and `()` as `NULL`, booleans as `0`/`1`,
    /// integers, floats, strings and byte strings as themselves, and anything else (a struct,
    /// a list, a map) as its JSON text, which a column read back into the same type parses.
    pub fn from_serialize<T: Serialize + ?Sized>(value: &T) -> Result<Self, SqlError> {
        match value.serialize(Scalar) {
            Ok(value) => Ok(value),
            // A non-empty list of bytes (`Vec<u8>`, `[u8; N]`) is a BLOB.
            Err(Compound::Json) if let Ok(bytes) = value.serialize(Bytes::default()) => {
                Ok(SqlValue::Blob(bytes))
            }
            Err(Compound::Json) => serde_json::to_string(value)
                .map(SqlValue::Text)
                .map_err(|e| SqlError::new(format!("a value cannot be bound as JSON: {e}"))),
            Err(Compound::Error(e)) => Err(e),
        }
    }

    /// About how many bytes the value holds.
    pub(crate) fn size(&self) -> usize {
        match self {
            Self::Text(text) => text.len() + 24,
            Self::Blob(bytes) => bytes.len() + 24,
            _ => 16,
        }
    }

    pub(crate) fn from_ref(value: rusqlite::types::ValueRef<'_>) -> Self {
        use rusqlite::types::ValueRef;
        match value {
            ValueRef::Null => Self::Null,
            ValueRef::Integer(i) => Self::Integer(i),
            ValueRef::Real(f) => Self::Real(f),
            ValueRef::Text(text) => Self::Text(String::from_utf8_lossy(text).into_owned()),
            ValueRef::Blob(bytes) => Self::Blob(bytes.to_vec()),
        }
    }
}

impl rusqlite::ToSql for SqlValue {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(ToSqlOutput::Borrowed(match self {
            Self::Null => ValueRef::Null,
            Self::Integer(i) => ValueRef::Integer(*i),
            Self::Real(f) => ValueRef::Real(*f),
            Self::Text(text) => ValueRef::Text(text.as_bytes()),
            Self::Blob(bytes) => ValueRef::Blob(bytes),
        }))
    }
}

macro_rules! from_scalar {
    ($($ty:ty => $variant:ident),* $(,)?) => {$(
        impl From<$ty> for SqlValue {
            fn from(value: $ty) -> Self {
                Self::$variant(value.into())
            }
        }
    )*};
}

from_scalar!(i64 => Integer, i32 => Integer, u32 => Integer, f64 => Real, String => Text,
    &str => Text, Vec<u8> => Blob);

impl From<bool> for SqlValue {
    fn from(value: bool) -> Self {
        Self::Integer(value.into())
    }
}

impl<T: Into<SqlValue>> From<Option<T>> for SqlValue {
    fn from(value: Option<T>) -> Self {
        value.map_or(Self::Null, Into::into)
    }
}

/// The parameters of a statement, bound in order to `?`, `?1`, `?2`…: `()` for none, a tuple
/// of `Serialize` values (up to 12), or a list of [`SqlValue`]s.
pub trait SqlParams {
    /// The values, in order.
    fn into_values(self) -> Result<Vec<SqlValue>, SqlError>;
}

impl SqlParams for () {
    fn into_values(self) -> Result<Vec<SqlValue>, SqlError> {
        Ok(Vec::new())
    }
}

impl SqlParams for Vec<SqlValue> {
    fn into_values(self) -> Result<Vec<SqlValue>, SqlError> {
        Ok(self)
    }
}

impl SqlParams for &[SqlValue] {
    fn into_values(self) -> Result<Vec<SqlValue>, SqlError> {
        Ok(self.to_vec())
    }
}

impl<const N: usize> SqlParams for [SqlValue; N] {
    fn into_values(self) -> Result<Vec<SqlValue>, SqlError> {
        Ok(self.into())
    }
}

macro_rules! tuple_params {
    ($(($($name:ident),+)),* $(,)?) => {$(
        impl<$($name: Serialize),+> SqlParams for ($($name,)+) {
            #[allow(non_snake_case)]
            fn into_values(self) -> Result<Vec<SqlValue>, SqlError> {
                let ($($name,)+) = self;
                Ok(vec![$(SqlValue::from_serialize(&$name)?),+])
            }
        }
    )*};
}

tuple_params!(
    (A),
    (A, B),
    (A, B, C),
    (A, B, C, D),
    (A, B, C, D, E),
    (A, B, C, D, E, F),
    (A, B, C, D, E, F, G),
    (A, B, C, D, E, F, G, H),
    (A, B, C, D, E, F, G, H, I),
    (A, B, C, D, E, F, G, H, I, J),
    (A, B, C, D, E, F, G, H, I, J, K),
    (A, B, C, D, E, F, G, H, I, J, K, L),
);

/// The parameters [`sql!`](crate::sql!) binds, gathered one interpolation at a time (any
/// number of them); the first that cannot be bound is the statement's error.
#[doc(hidden)]
#[derive(Debug)]
pub struct Bindings(Result<Vec<SqlValue>, SqlError>);

impl Bindings {
    /// No parameters yet.
    pub fn new() -> Self {
        Self(Ok(Vec::new()))
    }

    /// `value` is the next parameter.
    pub fn bind<T: Serialize + ?Sized>(mut self, value: &T) -> Self {
        if let Ok(values) = &mut self.0 {
            match SqlValue::from_serialize(value) {
                Ok(value) => values.push(value),
                Err(e) => self.0 = Err(e),
            }
        }
        self
    }
}

impl Default for Bindings {
    fn default() -> Self {
        Self::new()
    }
}

impl SqlParams for Bindings {
    fn into_values(self) -> Result<Vec<SqlValue>, SqlError> {
        self.0
    }
}

/// Why [`Scalar`] did not make a value: the value is compound (bound as JSON), or invalid.
enum Compound {
    Json,
    Error(SqlError),
}

impl std::fmt::Debug for Compound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("compound")
    }
}

impl std::fmt::Display for Compound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Json => f.write_str("a compound value"),
            Self::Error(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for Compound {}

impl ser::Error for Compound {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        Self::Error(<SqlError as ser::Error>::custom(msg))
    }
}

/// Serializes a scalar into a [`SqlValue`]; anything compound is refused with
/// [`Compound::Json`], for its JSON text instead.
struct Scalar;

impl ser::Serializer for Scalar {
    type Ok = SqlValue;
    type Error = Compound;
    type SerializeSeq = Impossible<SqlValue, Compound>;
    type SerializeTuple = Impossible<SqlValue, Compound>;
    type SerializeTupleStruct = Impossible<SqlValue, Compound>;
    type SerializeTupleVariant = Impossible<SqlValue, Compound>;
    type SerializeMap = Impossible<SqlValue, Compound>;
    type SerializeStruct = Impossible<SqlValue, Compound>;
    type SerializeStructVariant = Impossible<SqlValue, Compound>;

    fn serialize_bool(self, v: bool) -> Result<SqlValue, Compound> {
        Ok(v.into())
    }
    fn serialize_i8(self, v: i8) -> Result<SqlValue, Compound> {
        Ok(SqlValue::Integer(v.into()))
    }
    fn serialize_i16(self, v: i16) -> Result<SqlValue, Compound> {
        Ok(SqlValue::Integer(v.into()))
    }
    fn serialize_i32(self, v: i32) -> Result<SqlValue, Compound> {
        Ok(SqlValue::Integer(v.into()))
    }
    fn serialize_i64(self, v: i64) -> Result<SqlValue, Compound> {
        Ok(SqlValue::Integer(v))
    }
    fn serialize_u8(self, v: u8) -> Result<SqlValue, Compound> {
        Ok(SqlValue::Integer(v.into()))
    }
    fn serialize_u16(self, v: u16) -> Result<SqlValue, Compound> {
        Ok(SqlValue::Integer(v.into()))
    }
    fn serialize_u32(self, v: u32) -> Result<SqlValue, Compound> {
        Ok(SqlValue::Integer(v.into()))
    }
    fn serialize_u64(self, v: u64) -> Result<SqlValue, Compound> {
        i64::try_from(v).map(SqlValue::Integer).map_err(|_| {
            Compound::Error(SqlError::new(format!(
                "{v} cannot be bound: SQLite integers are 64-bit signed (at most {})",
                i64::MAX
            )))
        })
    }
    fn serialize_f32(self, v: f32) -> Result<SqlValue, Compound> {
        Ok(SqlValue::Real(v.into()))
    }
    fn serialize_f64(self, v: f64) -> Result<SqlValue, Compound> {
        Ok(SqlValue::Real(v))
    }
    fn serialize_char(self, v: char) -> Result<SqlValue, Compound> {
        Ok(SqlValue::Text(v.to_string()))
    }
    fn serialize_str(self, v: &str) -> Result<SqlValue, Compound> {
        Ok(SqlValue::Text(v.to_owned()))
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<SqlValue, Compound> {
        Ok(SqlValue::Blob(v.to_vec()))
    }
    fn serialize_none(self) -> Result<SqlValue, Compound> {
        Ok(SqlValue::Null)
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<SqlValue, Compound> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<SqlValue, Compound> {
        Ok(SqlValue::Null)
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<SqlValue, Compound> {
        Ok(SqlValue::Null)
    }
    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
    ) -> Result<SqlValue, Compound> {
        Ok(SqlValue::Text(variant.to_owned()))
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<SqlValue, Compound> {
        value.serialize(self)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, Compound> {
        Err(Compound::Json)
    }
    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, Compound> {
        Err(Compound::Json)
    }
    refuse_compounds!(SqlValue, Compound::Json);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialize_values_bind_as_sqlite_values() {
        let bind = |v: &dyn erased::Bind| v.bind();
        assert_eq!(bind(&7_u8), SqlValue::Integer(7));
        assert_eq!(bind(&true), SqlValue::Integer(1));
        assert_eq!(bind(&1.5_f64), SqlValue::Real(1.5));
        assert_eq!(bind(&"x'; DROP TABLE t; --"), SqlValue::Text("x'; DROP TABLE t; --".into()));
        assert_eq!(bind(&Option::<i64>::None), SqlValue::Null);
        assert_eq!(bind(&vec![1, 2]), SqlValue::Text("[1,2]".into()));
        assert_eq!(bind(&vec![1_u8, 2]), SqlValue::Blob(vec![1, 2]));
        assert_eq!(bind(&[7_u8; 3]), SqlValue::Blob(vec![7; 3]));
        assert_eq!(bind(&Vec::<u8>::new()), SqlValue::Text("[]".into()));
        assert_eq!(bind(&vec![300_u16]), SqlValue::Text("[300]".into()));
        let too_big = SqlValue::from_serialize(&u64::MAX).unwrap_err().to_string();
        assert!(too_big.contains("64-bit signed"), "{too_big}");
        let values = (1, "a", None::<String>).into_values().expect("bound");
        assert_eq!(values, [SqlValue::Integer(1), SqlValue::Text("a".into()), SqlValue::Null]);
        let gathered = Bindings::new().bind(&1).bind("two").into_values().expect("bound");
        assert_eq!(gathered.len(), 2);
        assert!(Bindings::new().bind(&u64::MAX).bind(&1).into_values().is_err());
    }

    mod erased {
        pub(super) trait Bind {
            fn bind(&self) -> super::SqlValue;
        }
        impl<T: serde::Serialize> Bind for T {
            fn bind(&self) -> super::SqlValue {
                super::SqlValue::from_serialize(self).expect("binds")
            }
        }
    }
}
