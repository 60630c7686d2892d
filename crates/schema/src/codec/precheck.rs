//! Walks an Avro body against its writer schema without building anything, before apache-avro
//! decodes it.
//!
//! apache-avro reserves memory for an array or map block as soon as it reads the block's count,
//! trusting any count up to its allocation limit. Garbage can claim millions of items in a few
//! bytes; here every count and length must fit in the bytes that are actually left, so the decoder
//! never allocates more than a small multiple of the payload size. The walk also tells a truncated
//! body from a malformed one and catches trailing bytes.

use super::wire::{BodyFault, Cursor};
use apache_avro::Schema;

/// Nesting deeper than this is refused (our schemas nest 3 levels).
const MAX_DEPTH: usize = 64;

/// Items of a zero-byte type (`null`, empty record) carry no length evidence; cap their count.
const MAX_ZERO_SIZE_ITEMS: u64 = 1 << 16;

/// Checks that `body` is exactly one datum of `schema` (which must have no `Schema::Ref`s).
pub(crate) fn check_body(schema: &Schema, body: &[u8]) -> Result<(), BodyFault> {
    let mut cur = Cursor { rest: body };
    walk(schema, &mut cur, 0)?;
    match cur.rest.len() {
        0 => Ok(()),
        n => Err(BodyFault::Invalid(format!(
            "{n} trailing bytes after the record"
        ))),
    }
}

fn walk(schema: &Schema, cur: &mut Cursor<'_>, depth: usize) -> Result<(), BodyFault> {
    if depth > MAX_DEPTH {
        return Err(BodyFault::Invalid("schema nests too deep".into()));
    }
    match schema {
        Schema::Null => {}
        Schema::Boolean => {
            let b = cur.byte("a boolean")?;
            if b > 1 {
                return Err(BodyFault::Invalid(format!("boolean byte {b}")));
            }
        }
        Schema::Int | Schema::Date | Schema::TimeMillis => {
            let v = cur.long("an int")?;
            if i32::try_from(v).is_err() {
                return Err(BodyFault::Invalid(format!("int {v} out of range")));
            }
        }
        Schema::Long
        | Schema::TimeMicros
        | Schema::TimestampMillis
        | Schema::TimestampMicros
        | Schema::TimestampNanos
        | Schema::LocalTimestampMillis
        | Schema::LocalTimestampMicros
        | Schema::LocalTimestampNanos => {
            cur.long("a long")?;
        }
        Schema::Float => cur.skip(4, "a float")?,
        Schema::Double => cur.skip(8, "a double")?,
        Schema::Bytes | Schema::String | Schema::Uuid | Schema::BigDecimal => {
            let len = cur.count("a string length")?;
            cur.skip(len, "a string")?;
        }
        Schema::Fixed(f) => cur.skip(f.size as u64, "a fixed")?,
        Schema::Duration => cur.skip(12, "a duration")?,
        Schema::Decimal(d) => walk(&d.inner, cur, depth + 1)?,
        Schema::Enum(e) => {
            let i = cur.count("an enum index")?;
            if i >= e.symbols.len() as u64 {
                return Err(BodyFault::Invalid(format!(
                    "enum index {i} of {}",
                    e.symbols.len()
                )));
            }
        }
        Schema::Union(u) => {
            let i = cur.count("a union index")?;
            let variant = usize::try_from(i)
                .ok()
                .and_then(|i| u.variants().get(i))
                .ok_or_else(|| BodyFault::Invalid(format!("union index {i}")))?;
            walk(variant, cur, depth + 1)?;
        }
        Schema::Array(a) => {
            let min = min_size(&a.items, depth);
            blocks(cur, min, "an array", |cur| walk(&a.items, cur, depth + 1))?;
        }
        Schema::Map(m) => {
            // Each entry has at least its key's length byte.
            blocks(cur, 1, "a map", |cur| {
                let len = cur.count("a map key length")?;
                cur.skip(len, "a map key")?;
                walk(&m.types, cur, depth + 1)
            })?;
        }
        Schema::Record(r) => {
            for field in &r.fields {
                walk(&field.schema, cur, depth + 1)?;
            }
        }
        Schema::Ref { name } => {
            return Err(BodyFault::Invalid(format!(
                "unresolved reference to {}",
                name.fullname(None)
            )));
        }
    }
    Ok(())
}

/// Array/map blocks: a count (negative: followed by a byte size), items, until a zero count.
fn blocks(
    cur: &mut Cursor<'_>,
    min_item_size: u64,
    what: &str,
    mut item: impl FnMut(&mut Cursor<'_>) -> Result<(), BodyFault>,
) -> Result<(), BodyFault> {
    let mut zero_size_items = 0u64;
    loop {
        let raw = cur.long(what)?;
        if raw == 0 {
            return Ok(());
        }
        if raw < 0 {
            cur.long(what)?;
        }
        let count = raw.unsigned_abs();
        // Every item takes at least `min_item_size` bytes, so the bytes left bound the count.
        let fits = match (cur.rest.len() as u64).checked_div(min_item_size) {
            Some(max) => count <= max,
            None => {
                zero_size_items = zero_size_items.saturating_add(count);
                zero_size_items <= MAX_ZERO_SIZE_ITEMS
            }
        };
        if !fits {
            return Err(BodyFault::Truncated(format!(
                "{what} block claims {count} items, {} bytes left",
                cur.rest.len()
            )));
        }
        for _ in 0..count {
            item(cur)?;
        }
    }
}

/// Fewest bytes a datum of `schema` can take.
pub(crate) fn min_size(schema: &Schema, depth: usize) -> u64 {
    if depth > MAX_DEPTH {
        return 0;
    }
    match schema {
        Schema::Null => 0,
        Schema::Float => 4,
        Schema::Double => 8,
        Schema::Duration => 12,
        Schema::Fixed(f) => f.size as u64,
        Schema::Decimal(d) => min_size(&d.inner, depth + 1),
        Schema::Record(r) => r
            .fields
            .iter()
            .map(|f| min_size(&f.schema, depth + 1))
            .fold(0, u64::saturating_add),
        Schema::Ref { .. } => 0,
        // Everything else starts with at least one varint byte.
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(json: &str) -> Schema {
        Schema::parse_str(json).unwrap()
    }

    #[test]
    fn a_huge_block_count_is_refused_before_any_item_is_read() {
        let s = schema(r#"{"type":"array","items":"string"}"#);
        // count = 1_000_000 (zig-zag varint), then nothing.
        let body = [0x80, 0x89, 0x7a];
        assert!(matches!(
            check_body(&s, &body),
            Err(BodyFault::Truncated(m)) if m.contains("1000000")
        ));
    }

    #[test]
    fn valid_blocks_including_negative_counts_pass() {
        let s = schema(r#"{"type":"array","items":"int"}"#);
        // Block of -2 items with byte size 2, items 1 and 2, end.
        assert_eq!(check_body(&s, &[0x03, 0x04, 0x02, 0x04, 0x00]), Ok(()));
    }

    #[test]
    fn trailing_and_missing_bytes_are_told_apart() {
        let s = schema(r#""string""#);
        assert!(matches!(
            check_body(&s, &[0x04, b'a', b'b', b'c']),
            Err(BodyFault::Invalid(_))
        ));
        assert!(matches!(
            check_body(&s, &[0x04, b'a']),
            Err(BodyFault::Truncated(_))
        ));
    }

    #[test]
    fn out_of_range_enum_and_union_indexes_are_invalid() {
        let e = schema(r#"{"type":"enum","name":"E","symbols":["A","B"]}"#);
        assert!(matches!(
            check_body(&e, &[0x04]),
            Err(BodyFault::Invalid(_))
        ));
        let u = schema(r#"["null","long"]"#);
        assert!(matches!(
            check_body(&u, &[0x04]),
            Err(BodyFault::Invalid(_))
        ));
        assert_eq!(check_body(&u, &[0x02, 0x06]), Ok(()));
    }

    #[test]
    fn overlong_varints_are_invalid() {
        let s = schema(r#""long""#);
        assert!(matches!(
            check_body(&s, &[0xff; 11]),
            Err(BodyFault::Invalid(_))
        ));
    }
}
