//! Avro binary primitives shared by the body pre-check and the direct decoder.

/// What is wrong with a body.
#[derive(Debug, PartialEq)]
pub(crate) enum BodyFault {
    /// The body ends before the schema says it should.
    Truncated(String),
    /// The body cannot have been written with this schema.
    Invalid(String),
}

/// A read position in an Avro body.
pub(crate) struct Cursor<'a> {
    /// The bytes not read yet.
    pub(crate) rest: &'a [u8],
}

impl<'a> Cursor<'a> {
    /// Skips `n` bytes.
    pub(crate) fn skip(&mut self, n: u64, what: &str) -> Result<(), BodyFault> {
        self.take(n, what).map(drop)
    }

    /// The next `n` bytes.
    pub(crate) fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8], BodyFault> {
        match usize::try_from(n) {
            Ok(n) if n <= self.rest.len() => {
                let (taken, rest) = self.rest.split_at(n);
                self.rest = rest;
                Ok(taken)
            }
            _ => Err(BodyFault::Truncated(format!(
                "{what} needs {n} bytes, {} left",
                self.rest.len()
            ))),
        }
    }

    /// One byte.
    pub(crate) fn byte(&mut self, what: &str) -> Result<u8, BodyFault> {
        let (&b, rest) = self
            .rest
            .split_first()
            .ok_or_else(|| BodyFault::Truncated(format!("body ends inside {what}")))?;
        self.rest = rest;
        Ok(b)
    }

    /// A zig-zag varint `long`.
    pub(crate) fn long(&mut self, what: &str) -> Result<i64, BodyFault> {
        let mut raw: u64 = 0;
        for i in 0..10 {
            let b = self.byte(what)?;
            raw |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok((raw >> 1) as i64 ^ -((raw & 1) as i64));
            }
        }
        Err(BodyFault::Invalid(format!(
            "{what}: varint longer than 10 bytes"
        )))
    }

    /// A non-negative length or index.
    pub(crate) fn count(&mut self, what: &str) -> Result<u64, BodyFault> {
        let n = self.long(what)?;
        u64::try_from(n).map_err(|_| BodyFault::Invalid(format!("{what} is negative ({n})")))
    }
}
