//! What each fuzz target checks. Every function must return normally for any input: a panic (or an
//! endless loop, which libFuzzer reports as a timeout) is a bug.
//!
//! Uses only `clickpath-schema`, `clickpath-core`, `clickpath-adapters`, `clickpath-stages` (for the configuration) and `toml`,
//! so the same file compiles inside `crates/lab/tests/fuzz_smoke.rs`.

use clickpath_adapters::{Format, from_reader};
use clickpath_core::validate::{ValidationConfig, validate_and_normalise};
use clickpath_schema::codec::{AvroRecord, Codec};
use clickpath_schema::{
    ClickEvent, DeadLetter, FeatureVector, FraudAlert, Prediction, SessionSummary,
};
use clickpath_stages::ClickpathConfig;
use std::sync::OnceLock;

fn codec() -> &'static Codec {
    static CODEC: OnceLock<Codec> = OnceLock::new();
    CODEC.get_or_init(Codec::embedded)
}

/// Decoding `data` as `T` either fails with a named error kind, or gives a value that re-encodes to bytes
/// which decode to a value that encodes to the very same bytes (a stable round trip).
fn decode_as<T: AvroRecord>(data: &[u8]) -> Option<T> {
    let c = codec();
    match c.decode::<T>(data) {
        Err(e) => {
            assert!(!e.kind().is_empty());
            assert!(!e.to_string().is_empty());
            None
        }
        Ok(v) => {
            let once = c.encode(&v).expect("a decoded value re-encodes");
            let again: T = c.decode(&once).expect("a re-encoded value decodes");
            let twice = c.encode(&again).expect("it re-encodes again");
            assert_eq!(once, twice, "round trip through the codec is not stable");
            Some(v)
        }
    }
}

/// The wire decoder (Confluent framing + Avro) for every record type, and the cleaning stage's
/// validation of whatever `ClickEvent` comes out: it must not panic, and normalising twice changes
/// nothing.
pub fn wire_decode(data: &[u8]) {
    if let Some(mut ev) = decode_as::<ClickEvent>(data) {
        let cfg = ValidationConfig::default();
        let now = 1_780_000_000_000;
        if validate_and_normalise(&mut ev, &cfg, now).is_ok() {
            let once = ev.clone();
            validate_and_normalise(&mut ev, &cfg, now).expect("a normalised event stays valid");
            // Compare encodings: NaN-free by now, but PartialEq on f64 is still the wrong tool.
            assert_eq!(
                codec().encode(&once).ok(),
                codec().encode(&ev).ok(),
                "normalisation is not idempotent"
            );
        }
    }
    let _ = decode_as::<SessionSummary>(data);
    let _ = decode_as::<FeatureVector>(data);
    let _ = decode_as::<Prediction>(data);
    let _ = decode_as::<FraudAlert>(data);
    let _ = decode_as::<DeadLetter>(data);
}

/// The dataset adapters: the first byte picks the format, the rest is the file. Reading must end, and
/// every row is either an event or an error naming a line.
pub fn adapters(data: &[u8]) {
    let Some((&first, file)) = data.split_first() else {
        return;
    };
    let format = Format::ALL[usize::from(first) % Format::ALL.len()];
    let Ok(events) = from_reader(format, std::io::Cursor::new(file.to_vec()), "fuzz") else {
        return;
    };
    // A row yields at most a few events (an OTTO line: one per entry), so this bound is generous.
    let limit = 16 * file.len() + 16;
    let mut n = 0usize;
    for item in events {
        n += 1;
        assert!(
            n <= limit,
            "{format} yields more items than the input can hold"
        );
        match item {
            Ok(ev) => {
                assert!(
                    !ev.event_id.is_empty(),
                    "{format} made an event without an id"
                );
                codec().encode(&ev).expect("an adapter's event encodes");
            }
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    }
}

/// The configuration loader on arbitrary TOML: errors list problems; an accepted configuration passes
/// its own checks and survives a round trip through TOML.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match ClickpathConfig::from_toml_str(text) {
        Err(e) => assert!(!e.problems.is_empty(), "an error without a problem"),
        Ok(cfg) => {
            cfg.check()
                .expect("an accepted configuration passes check()");
            let again = toml::to_string(&cfg).expect("a configuration serialises");
            if let Err(e) = ClickpathConfig::from_toml_str(&again) {
                panic!("an accepted configuration does not load back: {e}\n{again}");
            }
        }
    }
}
