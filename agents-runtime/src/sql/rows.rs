//! [`SqlCursor`]: the rows a statement returned, read into any `Deserialize` type: a struct or
//! a map by column name, a tuple by position, or, for a one-column row, the value itself.

use std::sync::Arc;

use serde::de::value::{MapDeserializer, SeqDeserializer};
use serde::de::{self, DeserializeOwned, IntoDeserializer, Visitor};
use serde::forward_to_deserialize_any;

use super::{SqlError, SqlValue};

/// What [`Sql::exec`](crate::Sql::exec) returns (`SqlStorageCursor`): the statement's rows, its
/// column names, and how many rows it read and wrote.
#[derive(Clone, Debug, Default)]
pub struct SqlCursor {
    pub(crate) columns: Arc<[String]>,
    pub(crate) rows: Vec<Vec<SqlValue>>,
    pub(crate) rows_written: u64,
}

impl SqlCursor {
    /// Every row, as `T` (`toArray()`).
    pub fn to_array<T: DeserializeOwned>(&self) -> Result<Vec<T>, SqlError> {
        self.rows.iter().map(|row| self.read(row)).collect()
    }

    /// The only row, as `T` (`one()`): an error if there is none or more than one.
    pub fn one<T: DeserializeOwned>(&self) -> Result<T, SqlError> {
        match self.rows.as_slice() {
            [row] => self.read(row),
            [] => Err(SqlError::new(
                "Expected exactly one result from SQL query, but got no results.",
            )),
            _ => Err(SqlError::new(
                "Expected exactly one result from SQL query, but got multiple results.",
            )),
        }
    }

    /// The first row as `T`, or `None` when there is none: for a lookup by key.
    pub fn one_or_none<T: DeserializeOwned>(&self) -> Result<Option<T>, SqlError> {
        self.rows.first().map(|row| self.read(row)).transpose()
    }

    /// The rows as SQLite returned them, each a list of values in column order (`raw()`).
    pub fn raw(&self) -> &[Vec<SqlValue>] {
        &self.rows
    }

    /// The names of the columns, in order (`columnNames`).
    pub fn column_names(&self) -> &[String] {
        &self.columns
    }

    /// How many rows the statement returned (`rowsRead`, counted as the rows returned).
    pub fn rows_read(&self) -> u64 {
        self.rows.len() as u64
    }

    /// How many rows the statement inserted, updated or deleted (`rowsWritten`).
    pub fn rows_written(&self) -> u64 {
        self.rows_written
    }

    fn read<T: DeserializeOwned>(&self, row: &[SqlValue]) -> Result<T, SqlError> {
        T::deserialize(RowDe { columns: &self.columns, values: row })
    }
}

/// One row: a map by column name, a sequence in column order, or its single column.
struct RowDe<'a> {
    columns: &'a [String],
    values: &'a [SqlValue],
}

impl<'a> RowDe<'a> {
    fn single(self, wanted: &str) -> Result<ValueDe<'a>, SqlError> {
        match self.values {
            [value] => Ok(ValueDe(value)),
            values => Err(SqlError::new(format!(
                "a row has {} columns: {wanted} takes a row of one column (read the row into a \
                 struct, a map or a tuple instead)",
                values.len()
            ))),
        }
    }

    fn map(self) -> MapDeserializer<'a, impl Iterator<Item = (&'a str, ValueDe<'a>)>, SqlError> {
        let entries = self.columns.iter().map(String::as_str).zip(self.values.iter().map(ValueDe));
        MapDeserializer::new(entries)
    }
}

macro_rules! one_column {
    ($($method:ident => $what:literal),* $(,)?) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, SqlError> {
            self.single($what)?.$method(visitor)
        }
    )*};
}

impl<'de> de::Deserializer<'de> for RowDe<'de> {
    type Error = SqlError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, SqlError> {
        visitor.visit_map(self.map())
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, SqlError> {
        visitor.visit_map(self.map())
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, SqlError> {
        visitor.visit_map(self.map())
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, SqlError> {
        visitor.visit_seq(SeqDeserializer::new(self.values.iter().map(ValueDe)))
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _: usize,
        visitor: V,
    ) -> Result<V::Value, SqlError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: usize,
        visitor: V,
    ) -> Result<V::Value, SqlError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, SqlError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, SqlError> {
        self.single("an enum")?.deserialize_enum(name, variants, visitor)
    }

    one_column!(
        deserialize_bool => "a bool", deserialize_i8 => "an integer",
        deserialize_i16 => "an integer", deserialize_i32 => "an integer",
        deserialize_i64 => "an integer", deserialize_i128 => "an integer",
        deserialize_u8 => "an integer", deserialize_u16 => "an integer",
        deserialize_u32 => "an integer", deserialize_u64 => "an integer",
        deserialize_u128 => "an integer", deserialize_f32 => "a number",
        deserialize_f64 => "a number", deserialize_char => "a char",
        deserialize_str => "a string", deserialize_string => "a string",
        deserialize_bytes => "bytes", deserialize_byte_buf => "bytes",
        deserialize_option => "an Option", deserialize_unit => "()",
        deserialize_identifier => "an identifier", deserialize_ignored_any => "a value",
    );

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, SqlError> {
        self.single("a unit struct")?.deserialize_unit_struct(name, visitor)
    }
}

/// One column's value. Text holding JSON reads into a list, a map or a struct (compound
/// parameters are bound as their JSON text).
#[derive(Clone, Copy)]
struct ValueDe<'a>(&'a SqlValue);

impl<'de> IntoDeserializer<'de, SqlError> for ValueDe<'de> {
    type Deserializer = Self;

    fn into_deserializer(self) -> Self {
        self
    }
}

impl<'de> ValueDe<'de> {
    /// The value as JSON text, for a compound type.
    fn json(
        self,
        wanted: &str,
    ) -> Result<serde_json::Deserializer<serde_json::de::StrRead<'de>>, SqlError> {
        match self.0 {
            SqlValue::Text(text) => Ok(serde_json::Deserializer::from_str(text)),
            other => Err(SqlError::new(format!("a column holds {}, not {wanted}", kind(other)))),
        }
    }
}

fn kind(value: &SqlValue) -> &'static str {
    match value {
        SqlValue::Null => "NULL",
        SqlValue::Integer(_) => "an integer",
        SqlValue::Real(_) => "a real",
        SqlValue::Text(_) => "text",
        SqlValue::Blob(_) => "a blob",
    }
}

fn json_error(e: serde_json::Error) -> SqlError {
    SqlError::new(format!("a column's JSON text does not fit the type asked for: {e}"))
}

impl<'de> de::Deserializer<'de> for ValueDe<'de> {
    type Error = SqlError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, SqlError> {
        match self.0 {
            SqlValue::Null => visitor.visit_unit(),
            SqlValue::Integer(i) => visitor.visit_i64(*i),
            SqlValue::Real(f) => visitor.visit_f64(*f),
            SqlValue::Text(text) => visitor.visit_borrowed_str(text),
            SqlValue::Blob(bytes) => visitor.visit_borrowed_bytes(bytes),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, SqlError> {
        match self.0 {
            SqlValue::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, SqlError> {
        match self.0 {
            SqlValue::Integer(i) => visitor.visit_bool(*i != 0),
            _ => self.deserialize_any(visitor),
        }
    }

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, SqlError> {
        self.deserialize_f64(visitor)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, SqlError> {
        match self.0 {
            SqlValue::Integer(i) => visitor.visit_f64(*i as f64),
            _ => self.deserialize_any(visitor),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, SqlError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, SqlError> {
        match self.0 {
            SqlValue::Blob(bytes) => visitor.visit_seq(SeqDeserializer::new(bytes.iter().copied())),
            _ => self.json("a list")?.deserialize_seq(visitor).map_err(json_error),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, SqlError> {
        self.json("a tuple")?.deserialize_tuple(len, visitor).map_err(json_error)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, SqlError> {
        self.json("a tuple")?.deserialize_tuple_struct(name, len, visitor).map_err(json_error)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, SqlError> {
        self.json("a map")?.deserialize_map(visitor).map_err(json_error)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, SqlError> {
        self.json("a struct")?.deserialize_struct(name, fields, visitor).map_err(json_error)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, SqlError> {
        match self.0 {
            // A unit variant is stored as its name; any other variant as JSON.
            SqlValue::Text(text) if !text.starts_with('{') => {
                let variant: de::value::StrDeserializer<'_, SqlError> =
                    text.as_str().into_deserializer();
                variant.deserialize_enum(name, variants, visitor)
            }
            _ => {
                self.json("an enum")?.deserialize_enum(name, variants, visitor).map_err(json_error)
            }
        }
    }

    forward_to_deserialize_any! {
        i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 char str string bytes byte_buf unit
        unit_struct identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    fn cursor(columns: &[&str], rows: Vec<Vec<SqlValue>>) -> SqlCursor {
        let columns = columns.iter().map(|c| (*c).to_owned()).collect::<Vec<_>>().into();
        SqlCursor { columns, rows, rows_written: 0 }
    }

    #[derive(Debug, Deserialize, PartialEq)]
    struct Entry {
        key: String,
        value: Option<String>,
        tags: Vec<String>,
        done: bool,
    }

    #[test]
    fn rows_read_into_structs_tuples_and_single_values() {
        let rows = cursor(
            &["key", "value", "tags", "done"],
            vec![vec![
                SqlValue::Text("a".into()),
                SqlValue::Null,
                SqlValue::Text(r#"["x","y"]"#.into()),
                SqlValue::Integer(1),
            ]],
        );
        let entry: Entry = rows.one().expect("one");
        assert_eq!(
            entry,
            Entry { key: "a".into(), value: None, tags: vec!["x".into(), "y".into()], done: true }
        );
        let (key, value): (String, Option<String>) = {
            let two = cursor(
                &["key", "value"],
                vec![vec![SqlValue::Text("a".into()), SqlValue::Integer(2)]],
            );
            let (k, v): (String, Option<i64>) = two.one().expect("tuple");
            (k, v.map(|v| v.to_string()))
        };
        assert_eq!((key.as_str(), value.as_deref()), ("a", Some("2")));
        let count = cursor(&["count(*)"], vec![vec![SqlValue::Integer(3)]]);
        assert_eq!(count.one::<u64>().expect("value"), 3);
        assert_eq!(count.one::<f64>().expect("as a float"), 3.0);
        let map: std::collections::BTreeMap<String, serde_json::Value> = count.one().expect("map");
        assert_eq!(map["count(*)"], 3);
        let none = cursor(&["value"], vec![]);
        assert_eq!(none.one_or_none::<String>().expect("none"), None);
        assert!(none.one::<String>().unwrap_err().to_string().contains("no results"));
        let err = rows.one::<String>().unwrap_err().to_string();
        assert!(err.contains("4 columns"), "{err}");
        let wrong = cursor(&["n"], vec![vec![SqlValue::Text("x".into())]]);
        assert!(wrong.one::<i64>().is_err());
    }
}
