//! The codec reads same-schema records with its own direct decoder; apache-avro's `Value` decoder
//! is the reference. On any input the two must agree.

mod common;

use clickpath_schema::codec::{HEADER_LEN, split_header};
use clickpath_schema::*;
use common::*;
use proptest::prelude::*;
use std::fmt::Debug;

/// apache-avro's reading of a framed record, accepted only if it uses the whole body.
///
/// apache-avro 0.21 reads a union index at end of input as `Union(0, Null)` (`decode.rs`, on
/// `UnexpectedEof`), so a body cut short before an optional field reads as complete. A sentinel
/// byte after the body makes such a read consume it: a record is complete only if the sentinel
/// is all that is left.
fn reference<T: AvroRecord>(bytes: &[u8]) -> Option<T> {
    const SENTINEL: u8 = 0;
    let (id, body) = split_header(bytes).ok()?;
    let schema = EmbeddedRegistry::shipped().schema(id).ok()?;
    let mut padded = body.to_vec();
    padded.push(SENTINEL);
    let mut rest = padded.as_slice();
    let value = apache_avro::from_avro_datum(&schema, &mut rest, None).ok()?;
    if rest != [SENTINEL] || has_phantom_null(&value) {
        return None;
    }
    apache_avro::from_value(&value).ok()
}

/// apache-avro 0.21 reads a truncated string in the last field's `["null", "string"]` union as
/// `Union(1, Null)` instead of failing (seen with a flipped length byte). Every union of
/// clickpath's schemas has `null` first, so a null in any other branch is such a misread.
fn has_phantom_null(value: &apache_avro::types::Value) -> bool {
    use apache_avro::types::Value;
    match value {
        Value::Union(i, inner) => {
            (*i > 0 && matches!(**inner, Value::Null)) || has_phantom_null(inner)
        }
        Value::Record(fields) => fields.iter().any(|(_, v)| has_phantom_null(v)),
        Value::Array(items) => items.iter().any(has_phantom_null),
        Value::Map(entries) => entries.values().any(has_phantom_null),
        _ => false,
    }
}

/// Debug strings compare NaN payloads from flipped doubles as equal.
fn assert_agree<T: AvroRecord + Debug>(bytes: &[u8]) -> Result<(), TestCaseError> {
    let ours = Codec::embedded().decode::<T>(bytes).ok();
    let theirs = reference::<T>(bytes);
    prop_assert_eq!(format!("{ours:?}"), format!("{theirs:?}"));
    Ok(())
}

fn mutate(mut bytes: Vec<u8>, flips: &[(prop::sample::Index, u8)]) -> Vec<u8> {
    for (at, byte) in flips {
        let i = HEADER_LEN + at.index(bytes.len() - HEADER_LEN);
        bytes[i] = *byte;
    }
    bytes
}

fn flips() -> impl Strategy<Value = Vec<(prop::sample::Index, u8)>> {
    proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4)
}

#[test]
fn both_decoders_read_every_sample_the_same() {
    let c = Codec::embedded();
    assert_agree::<ClickEvent>(&c.encode(&full_click()).unwrap()).unwrap();
    assert_agree::<SessionSummary>(&c.encode(&full_session()).unwrap()).unwrap();
    assert_agree::<FeatureVector>(&c.encode(&full_features()).unwrap()).unwrap();
    assert_agree::<Prediction>(&c.encode(&full_prediction()).unwrap()).unwrap();
    assert_agree::<FraudAlert>(&c.encode(&full_alert()).unwrap()).unwrap();
    assert_agree::<DeadLetter>(&c.encode(&full_dead_letter()).unwrap()).unwrap();
    // And the reference does read them (the comparison is not None == None).
    assert!(reference::<Prediction>(&c.encode(&full_prediction()).unwrap()).is_some());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn decoders_agree_on_corrupted_click_events(flips in flips()) {
        let bytes = mutate(Codec::embedded().encode(&full_click()).unwrap(), &flips);
        assert_agree::<ClickEvent>(&bytes)?;
    }

    #[test]
    fn decoders_agree_on_corrupted_predictions(flips in flips()) {
        let bytes = mutate(Codec::embedded().encode(&full_prediction()).unwrap(), &flips);
        assert_agree::<Prediction>(&bytes)?;
    }

    #[test]
    fn decoders_agree_on_corrupted_dead_letters_and_features(flips in flips()) {
        let c = Codec::embedded();
        assert_agree::<DeadLetter>(&mutate(c.encode(&full_dead_letter()).unwrap(), &flips))?;
        assert_agree::<FeatureVector>(&mutate(c.encode(&full_features()).unwrap(), &flips))?;
    }
}
