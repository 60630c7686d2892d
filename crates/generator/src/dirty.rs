//! Malformed records: what kinds there are, how they are made and how wire bytes are corrupted.
//!
//! Every malformed record carries a complete [`ClickEvent`] whose `event_id` equals the record's
//! unique `key` (`bad-<seed>-<n>`), so a test can check that a dead-letter topic holds exactly the
//! injected ones:
//! - wire-level kinds ([`MalformedKind::is_wire_level`]): the caller encodes the event normally
//!   (Confluent framing: magic byte 0, 4-byte big-endian schema id, Avro body) and passes the
//!   bytes through [`corrupt`], so decoding fails;
//! - semantic kinds: the event itself is wrong (empty user, negative price, year 2100) but valid
//!   Avro, so decoding succeeds and a validating stage must reject it.

use crate::script::Ids;
use clickpath_schema::ClickEvent;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Schema id written by [`MalformedKind::UnknownSchemaId`]; no registry hands out ids this large.
pub const UNKNOWN_SCHEMA_ID: u32 = 0x7FFF_FFFE;
/// Event time of [`MalformedKind::FarFutureTime`]: 2100-01-01T00:00:00Z.
pub const FAR_FUTURE_MS: i64 = 4_102_444_800_000;
/// Length of the Confluent header: magic byte and schema id.
const HEADER_LEN: usize = 5;
/// A varint this long never terminates within Avro's 10-byte limit.
const GARBAGE_MIN_LEN: usize = 11;

/// How a malformed record is broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MalformedKind {
    /// First byte is not the Confluent magic byte 0.
    WrongMagic,
    /// The Avro body is cut in half.
    Truncated,
    /// A valid header followed by bytes that are not Avro (an unterminated varint).
    Garbage,
    /// The header names schema id [`UNKNOWN_SCHEMA_ID`].
    UnknownSchemaId,
    /// Valid Avro with an empty `user_id`.
    EmptyUserId,
    /// Valid Avro with a negative `price`.
    NegativePrice,
    /// Valid Avro with an event time in the year 2100.
    FarFutureTime,
}

impl MalformedKind {
    /// All kinds, in declaration order.
    pub const ALL: [MalformedKind; 7] = [
        MalformedKind::WrongMagic,
        MalformedKind::Truncated,
        MalformedKind::Garbage,
        MalformedKind::UnknownSchemaId,
        MalformedKind::EmptyUserId,
        MalformedKind::NegativePrice,
        MalformedKind::FarFutureTime,
    ];

    /// Whether the damage is in the bytes (apply [`corrupt`]) rather than in the event's meaning.
    pub fn is_wire_level(self) -> bool {
        matches!(
            self,
            MalformedKind::WrongMagic
                | MalformedKind::Truncated
                | MalformedKind::Garbage
                | MalformedKind::UnknownSchemaId
        )
    }
}

/// A record that a correct pipeline must reject (to its dead-letter topic).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Malformed {
    /// Unique marker, also the event's `event_id`; meant as the Kafka record key.
    pub key: String,
    /// How it is broken.
    pub kind: MalformedKind,
    /// Human-readable description of the damage.
    pub note: String,
    /// The event to encode: already invalid for semantic kinds, valid for wire-level kinds
    /// (whose encoded bytes the caller passes through [`corrupt`]).
    pub event: ClickEvent,
}

/// Builds a malformed record of a random kind from `base`, a real event of the stream.
pub(crate) fn make_malformed(rng: &mut ChaCha8Rng, ids: &mut Ids, base: &ClickEvent) -> Malformed {
    let kind = MalformedKind::ALL[rng.random_range(0..MalformedKind::ALL.len())];
    let key = ids.malformed();
    let mut event = base.clone();
    event.event_id.clone_from(&key);
    let note = match kind {
        MalformedKind::WrongMagic => "magic byte is 0x7f instead of 0".to_string(),
        MalformedKind::Truncated => "Avro body cut in half".to_string(),
        MalformedKind::Garbage => "body is not Avro (unterminated varint)".to_string(),
        MalformedKind::UnknownSchemaId => {
            format!("schema id {UNKNOWN_SCHEMA_ID} is not registered")
        }
        MalformedKind::EmptyUserId => {
            event.user_id.clear();
            "user_id is empty".to_string()
        }
        MalformedKind::NegativePrice => {
            let price = -event.price.unwrap_or(9.99).abs().max(0.01);
            event.price = Some(price);
            format!("price is {price}")
        }
        MalformedKind::FarFutureTime => {
            event.event_time = FAR_FUTURE_MS;
            "event time is 2100-01-01".to_string()
        }
    };
    Malformed {
        key,
        kind,
        note,
        event,
    }
}

/// Turns a correctly framed Confluent record into the damaged bytes of a wire-level `kind`.
///
/// Deterministic, no randomness. Semantic kinds return the input unchanged (their damage is
/// in the event). Inputs shorter than a header are handled without panicking.
pub fn corrupt(valid_framed: &[u8], kind: MalformedKind) -> Vec<u8> {
    let mut out = valid_framed.to_vec();
    match kind {
        MalformedKind::WrongMagic => match out.first_mut() {
            Some(b) => *b = 0x7F,
            None => out.push(0x7F),
        },
        MalformedKind::Truncated => {
            let len = if out.len() > HEADER_LEN {
                HEADER_LEN + (out.len() - HEADER_LEN) / 2
            } else {
                out.len().saturating_sub(1)
            };
            out.truncate(len);
        }
        MalformedKind::Garbage => {
            let body = out.len().saturating_sub(HEADER_LEN).max(GARBAGE_MIN_LEN);
            out.resize(HEADER_LEN, 0);
            out[0] = 0;
            out.extend(std::iter::repeat_n(0xFF, body));
        }
        MalformedKind::UnknownSchemaId => {
            if out.len() < HEADER_LEN {
                out.resize(HEADER_LEN, 0);
            }
            out[0] = 0;
            out[1..HEADER_LEN].copy_from_slice(&UNKNOWN_SCHEMA_ID.to_be_bytes());
        }
        MalformedKind::EmptyUserId
        | MalformedKind::NegativePrice
        | MalformedKind::FarFutureTime => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn framed(body: &[u8]) -> Vec<u8> {
        let mut v = vec![0, 0, 0, 0, 7];
        v.extend_from_slice(body);
        v
    }

    proptest! {
        #[test]
        fn wire_kinds_change_the_bytes_as_documented(body in proptest::collection::vec(any::<u8>(), 0..200)) {
            let input = framed(&body);
            let magic = corrupt(&input, MalformedKind::WrongMagic);
            prop_assert_eq!(magic[0], 0x7F);
            prop_assert_eq!(&magic[1..], &input[1..]);

            let cut = corrupt(&input, MalformedKind::Truncated);
            prop_assert!(cut.len() < input.len());
            prop_assert_eq!(&input[..cut.len()], &cut[..]);

            let garbage = corrupt(&input, MalformedKind::Garbage);
            prop_assert_eq!(&garbage[..5], &input[..5]);
            prop_assert!(garbage.len() >= 5 + GARBAGE_MIN_LEN);
            prop_assert!(garbage[5..].iter().all(|&b| b == 0xFF));

            let unknown = corrupt(&input, MalformedKind::UnknownSchemaId);
            prop_assert_eq!(&unknown[1..5], &UNKNOWN_SCHEMA_ID.to_be_bytes()[..]);
            prop_assert_eq!(&unknown[5..], &input[5..]);

            for kind in [MalformedKind::EmptyUserId, MalformedKind::NegativePrice, MalformedKind::FarFutureTime] {
                prop_assert_eq!(&corrupt(&input, kind), &input);
            }
        }

        #[test]
        fn short_inputs_do_not_panic(bytes in proptest::collection::vec(any::<u8>(), 0..6)) {
            for kind in MalformedKind::ALL {
                let _ = corrupt(&bytes, kind);
            }
        }
    }
}
