//! [`Bytes`]: a serializer that accepts a non-empty list of `u8`s (`Vec<u8>`, `[u8; N]`) and
//! refuses anything else, so such a list binds as a BLOB rather than as JSON text.

use serde::Serialize;
use serde::ser::{self, Impossible};

/// Collects a non-empty sequence of `u8`s.
#[derive(Default)]
pub(super) struct Bytes(Vec<u8>);

/// What [`Bytes`] and [`Byte`] answer to anything else.
#[derive(Debug)]
pub(super) struct NotBytes;

impl std::fmt::Display for NotBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("not a list of bytes")
    }
}

impl std::error::Error for NotBytes {}

impl ser::Error for NotBytes {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        Self
    }
}

/// The methods of a `Serializer` that refuse: every kind of value but the one it takes.
macro_rules! refuse {
    ($ok:ty; $($method:ident($($ty:ty),*)),* $(,)?) => {$(
        fn $method(self, $(_: $ty),*) -> Result<$ok, NotBytes> {
            Err(NotBytes)
        }
    )*};
}

/// One element of a byte list: a `u8`, or not.
struct Byte;

impl ser::Serializer for Byte {
    type Ok = u8;
    type Error = NotBytes;
    type SerializeSeq = Impossible<u8, NotBytes>;
    type SerializeTuple = Impossible<u8, NotBytes>;
    type SerializeTupleStruct = Impossible<u8, NotBytes>;
    type SerializeTupleVariant = Impossible<u8, NotBytes>;
    type SerializeMap = Impossible<u8, NotBytes>;
    type SerializeStruct = Impossible<u8, NotBytes>;
    type SerializeStructVariant = Impossible<u8, NotBytes>;

    fn serialize_u8(self, v: u8) -> Result<u8, NotBytes> {
        Ok(v)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: &T,
    ) -> Result<u8, NotBytes> {
        Err(NotBytes)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, NotBytes> {
        Err(NotBytes)
    }
    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, NotBytes> {
        Err(NotBytes)
    }
    refuse!(u8; serialize_bool(bool), serialize_i8(i8), serialize_i16(i16), serialize_i32(i32),
        serialize_i64(i64), serialize_u16(u16), serialize_u32(u32), serialize_u64(u64),
        serialize_f32(f32), serialize_f64(f64), serialize_char(char), serialize_str(&str),
        serialize_bytes(&[u8]), serialize_none(), serialize_unit(),
        serialize_unit_struct(&'static str),
        serialize_unit_variant(&'static str, u32, &'static str));
    fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result<u8, NotBytes> {
        Err(NotBytes)
    }
    refuse_compounds!(u8, NotBytes);
}

impl ser::SerializeSeq for Bytes {
    type Ok = Vec<u8>;
    type Error = NotBytes;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), NotBytes> {
        self.0.push(value.serialize(Byte)?);
        Ok(())
    }

    fn end(self) -> Result<Vec<u8>, NotBytes> {
        if self.0.is_empty() { Err(NotBytes) } else { Ok(self.0) }
    }
}

impl ser::SerializeTuple for Bytes {
    type Ok = Vec<u8>;
    type Error = NotBytes;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), NotBytes> {
        ser::SerializeSeq::serialize_element(self, value)
    }

    fn end(self) -> Result<Vec<u8>, NotBytes> {
        ser::SerializeSeq::end(self)
    }
}

impl ser::Serializer for Bytes {
    type Ok = Vec<u8>;
    type Error = NotBytes;
    type SerializeSeq = Self;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Impossible<Vec<u8>, NotBytes>;
    type SerializeTupleVariant = Impossible<Vec<u8>, NotBytes>;
    type SerializeMap = Impossible<Vec<u8>, NotBytes>;
    type SerializeStruct = Impossible<Vec<u8>, NotBytes>;
    type SerializeStructVariant = Impossible<Vec<u8>, NotBytes>;

    fn serialize_seq(self, _: Option<usize>) -> Result<Self, NotBytes> {
        Ok(self)
    }
    fn serialize_tuple(self, _: usize) -> Result<Self, NotBytes> {
        Ok(self)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<Vec<u8>, NotBytes> {
        value.serialize(self)
    }
    refuse!(Vec<u8>; serialize_bool(bool), serialize_i8(i8), serialize_i16(i16),
        serialize_i32(i32), serialize_i64(i64), serialize_u8(u8), serialize_u16(u16),
        serialize_u32(u32), serialize_u64(u64), serialize_f32(f32), serialize_f64(f64),
        serialize_char(char), serialize_str(&str), serialize_bytes(&[u8]), serialize_none(),
        serialize_unit(), serialize_unit_struct(&'static str),
        serialize_unit_variant(&'static str, u32, &'static str));
    fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result<Vec<u8>, NotBytes> {
        Err(NotBytes)
    }
    refuse_compounds!(Vec<u8>, NotBytes);
}
