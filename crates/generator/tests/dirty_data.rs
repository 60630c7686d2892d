//! Duplicates, disorder, late events and malformed records.

mod common;

use apache_avro::{Schema, from_avro_datum, from_value, to_avro_datum, to_value};
use clickpath_generator::{
    BehaviourConfig, DirtyConfig, FAR_FUTURE_MS, Generated, GeneratorConfig, MalformedKind,
    ScenarioConfig, TruthRecord, UNKNOWN_SCHEMA_ID, corrupt,
};
use clickpath_schema::ClickEvent;
use common::{lateness, run};
use std::collections::{BTreeMap, BTreeSet};

/// Many users with frequent sessions, so that events really interleave within the bound.
fn dense(dirty: DirtyConfig) -> GeneratorConfig {
    GeneratorConfig {
        users: 3_000,
        sessions: 3_000,
        behaviour: BehaviourConfig {
            sessions_per_user_per_day: 24.0,
            ..BehaviourConfig::default()
        },
        dirty,
        scenarios: ScenarioConfig::none(),
        ..GeneratorConfig::default()
    }
}

#[test]
fn duplicates_share_the_event_id_and_arrive_shortly_after() {
    let out = run(dense(DirtyConfig {
        duplicate_rate: 0.05,
        ..DirtyConfig::clean()
    }));
    let mut copies: BTreeMap<&str, Vec<(usize, &ClickEvent)>> = BTreeMap::new();
    for (i, e) in out.events().enumerate() {
        copies.entry(e.event_id.as_str()).or_default().push((i, e));
    }
    let dups: Vec<_> = copies.values().filter(|v| v.len() > 1).collect();
    assert_eq!(dups.len() as u64, out.stats.duplicates);
    assert!(dups.iter().all(|v| v.len() == 2));
    let rate = dups.len() as f64 / out.stats.events as f64;
    assert!((rate / 0.05 - 1.0).abs() < 0.15, "duplicate rate {rate}");
    for v in dups {
        assert_eq!(v[0].1, v[1].1, "a duplicate is the same event");
    }
}

#[test]
fn disorder_stays_strictly_below_the_bound() {
    let bound = 1_500;
    let out = run(dense(DirtyConfig {
        duplicate_rate: 0.05,
        out_of_order_rate: 0.2,
        disorder_bound_ms: bound,
        ..DirtyConfig::clean()
    }));
    let events: Vec<_> = out.events().collect();
    let late = lateness(&events);
    let disordered = late.iter().filter(|&&l| l > 0).count();
    let worst = late.iter().copied().max().unwrap();
    assert!(worst < bound as i64, "an event arrived {worst} ms behind");
    // The dense stream really interleaves: plenty of events do arrive behind others.
    assert!(
        disordered as f64 > 0.02 * events.len() as f64,
        "{disordered} disordered"
    );
    assert_eq!(out.stats.late, 0);
}

#[test]
fn late_events_arrive_far_behind() {
    let cfg = dense(DirtyConfig {
        late_rate: 0.03,
        late_delay_ms: 60_000,
        ..DirtyConfig::clean()
    });
    let bound = cfg.dirty.disorder_bound_ms as i64;
    let out = run(cfg);
    let events: Vec<_> = out.events().collect();
    let late = lateness(&events);
    let far = late.iter().filter(|&&l| l >= bound).count() as u64;
    // Without duplicates, exactly the late events are behind by more than the disorder bound,
    // and the dense stream makes each of them at least 50 s late.
    assert_eq!(far, out.stats.late);
    assert!(late.iter().filter(|&&l| l >= 50_000).count() as u64 == far);
    let rate = far as f64 / events.len() as f64;
    assert!((rate / 0.03 - 1.0).abs() < 0.2, "late rate {rate}");
}

#[test]
fn malformed_records_are_unique_labelled_and_at_the_configured_rate() {
    let out = run(dense(DirtyConfig {
        malformed_rate: 0.01,
        ..DirtyConfig::clean()
    }));
    let emitted: Vec<_> = out
        .records
        .iter()
        .filter_map(|g| match g {
            Generated::Malformed(m) => Some(m),
            Generated::Event(_) => None,
        })
        .collect();
    let keys: BTreeSet<&str> = emitted.iter().map(|m| m.key.as_str()).collect();
    assert_eq!(keys.len(), emitted.len(), "keys are unique");
    let labelled: BTreeSet<&str> = out
        .truth
        .iter()
        .filter_map(|t| match t {
            TruthRecord::Malformed(m) => Some(m.key.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        labelled, keys,
        "exactly the emitted malformed records are labelled"
    );
    let event_ids: BTreeSet<&str> = out.events().map(|e| e.event_id.as_str()).collect();
    let rate = emitted.len() as f64 / event_ids.len() as f64;
    assert!((rate / 0.01 - 1.0).abs() < 0.25, "malformed rate {rate}");
    let kinds: BTreeSet<MalformedKind> = emitted.iter().map(|m| m.kind).collect();
    assert_eq!(kinds.len(), MalformedKind::ALL.len());
    for m in emitted {
        assert_eq!(m.event.event_id, m.key);
        assert!(!event_ids.contains(m.key.as_str()));
        match m.kind {
            MalformedKind::EmptyUserId => assert!(m.event.user_id.is_empty()),
            MalformedKind::NegativePrice => assert!(m.event.price.unwrap() < 0.0),
            MalformedKind::FarFutureTime => assert_eq!(m.event.event_time, FAR_FUTURE_MS),
            _ => assert!(!m.event.user_id.is_empty() && m.event.event_time < FAR_FUTURE_MS),
        }
    }
}

fn click_schema() -> Schema {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../schemas/click_event.avsc"
    );
    Schema::parse_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn frame(schema: &Schema, event: &ClickEvent, id: u32) -> Vec<u8> {
    let mut out = vec![0];
    out.extend_from_slice(&id.to_be_bytes());
    out.extend(to_avro_datum(schema, to_value(event).unwrap()).unwrap());
    out
}

/// What a consumer does with a framed record: check magic and schema id, then decode.
fn decode(schema: &Schema, bytes: &[u8], id: u32) -> Result<ClickEvent, String> {
    if bytes.first() != Some(&0) {
        return Err("bad magic".into());
    }
    let got = bytes
        .get(1..5)
        .map(|b| u32::from_be_bytes(b.try_into().unwrap()))
        .ok_or("short header")?;
    if got != id {
        return Err(format!("unknown schema id {got}"));
    }
    let mut body = &bytes[5..];
    let value = from_avro_datum(schema, &mut body, None).map_err(|e| e.to_string())?;
    if !body.is_empty() {
        return Err("trailing bytes".into());
    }
    from_value(&value).map_err(|e| e.to_string())
}

/// Wire-level kinds fail to decode against the real schema; semantic kinds decode fine.
#[test]
fn malformed_records_break_where_documented() {
    let schema = click_schema();
    let out = run(dense(DirtyConfig {
        malformed_rate: 0.02,
        ..DirtyConfig::clean()
    }));
    let mut seen = BTreeSet::new();
    for g in &out.records {
        let Generated::Malformed(m) = g else { continue };
        seen.insert(m.kind);
        let valid = frame(&schema, &m.event, 1);
        let bytes = corrupt(&valid, m.kind);
        let decoded = decode(&schema, &bytes, 1);
        if m.kind.is_wire_level() {
            assert!(decoded.is_err(), "{:?} decoded", m.kind);
            if m.kind == MalformedKind::UnknownSchemaId {
                assert_eq!(&bytes[1..5], &UNKNOWN_SCHEMA_ID.to_be_bytes());
            }
        } else {
            assert_eq!(decoded.unwrap(), m.event, "{:?} is valid Avro", m.kind);
        }
    }
    assert_eq!(seen.len(), MalformedKind::ALL.len());
}
