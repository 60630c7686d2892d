//! Durable state on real data sets: the windower, the detector and the rolling funnel, restored
//! halfway through a real stream from the changes they journaled, continue exactly like an
//! uninterrupted run (docs/state.md). REES46 comes from the adapters' fixture and always runs;
//! DIGINETICA is read from `../shared/data` and skipped when absent.

use clickpath_adapters::{Format, read};
use clickpath_core::analytics::{FunnelSpec, RollingFunnel};
use clickpath_core::features::{FeatureSpec, FeatureWindower};
use clickpath_core::rules::{Detector, RulesConfig};
use clickpath_schema::ClickEvent;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn events(format: Format, path: &Path) -> Vec<ClickEvent> {
    let mut evs: Vec<ClickEvent> = read(format, path).unwrap().filter_map(Result::ok).collect();
    evs.sort_by_key(|e| e.event_time);
    assert!(evs.len() > 500, "{}: {} events", path.display(), evs.len());
    evs
}

/// Runs `step` over `evs` uninterrupted, and again with a handover at the middle: the first
/// instance journals (taking its changes every 100 events, as a stage's batches), the second is
/// built from the last value of each key. Both must give the same outputs.
fn check<S, O: PartialEq + std::fmt::Debug>(
    name: &str,
    evs: &[ClickEvent],
    fresh: impl Fn(bool) -> S,
    step: impl Fn(&mut S, &ClickEvent) -> O,
    take: impl Fn(&mut S) -> Vec<(Vec<u8>, Option<Vec<u8>>)>,
    restore: impl Fn(&mut S, &[u8], &[u8]),
) {
    let mut reference = fresh(false);
    let want: Vec<O> = evs.iter().map(|e| step(&mut reference, e)).collect();
    let cut = evs.len() / 2;
    let mut first = fresh(true);
    let mut log: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
    let mut got = Vec::new();
    for chunk in evs[..cut].chunks(100) {
        got.extend(chunk.iter().map(|e| step(&mut first, e)));
        log.extend(take(&mut first));
    }
    let mut second = fresh(false);
    for (k, v) in &log {
        if let Some(v) = v {
            restore(&mut second, k, v);
        }
    }
    got.extend(evs[cut..].iter().map(|e| step(&mut second, e)));
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(
            g, w,
            "{name}: output {i} differs after the handover at {cut}"
        );
    }
}

fn check_all(name: &str, evs: &[ClickEvent]) {
    check(
        &format!("{name} windower"),
        evs,
        |journal| {
            let w = FeatureWindower::new(FeatureSpec::default());
            if journal { w.with_journal() } else { w }
        },
        |w, e| w.update(e).values,
        |w| {
            w.take_changes()
                .into_iter()
                .map(|(u, v)| (u.into_bytes(), v))
                .collect()
        },
        |w, k, v| {
            w.restore_user(String::from_utf8(k.to_vec()).unwrap(), v)
                .unwrap()
        },
    );
    check(
        &format!("{name} detector"),
        evs,
        |journal| {
            let d = Detector::new(RulesConfig::default(), "v");
            if journal { d.with_journal() } else { d }
        },
        // Real shops raise no alerts (docs/detector.md), so the anomaly score, which depends on
        // the restored forest and profiles, is compared too.
        |d, e| (d.on_event(e), d.last_anomaly_score().to_bits()),
        |d| {
            let c = d.take_changes().unwrap();
            let mut out: Vec<(Vec<u8>, Option<Vec<u8>>)> = c
                .users
                .into_iter()
                .map(|(u, v)| (u.into_bytes(), v))
                .collect();
            out.extend(c.statistics.map(|s| (Vec::new(), Some(s))));
            out
        },
        |d, k, v| {
            if k.is_empty() {
                d.restore_statistics(v).unwrap()
            } else {
                d.restore_user(String::from_utf8(k.to_vec()).unwrap(), v)
                    .unwrap()
            }
        },
    );
    check(
        &format!("{name} rolling funnel"),
        evs,
        |journal| {
            let f = RollingFunnel::new(FunnelSpec::default(), 10_000);
            if journal { f.with_journal() } else { f }
        },
        |f, e| {
            f.push(e);
            (f.advance(e.event_time - 3_600_000), f.units())
        },
        |f| {
            let c = f.take_changes();
            let mut out: Vec<(Vec<u8>, Option<Vec<u8>>)> = c
                .units
                .into_iter()
                .map(|(u, v)| (u.into_bytes(), v))
                .collect();
            out.extend(c.markers.map(|m| (Vec::new(), Some(m))));
            out
        },
        |f, k, v| {
            if k.is_empty() {
                f.restore_markers(v).unwrap()
            } else {
                f.restore_unit(String::from_utf8(k.to_vec()).unwrap(), v)
                    .unwrap()
            }
        },
    );
}

#[test]
fn rees46_state_restored_midway_continues_exactly() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../adapters/tests/fixtures/rees46/2019-Oct-sample.csv");
    check_all("REES46", &events(Format::Rees46, &path));
}

#[test]
fn diginetica_state_restored_midway_continues_exactly() {
    let Some(dir) = clickpath_testkit::shared_data_dir() else {
        return;
    };
    let path = dir.join("diginetica_cikm2016/DERIVED_joined_views_purchases_sessions1-3999.csv");
    check_all("DIGINETICA", &events(Format::Diginetica, &path));
}
