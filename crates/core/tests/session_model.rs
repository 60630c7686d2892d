//! Reference-model property test of the streaming sessionizer.
//!
//! Random multi-user streams with duplicates and bounded disorder go through the [`Deduper`] and
//! the [`Sessionizer`]; a tiny obviously-correct model (sort each user's unique events by time,
//! split where the gap reaches `gap_ms` or the session would reach `max_session_ms`) must produce
//! the same sessions, and [`assign_sessions`] must agree with both.

use clickpath_core::{
    Deduper, SessionConfig, Sessionizer, assign_sessions, compress_path, funnel_stage,
};
use clickpath_schema::{ClickEvent, EventType, FunnelStage, SessionSummary};
use proptest::prelude::*;
use std::collections::{BTreeMap, HashSet};

const GAP: i64 = 1_000;
const MAX_SESSION: i64 = 4_000;
const OOO: i64 = 50;
const PATH: usize = 5;

fn cfg() -> SessionConfig {
    SessionConfig {
        gap_ms: GAP,
        max_session_ms: MAX_SESSION,
        max_out_of_orderness_ms: OOO,
        max_path_len: PATH,
    }
}

/// What two sessionizations must agree on.
type Key = (
    String,
    i64,
    i64,
    i32,
    Vec<EventType>,
    FunnelStage,
    bool,
    u64,
    String,
    String,
);

fn key(s: &SessionSummary) -> Key {
    (
        s.user_id.clone(),
        s.start_time,
        s.end_time,
        s.event_count,
        s.path.clone(),
        s.furthest_stage,
        s.purchased,
        s.order_value.to_bits(),
        s.first_event_id.clone(),
        s.last_event_id.clone(),
    )
}

/// The obviously-correct model.
fn reference(events: &[ClickEvent]) -> Vec<Key> {
    let mut by_user: BTreeMap<&str, Vec<&ClickEvent>> = BTreeMap::new();
    for e in events {
        by_user.entry(&e.user_id).or_default().push(e);
    }
    let mut out = Vec::new();
    for (user, mut evs) in by_user {
        evs.sort_by_key(|e| e.event_time); // stable: ties keep arrival order
        let mut sessions: Vec<Vec<&ClickEvent>> = Vec::new();
        for e in evs {
            match sessions.last_mut() {
                Some(s)
                    if e.event_time - s[s.len() - 1].event_time < GAP
                        && e.event_time - s[0].event_time < MAX_SESSION =>
                {
                    s.push(e)
                }
                _ => sessions.push(vec![e]),
            }
        }
        for s in sessions {
            let mut path = Vec::new();
            for e in &s {
                compress_path(&mut path, e.event_type, PATH);
            }
            let purchases: Vec<_> = s
                .iter()
                .filter(|e| e.event_type == EventType::Purchase)
                .collect();
            let order_value = purchases
                .iter()
                .fold(0.0, |acc, e| acc + e.order_value.unwrap_or(0.0));
            out.push((
                user.to_owned(),
                s[0].event_time,
                s[s.len() - 1].event_time,
                s.len() as i32,
                path,
                s.iter()
                    .map(|e| funnel_stage(e.event_type))
                    .max()
                    .unwrap_or(FunnelStage::Browse),
                !purchases.is_empty(),
                order_value.to_bits(),
                s[0].event_id.clone(),
                s[s.len() - 1].event_id.clone(),
            ));
        }
    }
    out.sort();
    out
}

/// One generated step of a user: how far after the user's previous event, and what.
#[derive(Debug, Clone)]
struct Step {
    user: u8,
    delta: i64,
    kind: EventType,
    value: u8,
    jitter: i64,
    duplicate: bool,
}

fn step() -> impl Strategy<Value = Step> {
    let delta = prop_oneof![
        3 => 0i64..300,
        1 => Just(0i64),
        1 => Just(GAP - 1),
        1 => Just(GAP),
        1 => Just(GAP + 1),
        1 => GAP..3 * GAP,
    ];
    (
        0u8..4,
        delta,
        0usize..EventType::COUNT,
        0u8..100,
        0..OOO,
        prop::bool::weighted(0.1),
    )
        .prop_map(|(user, delta, k, value, jitter, duplicate)| Step {
            user,
            delta,
            kind: EventType::ALL[k],
            value,
            jitter,
            duplicate,
        })
}

/// Builds the arrival-order stream: per-user times, merged, disorder below `OOO`, duplicates.
fn arrivals(steps: &[Step]) -> Vec<ClickEvent> {
    let mut clock = [10_000i64; 4];
    let mut keyed: Vec<(i64, ClickEvent)> = Vec::new();
    for (i, s) in steps.iter().enumerate() {
        let u = s.user as usize;
        clock[u] += s.delta;
        let mut e = ClickEvent::new(format!("e{i}"), format!("u{u}"), s.kind, clock[u]);
        if s.kind == EventType::Purchase && s.value % 4 != 0 {
            e.order_value = Some(f64::from(s.value));
        }
        // Arrival key: time plus a jitter below OOO keeps every arrival above the watermark.
        keyed.push((e.event_time + s.jitter, e.clone()));
        if s.duplicate {
            // A retry arrives later than the original, possibly much later.
            keyed.push((e.event_time + s.jitter + i64::from(s.value) * 37, e));
        }
    }
    keyed.sort_by_key(|(k, _)| *k);
    keyed.into_iter().map(|(_, e)| e).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn streaming_matches_reference(
        steps in prop::collection::vec(step(), 1..150),
        ticks in prop::collection::vec(prop::bool::weighted(0.2), 300),
    ) {
        let stream = arrivals(&steps);
        // Lowest event time still to come after each position: a watermark a tick may use.
        let mut suffix_min = vec![i64::MAX; stream.len() + 1];
        for i in (0..stream.len()).rev() {
            suffix_min[i] = suffix_min[i + 1].min(stream[i].event_time);
        }

        let mut dedupe = Deduper::new(i64::MAX / 4, usize::MAX);
        let mut s = Sessionizer::new(cfg());
        let mut got = Vec::new();
        let mut unique = Vec::new();
        for (i, e) in stream.iter().enumerate() {
            if dedupe.is_duplicate(&e.event_id, e.event_time) {
                continue;
            }
            unique.push(e.clone());
            got.extend(s.on_event(e));
            if ticks[i % ticks.len()] && suffix_min[i + 1] != i64::MAX {
                got.extend(s.advance_watermark(suffix_min[i + 1]));
            }
        }
        got.extend(s.flush());
        prop_assert_eq!(s.late_events(), 0);
        prop_assert_eq!(s.open_sessions(), 0);

        // The de-duplicated stream is exactly the generated events.
        let ids: HashSet<_> = unique.iter().map(|e| e.event_id.as_str()).collect();
        prop_assert_eq!(ids.len(), steps.len());
        prop_assert_eq!(unique.len(), steps.len());

        let mut got_keys: Vec<Key> = got.iter().map(key).collect();
        got_keys.sort();
        prop_assert_eq!(&got_keys, &reference(&unique));

        for x in &got {
            prop_assert_eq!(&x.session_id, &format!("{}:{}", x.user_id, x.start_time));
            prop_assert!(["gap", "max_length", "shutdown"].contains(&x.close_reason.as_str()));
        }

        // Offline assignment: same sessions, same sizes, keyed like the summaries.
        let assigned = assign_sessions(&unique, &cfg());
        let mut sizes: BTreeMap<&str, i32> = BTreeMap::new();
        for k in &assigned {
            *sizes.entry(k.as_str()).or_default() += 1;
        }
        let streamed: BTreeMap<&str, i32> =
            got.iter().map(|x| (x.session_id.as_str(), x.event_count)).collect();
        prop_assert_eq!(sizes, streamed);
        for (e, k) in unique.iter().zip(&assigned) {
            let prefix = format!("{}:", e.user_id);
            prop_assert!(k.starts_with(&prefix), "{} is not a key of {}", k, e.user_id);
        }
    }
}
