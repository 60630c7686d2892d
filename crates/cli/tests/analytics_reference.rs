//! The funnel and path counts of `clickpath_core::analytics` against a plain reference model,
//! on generated data and on the real fixtures (REES46, OTTO; DIGINETICA from `../shared/data`).
//!
//! The reference below is deliberately naive: per unit, per candidate start, it lists the step
//! numbers of the events inside the window and reads the answer off that list.

use clickpath_adapters::Format;
use clickpath_core::analytics::{
    FunnelOrder, FunnelSpec, PathSpec, RollingFunnel, Step, Unit, funnel_report, journeys,
    path_counts,
};
use clickpath_generator::{Generated, Generator, GeneratorConfig};
use clickpath_schema::{ClickEvent, EventType};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// What the reference computes for one funnel.
#[derive(Debug, PartialEq)]
struct RefFunnel {
    uniques: Vec<u64>,
    totals: Vec<u64>,
    time_to_convert: Vec<i64>,
}

fn step_of(steps: &[Vec<EventType>], t: EventType) -> Option<usize> {
    steps.iter().position(|s| s.contains(&t))
}

/// (steps reached, index of the last event used, completion times) of the attempt starting at `i`.
fn ref_attempt(
    evs: &[&ClickEvent],
    steps: &[Vec<EventType>],
    order: FunnelOrder,
    window: i64,
    i: usize,
) -> Option<(usize, usize, Vec<i64>)> {
    let n = steps.len();
    let first = step_of(steps, evs[i].event_type)?;
    if order != FunnelOrder::AnyOrder && first != 0 {
        return None;
    }
    let t0 = evs[i].event_time;
    // (index, step number or None) of every event from the start that lies inside the window.
    let inside: Vec<(usize, Option<usize>)> = (i..evs.len())
        .filter(|&j| evs[j].event_time - t0 <= window)
        .map(|j| (j, step_of(steps, evs[j].event_type)))
        .collect();
    let mut reached = 0;
    let mut last = i;
    let mut times = Vec::new();
    match order {
        FunnelOrder::Ordered => {
            // The longest prefix 0, 1, 2, … of the steps that is a subsequence of `inside`.
            for &(j, s) in &inside {
                if reached < n && s == Some(reached) {
                    reached += 1;
                    last = j;
                    times.push(evs[j].event_time);
                }
            }
        }
        FunnelOrder::Strict => {
            for (m, &(j, s)) in inside.iter().enumerate() {
                if m >= n || s != Some(m) {
                    break;
                }
                reached += 1;
                last = j;
                times.push(evs[j].event_time);
            }
        }
        FunnelOrder::AnyOrder => {
            let mut seen = vec![false; n];
            for &(j, s) in &inside {
                if let Some(s) = s
                    && !seen[s]
                    && reached < n
                {
                    seen[s] = true;
                    reached += 1;
                    last = j;
                    times.push(evs[j].event_time);
                }
            }
        }
    }
    Some((reached, last, times))
}

fn reference_funnel(
    events: &[ClickEvent],
    steps: &[Vec<EventType>],
    order: FunnelOrder,
    window: i64,
    unit: Unit,
) -> RefFunnel {
    let n = steps.len();
    let mut by_unit: HashMap<String, Vec<&ClickEvent>> = HashMap::new();
    for e in events {
        let key = match unit {
            Unit::User => e.user_id.clone(),
            Unit::Session => e.session_id.clone().unwrap_or_else(|| e.user_id.clone()),
        };
        by_unit.entry(key).or_default().push(e);
    }
    let mut out = RefFunnel {
        uniques: vec![0; n],
        totals: vec![0; n],
        time_to_convert: Vec::new(),
    };
    for evs in by_unit.values_mut() {
        evs.sort_by_key(|e| e.event_time);
        let mut best: Option<(usize, Vec<i64>)> = None;
        let mut blocked_through = None;
        for i in 0..evs.len() {
            let Some((reached, last, times)) = ref_attempt(evs, steps, order, window, i) else {
                continue;
            };
            if best.as_ref().is_none_or(|b| reached > b.0) {
                best = Some((reached, times));
            }
            if blocked_through.is_some_and(|b| i <= b) {
                continue;
            }
            for k in 0..reached {
                out.totals[k] += 1;
            }
            if reached == n {
                blocked_through = Some(last);
            }
        }
        if let Some((reached, times)) = best {
            for k in 0..reached {
                out.uniques[k] += 1;
            }
            if reached == n {
                out.time_to_convert.push(times[n - 1] - times[0]);
            }
        }
    }
    out.time_to_convert.sort_unstable();
    out
}

/// Path -> (units, converted): repeats dropped with `dedup`, cut at `max_len`.
fn reference_paths(
    events: &[ClickEvent],
    steps: &[Vec<EventType>],
    window: i64,
    max_len: usize,
) -> HashMap<(Vec<EventType>, bool), (u64, u64)> {
    let mut by_user: HashMap<&str, Vec<&ClickEvent>> = HashMap::new();
    for e in events {
        by_user.entry(&e.user_id).or_default().push(e);
    }
    let mut out: HashMap<(Vec<EventType>, bool), (u64, u64)> = HashMap::new();
    for evs in by_user.values_mut() {
        evs.sort_by_key(|e| e.event_time);
        let mut types: Vec<EventType> = evs.iter().map(|e| e.event_type).collect();
        types.dedup();
        let truncated = types.len() > max_len;
        types.truncate(max_len);
        let converted = (0..evs.len()).any(|i| {
            ref_attempt(evs, steps, FunnelOrder::Ordered, window, i)
                .is_some_and(|a| a.0 == steps.len())
        });
        let c = out.entry((types, truncated)).or_default();
        c.0 += 1;
        c.1 += u64::from(converted);
    }
    out
}

fn check(name: &str, events: &[ClickEvent], steps: &[Vec<EventType>], windows: &[i64]) {
    assert!(!events.is_empty(), "{name}: no events");
    for &window in windows {
        for order in [
            FunnelOrder::Ordered,
            FunnelOrder::Strict,
            FunnelOrder::AnyOrder,
        ] {
            for unit in [Unit::User, Unit::Session] {
                let spec = FunnelSpec::new(
                    steps.iter().map(|s| Step::of(s)).collect(),
                    order,
                    window,
                    unit,
                    86_400_000,
                )
                .unwrap();
                let got = funnel_report(&journeys(events, unit), &spec);
                let want = reference_funnel(events, steps, order, window, unit);
                let ctx = format!("{name} {order:?} {unit:?} window {window}");
                // Every data set here has units that convert in an ordered funnel.
                if order == FunnelOrder::Ordered && Some(&window) == windows.last() {
                    assert!(want.uniques[steps.len() - 1] > 0, "{ctx}: trivial funnel");
                }
                assert_eq!(got.overall.uniques, want.uniques, "uniques, {ctx}");
                assert_eq!(got.overall.totals, want.totals, "totals, {ctx}");
                assert_eq!(got.time_to_convert_ms, want.time_to_convert, "{ctx}");
                // The breakdowns partition the units.
                let bucket_sum: u64 = got.buckets.iter().map(|b| b.counts.uniques[0]).sum();
                assert_eq!(bucket_sum, want.uniques[0], "buckets, {ctx}");
                for seg in &got.segments {
                    let s: u64 = seg.values.iter().map(|(_, c)| c.uniques[0]).sum();
                    assert_eq!(s, want.uniques[0], "{:?}, {ctx}", seg.segment);
                }
            }
        }
        let spec = FunnelSpec::new(
            steps.iter().map(|s| Step::of(s)).collect(),
            FunnelOrder::Ordered,
            window,
            Unit::User,
            86_400_000,
        )
        .unwrap();
        let max_len = PathSpec::default().max_len;
        let got: HashMap<(Vec<EventType>, bool), (u64, u64)> =
            path_counts(&journeys(events, Unit::User), &spec, max_len)
                .into_iter()
                .map(|p| ((p.path.steps, p.path.truncated), (p.units, p.converted)))
                .collect();
        assert_eq!(
            got,
            reference_paths(events, steps, window, max_len),
            "{name} paths"
        );
    }
    println!("{name}: {} events agree with the reference", events.len());
}

fn read(format: Format, path: &Path) -> Vec<ClickEvent> {
    clickpath_adapters::read(format, path)
        .unwrap()
        .filter_map(Result::ok)
        .collect()
}

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../adapters/tests/fixtures")
}

use EventType::*;
const MIN: i64 = 60_000;

#[test]
fn generated_data_agrees_with_the_reference() {
    let cfg = GeneratorConfig {
        sessions: 600,
        users: 200,
        ..GeneratorConfig::default()
    };
    let events: Vec<ClickEvent> = Generator::new(cfg)
        .unwrap()
        .filter_map(|g| match g {
            Generated::Event(e) => Some(e),
            Generated::Malformed(_) => None,
        })
        .collect();
    let steps = [
        vec![ProductView],
        vec![AddToCart],
        vec![BeginCheckout, PaymentAttempt],
        vec![Purchase],
    ];
    // A short window makes it bind; a day lets attempts span sessions.
    check("generated", &events, &steps, &[10 * MIN, 1440 * MIN]);
    let steps = [vec![Search], vec![ProductView], vec![AddToCart]];
    check("generated/search", &events, &steps, &[30 * MIN]);
}

#[test]
fn rees46_fixture_agrees_with_the_reference() {
    let events = read(
        Format::Rees46,
        &fixtures().join("rees46/2019-Oct-sample.csv"),
    );
    let steps = [vec![ProductView], vec![AddToCart], vec![Purchase]];
    check("rees46", &events, &steps, &[5 * MIN, 1440 * MIN]);
}

#[test]
fn otto_fixture_agrees_with_the_reference() {
    let events = read(Format::Otto, &fixtures().join("otto/train.jsonl"));
    let steps = [vec![ProductView], vec![AddToCart], vec![Purchase]];
    check("otto", &events, &steps, &[30 * MIN, 14 * 1440 * MIN]);
}

#[test]
fn diginetica_agrees_with_the_reference() {
    let Some(dir) = clickpath_testkit::shared_data_dir() else {
        return;
    };
    let path = dir.join("diginetica_cikm2016/DERIVED_joined_views_purchases_sessions1-3999.csv");
    let events = read(Format::Diginetica, &path);
    let steps = [vec![ProductView], vec![Purchase]];
    check("diginetica", &events, &steps, &[30 * MIN, 1440 * MIN]);
}

/// Per bucket of attempt starts: (uniques, totals), by the reference model.
fn reference_bucketed(
    events: &[ClickEvent],
    steps: &[Vec<EventType>],
    order: FunnelOrder,
    window: i64,
    bucket: i64,
) -> BTreeMap<i64, (Vec<u64>, Vec<u64>)> {
    let n = steps.len();
    let mut by_user: HashMap<&str, Vec<&ClickEvent>> = HashMap::new();
    for e in events {
        by_user.entry(&e.user_id).or_default().push(e);
    }
    let mut out: BTreeMap<i64, (Vec<u64>, Vec<u64>)> = BTreeMap::new();
    for evs in by_user.values_mut() {
        evs.sort_by_key(|e| e.event_time);
        // bucket -> (best reach, blocked through)
        let mut per_bucket: BTreeMap<i64, (usize, Option<usize>)> = BTreeMap::new();
        for i in 0..evs.len() {
            let Some((reached, last, _)) = ref_attempt(evs, steps, order, window, i) else {
                continue;
            };
            let b = evs[i].event_time.div_euclid(bucket) * bucket;
            let (best, blocked) = per_bucket.entry(b).or_insert((0, None));
            *best = (*best).max(reached);
            let counts = out.entry(b).or_insert((vec![0; n], vec![0; n]));
            if blocked.is_some_and(|x| i <= x) {
                continue;
            }
            for k in 0..reached {
                counts.1[k] += 1;
            }
            if reached == n {
                *blocked = Some(last);
            }
        }
        for (b, (best, _)) in per_bucket {
            let counts = out.get_mut(&b).unwrap();
            for k in 0..best {
                counts.0[k] += 1;
            }
        }
    }
    out
}

/// Feeds `events` in file order, with the watermark `lateness` behind the newest event.
fn check_rolling(name: &str, events: &[ClickEvent], steps: &[Vec<EventType>], bucket: i64) {
    let window = 30 * MIN;
    let lateness = 60 * MIN;
    for order in [
        FunnelOrder::Ordered,
        FunnelOrder::Strict,
        FunnelOrder::AnyOrder,
    ] {
        let spec = FunnelSpec::new(
            steps.iter().map(|s| Step::of(s)).collect(),
            order,
            window,
            Unit::User,
            bucket,
        )
        .unwrap();
        let mut rolling = RollingFunnel::new(spec, 100_000);
        let mut got = Vec::new();
        let mut newest = i64::MIN;
        for (i, e) in events.iter().enumerate() {
            rolling.push(e);
            newest = newest.max(e.event_time);
            if i % 50 == 0 {
                got.extend(rolling.advance(newest - lateness));
            }
        }
        got.extend(rolling.flush());
        assert_eq!(rolling.late(), 0, "{name}: late events");
        assert_eq!(rolling.units(), 0, "{name}: state left after flush");
        let got: BTreeMap<i64, (Vec<u64>, Vec<u64>)> = got
            .into_iter()
            .map(|b| {
                let s: u64 = b.segments[0].values.iter().map(|v| v.1.uniques[0]).sum();
                assert_eq!(s, b.counts.uniques[0], "{name}: segments partition units");
                (b.start_ms, (b.counts.uniques, b.counts.totals))
            })
            .collect();
        let want = reference_bucketed(events, steps, order, window, bucket);
        assert!(want.len() > 1, "{name}: one bucket only");
        assert_eq!(got, want, "{name} {order:?}");
    }
}

#[test]
fn rolling_buckets_agree_with_the_reference() {
    let cfg = GeneratorConfig {
        sessions: 400,
        users: 150,
        ..GeneratorConfig::default()
    };
    let events: Vec<ClickEvent> = Generator::new(cfg)
        .unwrap()
        .filter_map(|g| match g {
            Generated::Event(e) => Some(e),
            Generated::Malformed(_) => None,
        })
        .collect();
    let steps = [vec![ProductView], vec![AddToCart], vec![Purchase]];
    check_rolling("generated", &events, &steps, 60 * MIN);
    let rees = read(
        Format::Rees46,
        &fixtures().join("rees46/2019-Oct-sample.csv"),
    );
    check_rolling("rees46", &rees, &steps, MIN);
}
