//! The Confluent wire header: magic byte 0, then the schema id as a big-endian `u32`.

use super::CodecError;

/// First byte of every framed record.
pub const MAGIC: u8 = 0;

/// Length of the header in front of the Avro body.
pub const HEADER_LEN: usize = 5;

/// Writes the header for `schema_id` to `out`.
pub(crate) fn write_header(schema_id: u32, out: &mut Vec<u8>) {
    out.push(MAGIC);
    out.extend_from_slice(&schema_id.to_be_bytes());
}

/// Splits a framed record into its writer schema id and its Avro body.
pub fn split_header(bytes: &[u8]) -> Result<(u32, &[u8]), CodecError> {
    match bytes {
        [] => Err(CodecError::Empty),
        [magic, ..] if *magic != MAGIC => Err(CodecError::WrongMagic(*magic)),
        [_, a, b, c, d, body @ ..] => Ok((u32::from_be_bytes([*a, *b, *c, *d]), body)),
        short => Err(CodecError::TruncatedHeader(short.len())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_every_byte_of_the_id() {
        let mut out = Vec::new();
        write_header(0x0102_0304, &mut out);
        out.push(0xAA);
        assert_eq!(out, [0, 1, 2, 3, 4, 0xAA]);
        assert_eq!(split_header(&out).unwrap(), (0x0102_0304, &[0xAA][..]));
    }

    #[test]
    fn header_errors_name_what_is_wrong() {
        assert!(matches!(split_header(&[]), Err(CodecError::Empty)));
        assert!(matches!(
            split_header(&[7, 0, 0, 0, 1]),
            Err(CodecError::WrongMagic(7))
        ));
        assert!(matches!(
            split_header(&[0, 0, 1]),
            Err(CodecError::TruncatedHeader(3))
        ));
        // A header with no body is complete: an empty body is the body decoder's problem.
        assert_eq!(split_header(&[0, 0, 0, 0, 9]).unwrap(), (9, &[][..]));
    }
}
