//! Reference-model property tests of the streaming sessionizer.
//!
//! Random multi-user streams with bounded disorder, duplicates, late events (some within the
//! allowed lateness, some beyond it) and watermark ticks go through the [`Sessionizer`]. A tiny
//! obviously-correct model replays the same arrivals: it tracks the watermark, rejects what is
//! beyond the lateness, drops repeated ids, then splits each user's accepted events, sorted by
//! time, at gaps and period boundaries. The final revision of every published session must equal
//! the model's sessions, and the rejected events must be exactly those `take_late` reported.
//!
//! A second property splits the stream at a random point, round-trips every changelog entry
//! through JSON into a fresh sessionizer, and requires the same output as an uninterrupted run.

use clickpath_core::{
    SessionConfig, Sessionizer, UserState, assign_sessions, compress_path, funnel_stage,
};
use clickpath_schema::{ClickEvent, EventType, FunnelStage, SessionSummary};
use proptest::prelude::*;
use std::collections::{BTreeMap, HashMap, HashSet};

const GAP: i64 = 1_000;
const PERIOD: i64 = 4_000;
const OOO: i64 = 50;
const LATE: i64 = 1_500;
const PATH: usize = 5;

fn cfg() -> SessionConfig {
    SessionConfig {
        gap_ms: GAP,
        max_session_ms: PERIOD,
        max_out_of_orderness_ms: OOO,
        max_path_len: PATH,
        allowed_lateness_ms: LATE,
        user_ttl_ms: i64::MAX / 4,
        ..SessionConfig::default()
    }
}

/// What two sessionizations must agree on.
type Key = (
    String,
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
    String,
);

fn key(s: &SessionSummary) -> Key {
    (
        s.session_id.clone(),
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
        s.close_reason.clone(),
    )
}

/// What the model decided for a stream.
struct Model {
    sessions: Vec<Key>,
    late_ids: Vec<String>,
    duplicates: u64,
    /// Accepted events below the watermark on arrival.
    late_applied: u64,
    accepted: Vec<ClickEvent>,
}

/// The obviously-correct model. `ticks[i]` is a watermark raised to after arrival `i`;
/// `final_wm` the last one, before the shutdown flush.
fn reference(stream: &[ClickEvent], ticks: &[Option<i64>], final_wm: i64) -> Model {
    let mut wm = i64::MIN;
    let mut seen = HashSet::new();
    let mut m = Model {
        sessions: Vec::new(),
        late_ids: Vec::new(),
        duplicates: 0,
        late_applied: 0,
        accepted: Vec::new(),
    };
    for (i, e) in stream.iter().enumerate() {
        wm = wm.max(e.event_time - OOO);
        if e.event_time < wm.saturating_sub(LATE) {
            m.late_ids.push(e.event_id.clone());
        } else if !seen.insert(e.event_id.clone()) {
            m.duplicates += 1;
        } else {
            m.late_applied += u64::from(e.event_time < wm);
            m.accepted.push(e.clone());
        }
        if let Some(t) = ticks[i] {
            wm = wm.max(t);
        }
    }
    let wm = wm.max(final_wm);

    let mut by_user: BTreeMap<&str, Vec<&ClickEvent>> = BTreeMap::new();
    for e in &m.accepted {
        by_user.entry(&e.user_id).or_default().push(e);
    }
    let period = |t: i64| t.div_euclid(PERIOD);
    for (user, mut evs) in by_user {
        evs.sort_by_key(|e| e.event_time); // stable: ties keep arrival order
        let mut sessions: Vec<Vec<&ClickEvent>> = Vec::new();
        for e in evs {
            match sessions.last_mut() {
                Some(s)
                    if e.event_time - s[s.len() - 1].event_time < GAP
                        && period(e.event_time) == period(s[0].event_time) =>
                {
                    s.push(e)
                }
                _ => sessions.push(vec![e]),
            }
        }
        for s in sessions {
            let (start, last) = (s[0].event_time, s[s.len() - 1].event_time);
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
            let period_end = (period(start) + 1) * PERIOD;
            let close = (last + GAP).min(period_end);
            let reason = if close > wm {
                "shutdown"
            } else if period_end < last + GAP {
                "max_length"
            } else {
                "gap"
            };
            m.sessions.push((
                format!("{user}:{start}"),
                user.to_owned(),
                start,
                last,
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
                reason.to_owned(),
            ));
        }
    }
    m.sessions.sort();
    m
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
    /// Extra arrival delay: 0 (in order), or enough to be late, within or beyond the lateness.
    delay: i64,
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
    let delay = prop_oneof![
        8 => Just(0i64),
        1 => OOO..OOO + LATE,
        1 => OOO + LATE - 100..OOO + 2 * LATE,
    ];
    (
        0u8..4,
        delta,
        0usize..EventType::COUNT,
        0u8..100,
        0..OOO,
        prop::bool::weighted(0.1),
        delay,
    )
        .prop_map(|(user, delta, k, value, jitter, duplicate, delay)| Step {
            user,
            delta,
            kind: EventType::ALL[k],
            value,
            jitter,
            duplicate,
            delay,
        })
}

/// Builds the arrival-order stream: per-user times, merged, disorder below `OOO` except for the
/// delayed events, duplicates arriving later than their originals.
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
        let at = e.event_time + s.jitter + s.delay;
        keyed.push((at, e.clone()));
        if s.duplicate {
            keyed.push((at + i64::from(s.value) * 37, e));
        }
    }
    keyed.sort_by_key(|(k, _)| *k);
    keyed.into_iter().map(|(_, e)| e).collect()
}

/// Watermark ticks: after some arrivals, raise the watermark near that event's time.
fn tick_values(stream: &[ClickEvent], ticks: &[Option<i64>]) -> Vec<Option<i64>> {
    stream
        .iter()
        .enumerate()
        .map(|(i, e)| ticks[i % ticks.len()].map(|d| e.event_time + d))
        .collect()
}

/// Everything one call produced: summaries and late events (id, reason).
type Output = (Vec<SessionSummary>, Vec<(String, String)>);

fn late_of(s: &mut Sessionizer) -> Vec<(String, String)> {
    s.take_late()
        .into_iter()
        .map(|(e, why)| (e.event_id, why))
        .collect()
}

/// Feeds arrival `i` (and its tick) and returns what it produced.
fn feed(s: &mut Sessionizer, e: &ClickEvent, tick: Option<i64>) -> Output {
    let mut out = s.on_event(e);
    if let Some(t) = tick {
        out.extend(s.advance_watermark(t));
    }
    (out, late_of(s))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn streaming_matches_reference(
        steps in prop::collection::vec(step(), 1..150),
        ticks in prop::collection::vec(
            prop::option::weighted(0.15, -3 * OOO..2 * OOO), 300),
    ) {
        let stream = arrivals(&steps);
        let ticks = tick_values(&stream, &ticks);
        let final_wm = stream.iter().map(|e| e.event_time).max().unwrap_or(0) + 1;

        let mut s = Sessionizer::new(cfg());
        let mut got = Vec::new();
        let mut late = Vec::new();
        for (i, e) in stream.iter().enumerate() {
            let (out, l) = feed(&mut s, e, ticks[i]);
            got.extend(out);
            late.extend(l);
        }
        got.extend(s.advance_watermark(final_wm));
        let model = reference(&stream, &ticks, final_wm);

        // Lifetime counters once every event is released.
        let mut per_user: BTreeMap<&str, (u64, u64, f64)> = BTreeMap::new();
        for k in &model.sessions {
            per_user.entry(&k.1).or_default().0 += 1;
        }
        for e in model.accepted.iter().filter(|e| e.event_type == EventType::Purchase) {
            let c = per_user.entry(&e.user_id).or_default();
            c.1 += 1;
            c.2 += e.order_value.unwrap_or(0.0);
        }
        for (user, (sessions, purchases, spend)) in &per_user {
            let v = s.path_view(user).expect("user state is held");
            prop_assert_eq!(v.held_events, 0);
            prop_assert_eq!(
                (v.lifetime_sessions, v.lifetime_purchases, v.lifetime_spend),
                (*sessions, *purchases, *spend),
                "{}", user
            );
        }
        got.extend(s.flush());
        late.extend(late_of(&mut s));

        // Late events: exactly the model's, each with a reason.
        let late_ids: Vec<_> = late.iter().map(|(id, _)| id.clone()).collect();
        prop_assert_eq!(&late_ids, &model.late_ids);
        prop_assert!(late.iter().all(|(_, why)| why.contains("beyond the allowed lateness")));
        prop_assert_eq!(s.duplicates_dropped(), model.duplicates);
        prop_assert_eq!(s.late_events(), model.late_applied);
        prop_assert_eq!(s.open_sessions(), 0);

        // Revisions count up per logical session; corrections name what they replace.
        let mut latest: HashMap<String, (i32, &SessionSummary)> = HashMap::new();
        let mut superseded = HashSet::new();
        for x in &got {
            let prior = std::iter::once(&x.session_id)
                .chain(&x.superseded_session_ids)
                .filter_map(|id| latest.get(id).map(|(r, _)| *r))
                .max();
            prop_assert_eq!(x.revision, prior.map_or(0, |r| r + 1), "{:?}", x);
            for id in &x.superseded_session_ids {
                prop_assert!(latest.contains_key(id), "{} was never published", id);
                prop_assert_ne!(id, &x.session_id);
                superseded.insert(id.clone());
            }
            latest.insert(x.session_id.clone(), (x.revision, x));
        }
        let mut got_keys: Vec<Key> = latest
            .iter()
            .filter(|(id, _)| !superseded.contains(*id))
            .map(|(_, (_, x))| key(x))
            .collect();
        got_keys.sort();
        prop_assert_eq!(&got_keys, &model.sessions);

        // Offline assignment: the same sessions, keyed like the summaries.
        let assigned = assign_sessions(&model.accepted, &cfg());
        let mut sizes: BTreeMap<&str, i32> = BTreeMap::new();
        for k in &assigned {
            *sizes.entry(k.as_str()).or_default() += 1;
        }
        let modelled: BTreeMap<&str, i32> =
            model.sessions.iter().map(|k| (k.0.as_str(), k.4)).collect();
        prop_assert_eq!(sizes, modelled);
    }

    #[test]
    fn restore_from_the_changelog_continues_exactly(
        steps in prop::collection::vec(step(), 1..120),
        ticks in prop::collection::vec(
            prop::option::weighted(0.15, -3 * OOO..2 * OOO), 300),
        batches in prop::collection::vec(prop::bool::weighted(0.3), 300),
        split in 0.0f64..1.0,
    ) {
        let stream = arrivals(&steps);
        let ticks = tick_values(&stream, &ticks);
        let split = (split * stream.len() as f64) as usize;

        let mut whole = Sessionizer::new(cfg());
        let mut expected: Vec<Output> =
            stream.iter().zip(&ticks).map(|(e, &t)| feed(&mut whole, e, t)).collect();
        expected.push((whole.flush(), Vec::new()));

        // The first instance runs to the split, writing its changelog at batch ends.
        let mut changelog: BTreeMap<String, String> = BTreeMap::new();
        let write = |s: &mut Sessionizer, log: &mut BTreeMap<String, String>| {
            for (user, st) in s.take_changed() {
                match st {
                    Some(st) => {
                        log.insert(user, serde_json::to_string(&st).expect("serialises"));
                    }
                    None => {
                        log.remove(&user);
                    }
                }
            }
        };
        let mut first = Sessionizer::new(cfg());
        let mut got = Vec::new();
        for i in 0..split {
            got.push(feed(&mut first, &stream[i], ticks[i]));
            if batches[i % batches.len()] {
                write(&mut first, &mut changelog);
            }
        }
        write(&mut first, &mut changelog);
        let wm = first.watermark();
        drop(first);

        // A fresh instance restores from the changelog and continues.
        let mut second = Sessionizer::new(cfg());
        for (user, json) in &changelog {
            let st: UserState = serde_json::from_str(json).expect("deserialises");
            second.restore_user(user.clone(), st);
        }
        second.restore_watermark(wm);
        for i in split..stream.len() {
            got.push(feed(&mut second, &stream[i], ticks[i]));
        }
        got.push((second.flush(), Vec::new()));
        prop_assert_eq!(got, expected);
    }
}

/// The changelog entry of a shopper in the middle of a typical session: 20 events 30 s apart
/// (UUID event ids), the last few still held. Run with `--nocapture` to see the size.
#[test]
fn a_typical_users_state_is_compact() {
    let mut s = Sessionizer::new(SessionConfig::default());
    let t0 = 1_764_331_200_000;
    let kinds = [
        EventType::PageView,
        EventType::Search,
        EventType::ProductView,
        EventType::ProductView,
        EventType::AddToCart,
    ];
    for i in 0..20i64 {
        let id = format!("{:08x}-7d3c-4b1e-9f2a-{:012x}", 0x5eed_0000 + i, i * 7919);
        let kind = kinds[i as usize % kinds.len()];
        s.on_event(&ClickEvent::new(id, "user-0042", kind, t0 + i * 30_000));
    }
    let changed = s.take_changed();
    assert_eq!(changed.len(), 1);
    let st = changed[0].1.as_ref().expect("state");
    let bytes = serde_json::to_vec(st).expect("serialises").len();
    println!("changelog bytes for one active user (20 events, JSON): {bytes}");
    assert!(bytes <= 1024, "{bytes} bytes");
    let back: UserState = serde_json::from_slice(&serde_json::to_vec(st).unwrap()).unwrap();
    assert_eq!(&back, st);
}

/// The generated streams reach every case the properties claim to cover: in-lateness late
/// events, rejections beyond it, duplicates, corrections, merges and renamed sessions.
#[test]
fn generated_streams_cover_late_merges_and_duplicates() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let strategy = (
        prop::collection::vec(step(), 50..150),
        prop::collection::vec(prop::option::weighted(0.15, -3 * OOO..2 * OOO), 300),
    );
    let (mut late_applied, mut rejected, mut dups, mut corrections, mut merges, mut renames) =
        (0, 0, 0, 0, 0, 0);
    for _ in 0..64 {
        let (steps, ticks) = strategy.new_tree(&mut runner).unwrap().current();
        let stream = arrivals(&steps);
        let ticks = tick_values(&stream, &ticks);
        let mut s = Sessionizer::new(cfg());
        let mut got = Vec::new();
        for (i, e) in stream.iter().enumerate() {
            got.extend(feed(&mut s, e, ticks[i]).0);
        }
        got.extend(s.flush());
        late_applied += s.late_events();
        rejected += s.late_rejected();
        dups += s.duplicates_dropped();
        let mut published = HashSet::new();
        for x in &got {
            corrections += usize::from(x.revision > 0);
            let fresh = x
                .superseded_session_ids
                .iter()
                .filter(|id| published.remove(*id))
                .count();
            if fresh > 0 {
                // Merged into a session published under this id before, or renamed: its start moved.
                if published.contains(&x.session_id) {
                    merges += 1;
                } else {
                    renames += 1;
                }
            }
            published.insert(x.session_id.clone());
        }
    }
    println!(
        "late applied {late_applied}, rejected {rejected}, duplicates {dups}, corrections \
         {corrections}, superseded-by-merge {merges}, renamed {renames}"
    );
    for (what, n) in [
        ("late applied", late_applied as usize),
        ("rejected", rejected as usize),
        ("duplicates", dups as usize),
        ("corrections", corrections),
        ("merges", merges),
        ("renames", renames),
    ] {
        assert!(n > 0, "no {what} generated");
    }
}
