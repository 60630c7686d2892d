//! A serde `Deserializer` that reads an Avro body straight into a Rust type, guided by the
//! writer schema: no intermediate `apache_avro::types::Value`, no field-name allocations.
//!
//! Used only when the writer schema is the reader schema (the common case); a record written with
//! another version goes through apache-avro's `Value` resolution, which applies defaults, promotions
//! and renames. It mirrors how `apache_avro::from_value` presents values to serde: records and maps
//! as maps, `["null", T]` as options, enums by symbol.
//!
//! It needs no pre-check of the body: every length is compared with the bytes left before anything
//! is taken, nothing is reserved from a count, and [`supports`] leaves out arrays of a type that can
//! take no bytes, so every item read uses input and a forged count cannot spin.

use super::precheck::min_size;
use super::wire::{BodyFault, Cursor};
use apache_avro::Schema;
use serde::de::value::{BorrowedStrDeserializer, StrDeserializer};
use serde::de::{
    self, DeserializeOwned, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor,
};
use std::fmt;

/// Why the body did not fit the schema or the type; keeps a truncated body apart from a bad one.
#[derive(Debug)]
pub(crate) struct DirectError(pub(crate) BodyFault);

impl DirectError {
    fn invalid(message: String) -> Self {
        DirectError(BodyFault::Invalid(message))
    }
}

impl fmt::Display for DirectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            BodyFault::Truncated(m) | BodyFault::Invalid(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for DirectError {}

impl de::Error for DirectError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DirectError::invalid(msg.to_string())
    }
}

impl From<BodyFault> for DirectError {
    fn from(f: BodyFault) -> Self {
        DirectError(f)
    }
}

impl From<DirectError> for BodyFault {
    fn from(e: DirectError) -> Self {
        e.0
    }
}

/// Whether every type in `schema` (refs inlined) is one this decoder reads.
pub(crate) fn supports(schema: &Schema) -> bool {
    match schema {
        Schema::Null
        | Schema::Boolean
        | Schema::Int
        | Schema::Long
        | Schema::Float
        | Schema::Double
        | Schema::Bytes
        | Schema::String
        | Schema::Enum(_)
        | Schema::TimestampMillis
        | Schema::TimestampMicros
        | Schema::LocalTimestampMillis
        | Schema::LocalTimestampMicros => true,
        Schema::Array(a) => min_size(&a.items, 0) > 0 && supports(&a.items),
        Schema::Map(m) => supports(&m.types),
        Schema::Union(u) => u.variants().iter().all(supports),
        Schema::Record(r) => r.fields.iter().all(|f| supports(&f.schema)),
        _ => false,
    }
}

/// Decodes one datum of `schema` from `body` into `T`; the whole body must be used.
pub(crate) fn from_body<T: DeserializeOwned>(
    schema: &Schema,
    body: &[u8],
) -> Result<T, DirectError> {
    let mut cur = Cursor { rest: body };
    let value = T::deserialize(Datum {
        schema,
        cur: &mut cur,
    })?;
    match cur.rest.len() {
        0 => Ok(value),
        n => Err(DirectError::invalid(format!(
            "{n} bytes left after the record"
        ))),
    }
}

/// One datum of `schema` at the cursor.
struct Datum<'s, 'c, 'de> {
    schema: &'s Schema,
    cur: &'c mut Cursor<'de>,
}

impl<'s, 'de> Datum<'s, '_, 'de> {
    fn string(&mut self) -> Result<&'de str, DirectError> {
        let len = self.cur.count("a string length")?;
        let bytes = self.cur.take(len, "a string")?;
        std::str::from_utf8(bytes)
            .map_err(|e| DirectError::invalid(format!("string is not UTF-8: {e}")))
    }

    fn symbol(&mut self) -> Result<&'s str, DirectError> {
        let Schema::Enum(e) = self.schema else {
            return Err(DirectError::invalid(format!(
                "expected an enum, schema is {}",
                self.schema
            )));
        };
        let i = self.cur.count("an enum index")?;
        usize::try_from(i)
            .ok()
            .and_then(|i| e.symbols.get(i))
            .map(String::as_str)
            .ok_or_else(|| DirectError::invalid(format!("enum index {i} of {}", e.symbols.len())))
    }

    fn variant(&mut self) -> Result<&'s Schema, DirectError> {
        let Schema::Union(u) = self.schema else {
            return Err(DirectError::invalid(format!(
                "expected a union, schema is {}",
                self.schema
            )));
        };
        let i = self.cur.count("a union index")?;
        usize::try_from(i)
            .ok()
            .and_then(|i| u.variants().get(i))
            .ok_or_else(|| DirectError::invalid(format!("union index {i}")))
    }
}

impl<'de> de::Deserializer<'de> for Datum<'_, '_, 'de> {
    type Error = DirectError;

    fn deserialize_any<V: Visitor<'de>>(mut self, visitor: V) -> Result<V::Value, DirectError> {
        match self.schema {
            Schema::Null => visitor.visit_unit(),
            Schema::Boolean => match self.cur.byte("a boolean")? {
                b @ (0 | 1) => visitor.visit_bool(b == 1),
                b => Err(DirectError::invalid(format!("boolean byte {b}"))),
            },
            Schema::Int => {
                let v = self.cur.long("an int")?;
                let v = i32::try_from(v)
                    .map_err(|_| DirectError::invalid(format!("int {v} out of range")))?;
                visitor.visit_i32(v)
            }
            Schema::Long
            | Schema::TimestampMillis
            | Schema::TimestampMicros
            | Schema::LocalTimestampMillis
            | Schema::LocalTimestampMicros => visitor.visit_i64(self.cur.long("a long")?),
            Schema::Float => {
                let b = self.cur.take(4, "a float")?;
                visitor.visit_f32(f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            }
            Schema::Double => {
                let b = self.cur.take(8, "a double")?;
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                visitor.visit_f64(f64::from_le_bytes(a))
            }
            Schema::String => visitor.visit_borrowed_str(self.string()?),
            Schema::Bytes => {
                let len = self.cur.count("a bytes length")?;
                visitor.visit_borrowed_bytes(self.cur.take(len, "bytes")?)
            }
            Schema::Enum(_) => visitor.visit_str(self.symbol()?),
            Schema::Union(_) => {
                let schema = self.variant()?;
                Datum {
                    schema,
                    cur: self.cur,
                }
                .deserialize_any(visitor)
            }
            Schema::Array(a) => visitor.visit_seq(Blocks {
                items: &a.items,
                cur: self.cur,
                left: 0,
                done: false,
            }),
            Schema::Map(m) => visitor.visit_map(Blocks {
                items: &m.types,
                cur: self.cur,
                left: 0,
                done: false,
            }),
            Schema::Record(r) => visitor.visit_map(Fields {
                fields: &r.fields,
                next: 0,
                cur: self.cur,
            }),
            other => Err(DirectError::invalid(format!(
                "schema type {other} is not supported"
            ))),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(mut self, visitor: V) -> Result<V::Value, DirectError> {
        match self.schema {
            Schema::Union(_) => match self.variant()? {
                Schema::Null => visitor.visit_none(),
                schema => visitor.visit_some(Datum {
                    schema,
                    cur: self.cur,
                }),
            },
            Schema::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        mut self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DirectError> {
        let symbol = self.symbol()?;
        visitor.visit_enum(IntoDeserializer::<DirectError>::into_deserializer(symbol))
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DirectError> {
        visitor.visit_newtype_struct(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf unit
        unit_struct seq tuple tuple_struct map struct identifier ignored_any
    }
}

/// Record fields as a serde map, in schema order.
struct Fields<'s, 'c, 'de> {
    fields: &'s [apache_avro::schema::RecordField],
    next: usize,
    cur: &'c mut Cursor<'de>,
}

impl<'de> MapAccess<'de> for Fields<'_, '_, 'de> {
    type Error = DirectError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DirectError> {
        match self.fields.get(self.next) {
            Some(f) => seed
                .deserialize(StrDeserializer::<DirectError>::new(&f.name))
                .map(Some),
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, DirectError> {
        let field = self
            .fields
            .get(self.next)
            .ok_or_else(|| DirectError::invalid("value requested after the last field".into()))?;
        self.next += 1;
        seed.deserialize(Datum {
            schema: &field.schema,
            cur: self.cur,
        })
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.fields.len() - self.next)
    }
}

/// Array items or map entries, in Avro blocks.
struct Blocks<'s, 'c, 'de> {
    items: &'s Schema,
    cur: &'c mut Cursor<'de>,
    /// Items left in the current block.
    left: u64,
    done: bool,
}

impl<'de> Blocks<'_, '_, 'de> {
    /// Moves to the next item; false at the end of the array or map.
    fn advance(&mut self) -> Result<bool, DirectError> {
        if self.done {
            return Ok(false);
        }
        if self.left == 0 {
            let raw = self.cur.long("a block count")?;
            if raw == 0 {
                self.done = true;
                return Ok(false);
            }
            if raw < 0 {
                self.cur.long("a block size")?;
            }
            self.left = raw.unsigned_abs();
        }
        self.left -= 1;
        Ok(true)
    }

    fn item<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, DirectError> {
        seed.deserialize(Datum {
            schema: self.items,
            cur: self.cur,
        })
    }
}

impl<'de> SeqAccess<'de> for Blocks<'_, '_, 'de> {
    type Error = DirectError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DirectError> {
        if !self.advance()? {
            return Ok(None);
        }
        self.item(seed).map(Some)
    }
}

impl<'de> MapAccess<'de> for Blocks<'_, '_, 'de> {
    type Error = DirectError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DirectError> {
        if !self.advance()? {
            return Ok(None);
        }
        let len = self.cur.count("a map key length")?;
        let key = self.cur.take(len, "a map key")?;
        let key = std::str::from_utf8(key)
            .map_err(|e| DirectError::invalid(format!("map key is not UTF-8: {e}")))?;
        seed.deserialize(BorrowedStrDeserializer::new(key))
            .map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, DirectError> {
        self.item(seed)
    }
}
