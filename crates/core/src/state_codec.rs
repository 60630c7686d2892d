//! Binary building blocks of every stage's changelog values: LEB128 varints (signed ones
//! zigzag-encoded), fixed 8-byte little-endian floats and hashes, and length-prefixed UTF-8
//! strings. Each state kind (a sessionizer user, a de-duplication chunk, a windower user) defines
//! its own versioned layout on top of these (see the modules that use them).

use clickpath_schema::EventType;

/// Why a changelog value could not be read as the state it should hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("state does not decode: {0}")]
pub struct StateDecodeError(pub String);

/// A decode error saying `what` went wrong.
pub(crate) fn err(what: &str) -> StateDecodeError {
    StateDecodeError(what.to_string())
}

/// Appends binary fields to a buffer.
pub(crate) struct Writer<'a>(pub(crate) &'a mut Vec<u8>);

impl Writer<'_> {
    pub(crate) fn u8(&mut self, v: u8) {
        self.0.push(v);
    }

    pub(crate) fn uvar(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }

    pub(crate) fn ivar(&mut self, v: i64) {
        self.uvar(((v << 1) ^ (v >> 63)) as u64);
    }

    pub(crate) fn f64(&mut self, v: f64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    pub(crate) fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    pub(crate) fn str(&mut self, s: &str) {
        self.uvar(s.len() as u64);
        self.0.extend_from_slice(s.as_bytes());
    }

    pub(crate) fn kind(&mut self, k: EventType, extra: u8) {
        // The index is < EventType::COUNT (10).
        self.u8(k.index() as u8 | extra);
    }
}

/// Reads binary fields from a buffer; every read checks the length, so corrupt bytes give an
/// error, never a panic or a huge allocation.
pub(crate) struct Reader<'a> {
    pub(crate) buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn u8(&mut self) -> Result<u8, StateDecodeError> {
        let (&b, rest) = self.buf.split_first().ok_or_else(|| err("truncated"))?;
        self.buf = rest;
        Ok(b)
    }

    pub(crate) fn uvar(&mut self) -> Result<u64, StateDecodeError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(err("varint longer than 10 bytes"))
    }

    pub(crate) fn ivar(&mut self) -> Result<i64, StateDecodeError> {
        let v = self.uvar()?;
        Ok((v >> 1) as i64 ^ -((v & 1) as i64))
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8], StateDecodeError> {
        if n > self.buf.len() {
            return Err(err("truncated"));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    pub(crate) fn f64(&mut self) -> Result<f64, StateDecodeError> {
        Ok(f64::from_le_bytes(
            self.bytes(8)?.try_into().map_err(|_| err("truncated"))?,
        ))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, StateDecodeError> {
        Ok(u64::from_le_bytes(
            self.bytes(8)?.try_into().map_err(|_| err("truncated"))?,
        ))
    }

    /// A count of items, each at least `min_bytes` long: never more than the bytes left allow, so a
    /// corrupt count cannot make a huge allocation.
    pub(crate) fn count(&mut self, min_bytes: usize) -> Result<usize, StateDecodeError> {
        let n = self.uvar()?;
        if n > (self.buf.len() / min_bytes.max(1)) as u64 {
            return Err(err("count larger than the record"));
        }
        Ok(n as usize)
    }

    pub(crate) fn str(&mut self) -> Result<String, StateDecodeError> {
        let n = self.count(1)?;
        std::str::from_utf8(self.bytes(n)?)
            .map(str::to_owned)
            .map_err(|_| err("string is not UTF-8"))
    }

    pub(crate) fn kind(&mut self) -> Result<(EventType, bool), StateDecodeError> {
        let b = self.u8()?;
        let k = EventType::ALL
            .get(usize::from(b & 0x7f))
            .copied()
            .ok_or_else(|| err("event type index out of range"))?;
        Ok((k, b & 0x80 != 0))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, StateDecodeError> {
        u32::try_from(self.uvar()?).map_err(|_| err("number out of range"))
    }
}
