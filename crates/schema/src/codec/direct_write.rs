//! A serde `Serializer` that writes a Rust value straight into an Avro body, guided by the schema:
//! no intermediate `apache_avro::types::Value`, no field look-up by name.
//!
//! It is the mirror of [`direct_read`](super::direct_read) and reads serde's data model the way
//! apache-avro's schema-aware writer does: structs as records, maps with string keys as maps,
//! sequences as arrays, `Option` as a `["null", T]` union, unit variants and strings as enum
//! symbols; the crate's tests check that it writes the same bytes as apache-avro for every shipped
//! record type (an array or map is always one block; apache-avro splits long ones, both are valid
//! Avro). Unlike apache-avro 0.21, which writes struct fields in declaration order whatever the
//! schema says and never checks for missing ones, it puts fields in schema order and refuses a
//! record with missing, repeated, skipped or unknown fields ([`WriteError::Fields`]). A shape
//! outside its model (a union with several non-null branches, say) is
//! [`WriteError::Unsupported`], and [`Codec::encode_into`](super::Codec::encode_into) then falls
//! back to apache-avro's writer.

use apache_avro::Schema;
use apache_avro::schema::RecordField;
use serde::ser::{
    self, Impossible, Serialize, SerializeMap, SerializeSeq, SerializeStruct, Serializer,
};
use std::fmt;

/// Why a value could not be written directly.
#[derive(Debug)]
pub(crate) enum WriteError {
    /// A shape this writer does not model (a union with several non-null branches, a logical type
    /// it does not write): the caller falls back to apache-avro's writer.
    Unsupported(String),
    /// The value's record fields do not match the schema's (missing, repeated, skipped or unknown
    /// fields). No writer can fix that, and apache-avro's would write a broken body without an
    /// error, so the caller reports it.
    Fields(String),
}

impl WriteError {
    pub(crate) fn message(&self) -> &str {
        match self {
            WriteError::Unsupported(m) | WriteError::Fields(m) => m,
        }
    }
}

impl fmt::Display for WriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for WriteError {}

impl ser::Error for WriteError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        WriteError::Unsupported(msg.to_string())
    }
}

/// Appends the Avro body of `value` under `schema` (refs inlined) to `out`. On error `out` may
/// hold part of the body: the caller truncates it.
pub(crate) fn to_body<T: Serialize + ?Sized>(
    schema: &Schema,
    value: &T,
    out: &mut Vec<u8>,
) -> Result<(), WriteError> {
    value.serialize(Datum { schema, out })
}

/// Appends a zig-zag varint `long`.
fn put_long(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

/// Appends a length-prefixed string or byte string.
fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_long(out, b.len() as i64);
    out.extend_from_slice(b);
}

/// Appends a non-negative count or index.
fn put_count(out: &mut Vec<u8>, n: usize) {
    put_long(out, n as i64);
}

fn mismatch(what: &str, schema: &Schema) -> WriteError {
    WriteError::Unsupported(format!("{what} does not fit schema {schema}"))
}

/// One datum of `schema`, written at the end of `out`.
struct Datum<'s, 'o> {
    schema: &'s Schema,
    out: &'o mut Vec<u8>,
}

impl<'s, 'o> Datum<'s, 'o> {
    /// For a value that is not null: inside a union, writes the index of its only non-null branch
    /// and continues with that branch.
    fn present(self) -> Result<Self, WriteError> {
        let Schema::Union(u) = self.schema else {
            return Ok(self);
        };
        let mut branches = u
            .variants()
            .iter()
            .enumerate()
            .filter(|(_, s)| !matches!(s, Schema::Null));
        match (branches.next(), branches.next()) {
            (Some((i, schema)), None) => {
                put_count(self.out, i);
                Ok(Datum {
                    schema,
                    out: self.out,
                })
            }
            _ => Err(WriteError::Unsupported(format!(
                "union {} has no single non-null branch",
                self.schema
            ))),
        }
    }

    fn symbol(self, symbol: &str) -> Result<(), WriteError> {
        let d = self.present()?;
        match d.schema {
            Schema::Enum(e) => match e.symbols.iter().position(|s| s == symbol) {
                Some(i) => {
                    put_count(d.out, i);
                    Ok(())
                }
                None => Err(WriteError::Unsupported(format!(
                    "{symbol} is not a symbol of {}",
                    d.schema
                ))),
            },
            Schema::String => {
                put_bytes(d.out, symbol.as_bytes());
                Ok(())
            }
            other => Err(mismatch("an enum symbol", other)),
        }
    }
}

impl<'s, 'o> Serializer for Datum<'s, 'o> {
    type Ok = ();
    type Error = WriteError;
    type SerializeSeq = Items<'s, 'o>;
    type SerializeTuple = Impossible<(), WriteError>;
    type SerializeTupleStruct = Impossible<(), WriteError>;
    type SerializeTupleVariant = Impossible<(), WriteError>;
    type SerializeMap = Items<'s, 'o>;
    type SerializeStruct = Fields<'s, 'o>;
    type SerializeStructVariant = Impossible<(), WriteError>;

    fn serialize_bool(self, v: bool) -> Result<(), WriteError> {
        let d = self.present()?;
        match d.schema {
            Schema::Boolean => {
                d.out.push(u8::from(v));
                Ok(())
            }
            other => Err(mismatch("a bool", other)),
        }
    }

    fn serialize_i8(self, v: i8) -> Result<(), WriteError> {
        self.serialize_i64(v.into())
    }

    fn serialize_i16(self, v: i16) -> Result<(), WriteError> {
        self.serialize_i64(v.into())
    }

    fn serialize_i32(self, v: i32) -> Result<(), WriteError> {
        self.serialize_i64(v.into())
    }

    fn serialize_i64(self, v: i64) -> Result<(), WriteError> {
        let d = self.present()?;
        match d.schema {
            Schema::Int | Schema::Date | Schema::TimeMillis if i32::try_from(v).is_ok() => {
                put_long(d.out, v);
                Ok(())
            }
            Schema::Long
            | Schema::TimeMicros
            | Schema::TimestampMillis
            | Schema::TimestampMicros
            | Schema::TimestampNanos
            | Schema::LocalTimestampMillis
            | Schema::LocalTimestampMicros
            | Schema::LocalTimestampNanos => {
                put_long(d.out, v);
                Ok(())
            }
            other => Err(mismatch(&format!("integer {v}"), other)),
        }
    }

    fn serialize_u8(self, v: u8) -> Result<(), WriteError> {
        self.serialize_i64(v.into())
    }

    fn serialize_u16(self, v: u16) -> Result<(), WriteError> {
        self.serialize_i64(v.into())
    }

    fn serialize_u32(self, v: u32) -> Result<(), WriteError> {
        self.serialize_i64(v.into())
    }

    fn serialize_u64(self, v: u64) -> Result<(), WriteError> {
        let v =
            i64::try_from(v).map_err(|_| WriteError::Unsupported(format!("{v} exceeds a long")))?;
        self.serialize_i64(v)
    }

    fn serialize_f32(self, v: f32) -> Result<(), WriteError> {
        let d = self.present()?;
        match d.schema {
            Schema::Float => d.out.extend_from_slice(&v.to_le_bytes()),
            Schema::Double => d.out.extend_from_slice(&f64::from(v).to_le_bytes()),
            other => return Err(mismatch("a float", other)),
        }
        Ok(())
    }

    fn serialize_f64(self, v: f64) -> Result<(), WriteError> {
        let d = self.present()?;
        match d.schema {
            Schema::Double => {
                d.out.extend_from_slice(&v.to_le_bytes());
                Ok(())
            }
            other => Err(mismatch("a double", other)),
        }
    }

    fn serialize_char(self, v: char) -> Result<(), WriteError> {
        self.serialize_str(v.encode_utf8(&mut [0; 4]))
    }

    fn serialize_str(self, v: &str) -> Result<(), WriteError> {
        let d = self.present()?;
        match d.schema {
            Schema::String => {
                put_bytes(d.out, v.as_bytes());
                Ok(())
            }
            Schema::Enum(_) => d.symbol(v),
            other => Err(mismatch("a string", other)),
        }
    }

    fn serialize_bytes(self, v: &[u8]) -> Result<(), WriteError> {
        let d = self.present()?;
        match d.schema {
            Schema::Bytes => {
                put_bytes(d.out, v);
                Ok(())
            }
            other => Err(mismatch("bytes", other)),
        }
    }

    fn serialize_none(self) -> Result<(), WriteError> {
        match self.schema {
            Schema::Null => Ok(()),
            Schema::Union(u) => match u.variants().iter().position(|s| *s == Schema::Null) {
                Some(i) => {
                    put_count(self.out, i);
                    Ok(())
                }
                None => Err(mismatch("null", self.schema)),
            },
            other => Err(mismatch("null", other)),
        }
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), WriteError> {
        value.serialize(self)
    }

    fn serialize_unit(self) -> Result<(), WriteError> {
        self.serialize_none()
    }

    fn serialize_unit_struct(self, _name: &'static str) -> Result<(), WriteError> {
        self.serialize_none()
    }

    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<(), WriteError> {
        self.symbol(variant)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<(), WriteError> {
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        _index: u32,
        variant: &'static str,
        _value: &T,
    ) -> Result<(), WriteError> {
        Err(WriteError::Unsupported(format!(
            "enum {name}::{variant} carries data"
        )))
    }

    fn serialize_seq(self, len: Option<usize>) -> Result<Items<'s, 'o>, WriteError> {
        let d = self.present()?;
        match d.schema {
            Schema::Array(a) => Items::start(&a.items, len, d.out),
            other => Err(mismatch("a sequence", other)),
        }
    }

    fn serialize_tuple(self, len: usize) -> Result<Self::SerializeTuple, WriteError> {
        Err(WriteError::Unsupported(format!(
            "a tuple of {len} has no Avro form"
        )))
    }

    fn serialize_tuple_struct(
        self,
        name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleStruct, WriteError> {
        Err(WriteError::Unsupported(format!(
            "tuple struct {name} has no Avro form"
        )))
    }

    fn serialize_tuple_variant(
        self,
        name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleVariant, WriteError> {
        Err(WriteError::Unsupported(format!(
            "enum {name}::{variant} carries data"
        )))
    }

    fn serialize_map(self, len: Option<usize>) -> Result<Items<'s, 'o>, WriteError> {
        let d = self.present()?;
        match d.schema {
            Schema::Map(m) => Items::start(&m.types, len, d.out),
            other => Err(mismatch("a map", other)),
        }
    }

    fn serialize_struct(
        self,
        name: &'static str,
        _len: usize,
    ) -> Result<Fields<'s, 'o>, WriteError> {
        let d = self.present()?;
        match d.schema {
            Schema::Record(r) => Ok(Fields {
                fields: &r.fields,
                next: 0,
                reordered: Vec::new(),
                out: d.out,
            }),
            other => Err(mismatch(&format!("struct {name}"), other)),
        }
    }

    fn serialize_struct_variant(
        self,
        name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStructVariant, WriteError> {
        Err(WriteError::Unsupported(format!(
            "enum {name}::{variant} carries data"
        )))
    }
}

/// Array items or map entries: one block holding them all, then the end-of-blocks zero.
struct Items<'s, 'o> {
    items: &'s Schema,
    out: &'o mut Vec<u8>,
    /// Items the block count promised but not yet written.
    left: usize,
}

impl<'s, 'o> Items<'s, 'o> {
    fn start(
        items: &'s Schema,
        len: Option<usize>,
        out: &'o mut Vec<u8>,
    ) -> Result<Self, WriteError> {
        // The block count comes first, so the length must be known up front.
        let left = len
            .ok_or_else(|| WriteError::Unsupported("a sequence or map of unknown length".into()))?;
        if left > 0 {
            put_count(out, left);
        }
        Ok(Items { items, out, left })
    }

    fn item<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), WriteError> {
        self.left = self
            .left
            .checked_sub(1)
            .ok_or_else(|| WriteError::Unsupported("more items than announced".into()))?;
        value.serialize(Datum {
            schema: self.items,
            out: self.out,
        })
    }

    fn finish(self) -> Result<(), WriteError> {
        if self.left != 0 {
            return Err(WriteError::Unsupported(format!(
                "{} announced items missing",
                self.left
            )));
        }
        self.out.push(0);
        Ok(())
    }
}

impl SerializeSeq for Items<'_, '_> {
    type Ok = ();
    type Error = WriteError;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), WriteError> {
        self.item(value)
    }

    fn end(self) -> Result<(), WriteError> {
        self.finish()
    }
}

impl SerializeMap for Items<'_, '_> {
    type Ok = ();
    type Error = WriteError;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), WriteError> {
        if self.left == 0 {
            return Err(WriteError::Unsupported(
                "more entries than announced".into(),
            ));
        }
        key.serialize(Datum {
            schema: &Schema::String,
            out: self.out,
        })
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), WriteError> {
        self.item(value)
    }

    fn end(self) -> Result<(), WriteError> {
        self.finish()
    }
}

/// Record fields. They are written straight to the output while they come in schema order; from
/// the first one that does not, the rest are written to one buffer each and appended in schema
/// order at the end.
struct Fields<'s, 'o> {
    fields: &'s [RecordField],
    /// Fields written straight to the output so far.
    next: usize,
    /// Bodies of the fields from `next` on, by schema position, once the order broke.
    reordered: Vec<Option<Vec<u8>>>,
    out: &'o mut Vec<u8>,
}

impl SerializeStruct for Fields<'_, '_> {
    type Ok = ();
    type Error = WriteError;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), WriteError> {
        if self.reordered.is_empty()
            && let Some(field) = self.fields.get(self.next).filter(|f| f.name == key)
        {
            self.next += 1;
            return value.serialize(Datum {
                schema: &field.schema,
                out: self.out,
            });
        }
        let at = self.fields[self.next..]
            .iter()
            .position(|f| f.name == key)
            .ok_or_else(|| {
                WriteError::Fields(format!("field {key} is not in the schema (or twice)"))
            })?;
        if self.reordered.is_empty() {
            self.reordered = vec![None; self.fields.len() - self.next];
        }
        if self.reordered[at].is_some() {
            return Err(WriteError::Fields(format!("field {key} is written twice")));
        }
        let mut body = Vec::new();
        value.serialize(Datum {
            schema: &self.fields[self.next + at].schema,
            out: &mut body,
        })?;
        self.reordered[at] = Some(body);
        Ok(())
    }

    fn skip_field(&mut self, key: &'static str) -> Result<(), WriteError> {
        Err(WriteError::Fields(format!("field {key} is skipped")))
    }

    fn end(self) -> Result<(), WriteError> {
        if self.reordered.is_empty() {
            return match self.fields.get(self.next) {
                None => Ok(()),
                Some(f) => Err(WriteError::Fields(format!("field {} is missing", f.name))),
            };
        }
        for (body, field) in self.reordered.iter().zip(&self.fields[self.next..]) {
            let body = body
                .as_ref()
                .ok_or_else(|| WriteError::Fields(format!("field {} is missing", field.name)))?;
            self.out.extend_from_slice(body);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn direct<T: Serialize>(schema: &str, value: &T) -> Result<Vec<u8>, WriteError> {
        let schema = Schema::parse_str(schema).unwrap();
        let mut out = Vec::new();
        to_body(&schema, value, &mut out).map(|()| out)
    }

    fn reference<T: Serialize>(schema: &str, value: &T) -> Vec<u8> {
        let schema = Schema::parse_str(schema).unwrap();
        let mut out = Vec::new();
        apache_avro::write_avro_datum_ref(&schema, value, &mut out).unwrap();
        out
    }

    #[test]
    fn longs_match_apache_avro_at_the_varint_edges() {
        for v in [0, 1, -1, 63, 64, -64, -65, 8191, 8192, i64::MAX, i64::MIN] {
            assert_eq!(
                direct(r#""long""#, &v).unwrap(),
                reference(r#""long""#, &v),
                "{v}"
            );
        }
    }

    #[test]
    fn an_int_out_of_range_is_refused() {
        assert!(direct(r#""int""#, &(i64::from(i32::MAX) + 1)).is_err());
        assert_eq!(direct(r#""int""#, &-3i64).unwrap(), vec![5]);
    }

    #[test]
    fn options_pick_the_null_or_the_other_branch_wherever_null_is() {
        for s in [r#"["null","string"]"#, r#"["string","null"]"#] {
            for v in [None, Some("ab")] {
                assert_eq!(direct(s, &v).unwrap(), reference(s, &v), "{s} {v:?}");
            }
        }
        assert!(direct(r#"["null","string","long"]"#, &Some("x")).is_err());
    }

    #[test]
    fn arrays_and_maps_are_one_block_then_zero() {
        let arr = r#"{"type":"array","items":"long"}"#;
        for v in [vec![], vec![1i64, -2, 300]] {
            assert_eq!(direct(arr, &v).unwrap(), reference(arr, &v));
        }
        let map = r#"{"type":"map","values":"double"}"#;
        let m: BTreeMap<String, f64> = [("a".into(), 1.5), ("bc".into(), -2.0)].into();
        assert_eq!(direct(map, &m).unwrap(), reference(map, &m));
        assert_eq!(
            direct(map, &BTreeMap::<String, f64>::new()).unwrap(),
            vec![0]
        );
    }

    #[derive(serde::Serialize)]
    struct Ab {
        a: i64,
        b: String,
    }

    #[test]
    fn record_fields_are_written_in_schema_order_whatever_the_declaration_order() {
        let ab = r#"{"type":"record","name":"R","fields":[{"name":"a","type":"long"},{"name":"b","type":"string"}]}"#;
        let ba = r#"{"type":"record","name":"R","fields":[{"name":"b","type":"string"},{"name":"a","type":"long"}]}"#;
        let v = Ab {
            a: 7,
            b: "x".into(),
        };
        assert_eq!(direct(ab, &v).unwrap(), reference(ab, &v));
        // b = "x" first, then a = 7 (zig-zag 14).
        assert_eq!(direct(ba, &v).unwrap(), vec![2, b'x', 14]);
        let abc = r#"{"type":"record","name":"R","fields":[{"name":"a","type":"long"},{"name":"b","type":"string"},{"name":"c","type":"long","default":0}]}"#;
        assert!(
            direct(abc, &v)
                .unwrap_err()
                .message()
                .contains("c is missing")
        );
        let cab = r#"{"type":"record","name":"R","fields":[{"name":"c","type":"long","default":0},{"name":"a","type":"long"},{"name":"b","type":"string"}]}"#;
        assert!(
            direct(cab, &v)
                .unwrap_err()
                .message()
                .contains("c is missing")
        );
    }

    #[test]
    fn enum_symbols_are_written_by_index_and_unknown_ones_refused() {
        let e = r#"{"type":"enum","name":"E","symbols":["A","B","C"]}"#;
        // Index 2, zig-zag encoded.
        assert_eq!(direct(e, &"C").unwrap(), vec![4]);
        assert!(direct(e, &"D").is_err());
    }
}
