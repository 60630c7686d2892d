//! Bad input gives the right `CodecError`, never a panic.

mod common;

use clickpath_schema::codec::HEADER_LEN;
use clickpath_schema::*;
use common::*;
use proptest::prelude::*;
use std::collections::HashSet;

fn codec() -> Codec {
    Codec::embedded()
}

#[test]
fn empty_payload() {
    let err = codec().decode::<ClickEvent>(&[]).unwrap_err();
    assert!(matches!(err, CodecError::Empty), "{err}");
    assert_eq!(err.kind(), "empty");
}

#[test]
fn wrong_magic_byte_is_reported_with_the_byte() {
    // A JSON record sent to an Avro topic.
    let err = codec()
        .decode::<ClickEvent>(br#"{"event_id":"e"}"#)
        .unwrap_err();
    assert!(matches!(err, CodecError::WrongMagic(b'{')), "{err}");
    assert_eq!(err.kind(), "wrong_magic");
    assert!(err.to_string().contains("0x7b"), "{err}");
}

#[test]
fn every_short_header_is_truncated() {
    let bytes = codec().encode(&full_click()).unwrap();
    for len in 1..HEADER_LEN {
        let err = codec().decode::<ClickEvent>(&bytes[..len]).unwrap_err();
        assert!(
            matches!(err, CodecError::TruncatedHeader(n) if n == len),
            "{err}"
        );
        assert_eq!(err.kind(), "truncated_header");
    }
}

#[test]
fn unknown_schema_id_is_reported_with_the_id() {
    let mut bytes = codec().encode(&full_click()).unwrap();
    bytes[1..5].copy_from_slice(&0xdead_beef_u32.to_be_bytes());
    let err = codec().decode::<ClickEvent>(&bytes).unwrap_err();
    assert!(
        matches!(err, CodecError::UnknownSchemaId(0xdead_beef)),
        "{err}"
    );
    assert_eq!(err.kind(), "unknown_schema_id");
}

#[test]
fn a_record_of_another_type_is_refused_even_if_fields_would_resolve() {
    // FeatureVector shares ClickEvent's required fields; resolving it would "succeed".
    let bytes = codec().encode(&full_features()).unwrap();
    let err = codec().decode::<ClickEvent>(&bytes).unwrap_err();
    match &err {
        CodecError::WrongRecord {
            expected, found, ..
        } => {
            assert_eq!(*expected, "io.clickpath.ClickEvent");
            assert_eq!(found, "io.clickpath.FeatureVector");
        }
        other => panic!("expected WrongRecord, got {other}"),
    }
    assert_eq!(err.kind(), "wrong_record");
}

fn assert_prefixes_truncated<T: AvroRecord>(value: &T) {
    let c = codec();
    let bytes = c.encode(value).unwrap();
    for len in HEADER_LEN..bytes.len() {
        let err = c.decode::<T>(&bytes[..len]).map(drop).unwrap_err();
        assert!(
            matches!(err, CodecError::TruncatedBody(_)),
            "{} prefix {len}/{}: {err}",
            T::FULL_NAME,
            bytes.len()
        );
        assert_eq!(err.kind(), "truncated_body");
    }
}

#[test]
fn every_strict_prefix_of_a_body_is_truncated() {
    assert_prefixes_truncated(&full_click());
    assert_prefixes_truncated(&full_prediction());
    assert_prefixes_truncated(&full_dead_letter());
    assert_prefixes_truncated(&full_features());
}

#[test]
fn trailing_bytes_are_a_bad_body() {
    let mut bytes = codec().encode(&full_click()).unwrap();
    bytes.push(0);
    let err = codec().decode::<ClickEvent>(&bytes).unwrap_err();
    assert!(matches!(err, CodecError::BadBody(_)), "{err}");
    assert_eq!(err.kind(), "bad_body");
}

#[test]
fn a_huge_string_length_is_refused_without_allocating_it() {
    // event_id claims 2^40 bytes.
    let mut bytes = vec![0, 0, 0, 0, 1];
    let mut zigzag: u64 = (1u64 << 40) << 1;
    while zigzag >= 0x80 {
        bytes.push((zigzag as u8) | 0x80);
        zigzag >>= 7;
    }
    bytes.push(zigzag as u8);
    let err = codec().decode::<ClickEvent>(&bytes).unwrap_err();
    assert!(matches!(err, CodecError::TruncatedBody(_)), "{err}");
}

#[test]
fn invalid_utf8_in_a_string_is_a_bad_body() {
    // event_id = [0xff], then a valid rest is not needed: UTF-8 is checked first.
    let mut bytes = codec()
        .encode(&ClickEvent::new("x", "u", EventType::Login, 1))
        .unwrap();
    assert_eq!(bytes[5..7], [0x02, b'x']);
    bytes[6] = 0xff;
    let err = codec().decode::<ClickEvent>(&bytes).unwrap_err();
    assert!(matches!(err, CodecError::BadBody(_)), "{err}");
}

fn avro_error() -> apache_avro::Error {
    apache_avro::Schema::parse_str("not json").unwrap_err()
}

#[test]
fn kinds_are_distinct_and_snake_case() {
    let errors = [
        CodecError::Empty,
        CodecError::WrongMagic(1),
        CodecError::TruncatedHeader(2),
        CodecError::UnknownSchemaId(3),
        CodecError::WrongRecord {
            id: 1,
            expected: "a",
            found: "b".into(),
        },
        CodecError::UnsupportedSchema {
            id: 1,
            reason: "r".into(),
        },
        CodecError::TruncatedBody("x".into()),
        CodecError::BadBody("x".into()),
        CodecError::Resolution {
            writer_id: 1,
            reader_id: 2,
            source: avro_error(),
        },
        CodecError::Encode {
            record: "a",
            source: avro_error(),
        },
        CodecError::Registry(RegistryError::Transport("down".into())),
    ];
    let kinds: HashSet<&str> = errors.iter().map(CodecError::kind).collect();
    assert_eq!(kinds.len(), errors.len());
    assert!(
        kinds
            .iter()
            .all(|k| k.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
    );
    assert!(errors.last().unwrap().is_transient());
    assert!(!errors[3].is_transient());
}

/// Decodes `bytes` as the type the header's id belongs to; must return, never panic.
fn decode_as_any(c: &Codec, bytes: &[u8]) {
    let _ = c.decode::<ClickEvent>(bytes);
    let _ = c.decode::<SessionSummary>(bytes);
    let _ = c.decode::<FeatureVector>(bytes);
    let _ = c.decode::<Prediction>(bytes);
    let _ = c.decode::<FraudAlert>(bytes);
    let _ = c.decode::<DeadLetter>(bytes);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn garbage_after_a_valid_header_never_panics(
        id in 1u32..=6,
        body in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut bytes = vec![0];
        bytes.extend_from_slice(&id.to_be_bytes());
        bytes.extend_from_slice(&body);
        decode_as_any(&codec(), &bytes);
    }

    #[test]
    fn flipped_bytes_in_a_valid_record_never_panic(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let c = codec();
        let mut bytes = c.encode(&full_click()).unwrap();
        for (at, byte) in flips {
            let i = HEADER_LEN + at.index(bytes.len() - HEADER_LEN);
            bytes[i] = byte;
        }
        // Decoding may succeed (a flipped character) or fail, but must not panic.
        let _ = c.decode::<ClickEvent>(&bytes);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..32)) {
        decode_as_any(&codec(), &bytes);
    }
}
