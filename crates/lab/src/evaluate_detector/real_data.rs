//! The detector on real data sets (`evaluate-detector --data FORMAT=PATH`): a public data set replayed
//! as it is, so every alert is a false alarm (reported per 10,000 users per hour of data, against the
//! budget), and the same data with the generator's attacks mixed in (precision and recall per type,
//! real users' alerts counting as false positives).
//!
//! The events are put in event-time order (as a broker replay of a time-sorted file delivers them),
//! cleaned by the cleaning stage's core code and fed to the detector stage's [`Detector`], in process.

use super::{AlertRecord, Row, SurpriseSetup, score};
use anyhow::Context as _;
use clickpath_adapters::Format;
use clickpath_core::dedupe::Deduper;
use clickpath_core::rules::{RulesConfig, alert_type_symbol};
use clickpath_core::{Detector, FeatureWindower, ValidationConfig, validate_and_normalise};
use clickpath_generator::{AnomalyLabel, Generated, Generator, GeneratorConfig, TruthRecord};
use clickpath_schema::ClickEvent;
use clickpath_stages::scorer::Scorer;
use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::path::PathBuf;

/// A data set to evaluate on: `FORMAT=PATH`, e.g. `rees46=2019-Oct.csv`.
#[derive(Debug, Clone, PartialEq)]
pub struct DataSet {
    /// Its format.
    pub format: Format,
    /// The file.
    pub path: PathBuf,
}

impl std::str::FromStr for DataSet {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (format, path) = s
            .split_once('=')
            .ok_or_else(|| format!("{s:?}: expected FORMAT=PATH, e.g. rees46=events.csv"))?;
        Ok(DataSet {
            format: format.parse().map_err(|e| format!("{s:?}: {e}"))?,
            path: PathBuf::from(path),
        })
    }
}

/// How a real data set is evaluated.
#[derive(Debug, Clone)]
pub struct RealDataOptions {
    /// The data.
    pub data: DataSet,
    /// Generator attacks of each type mixed in (0: the data alone).
    pub inject_per_type: u32,
    /// Seed of the injected attacks.
    pub seed: u64,
    /// Detector thresholds.
    pub rules: RulesConfig,
    /// The cleaning stage's checks.
    pub validation: ValidationConfig,
    /// The cleaning stage's de-duplication window (ms of event time).
    pub dedupe_window_ms: i64,
    /// The most event ids the cleaning stage remembers.
    pub dedupe_max_ids: usize,
    /// When set, every clean event is also scored (windower and scorer in process) and its
    /// prediction fed to the detector: the model-surprise rule on real data.
    pub model_surprise: Option<SurpriseSetup>,
}

/// What the detector did on one data set.
#[derive(Debug, Clone)]
pub struct RealDataReport {
    /// `format path`.
    pub name: String,
    /// Clean events of the data set itself (injected ones not counted).
    pub events: u64,
    /// Rows the adapter or the cleaning rejected.
    pub dropped: u64,
    /// Users of the data set itself.
    pub users: usize,
    /// Hours of event time the data set spans.
    pub hours: f64,
    /// Alerts on the data set's own users, per type (all false alarms: nothing was injected there).
    pub false_alarms: BTreeMap<String, usize>,
    /// Per scenario type when attacks were injected (real users' alerts count as false positives).
    pub injected: Option<Vec<Row>>,
    /// Findings the false-alarm budget held back (they opened no alert), per type.
    pub over_budget: BTreeMap<String, u64>,
    /// Whether the model's predictions were fed to the detector (the model-surprise rule on).
    pub model_surprise: bool,
}

impl RealDataReport {
    /// False alarms on the data's own users per 10,000 users per hour of data, summed over types. A
    /// data set shorter than an hour counts as one hour.
    pub fn false_alarms_per_10k_users_hour(&self) -> f64 {
        let alarms: usize = self.false_alarms.values().sum();
        alarms as f64 * 10_000.0 / self.users.max(1) as f64 / self.hours.max(1.0)
    }
}

/// Reads the data set, mixes in the attacks if asked, and runs cleaning and the detector over it.
pub fn evaluate_real(opts: &RealDataOptions) -> anyhow::Result<RealDataReport> {
    let d = &opts.data;
    let mut dropped = 0u64;
    let mut events: Vec<ClickEvent> = Vec::new();
    for item in clickpath_adapters::read(d.format, &d.path)
        .with_context(|| format!("reading {}", d.path.display()))?
    {
        match item {
            Ok(e) => events.push(e),
            Err(_) => dropped += 1,
        }
    }
    anyhow::ensure!(!events.is_empty(), "{}: no events", d.path.display());
    let real_users: HashSet<String> = events.iter().map(|e| e.user_id.clone()).collect();
    let (first, last) = events.iter().fold((i64::MAX, i64::MIN), |(a, b), e| {
        (a.min(e.event_time), b.max(e.event_time))
    });
    let labels = if opts.inject_per_type > 0 {
        let (attack, labels) = attacks(opts, first)?;
        events.extend(attack);
        labels
    } else {
        Vec::new()
    };
    events.sort_by_key(|e| e.event_time);

    let mut dedupe = Deduper::new(opts.dedupe_window_ms, opts.dedupe_max_ids);
    let mut detector = Detector::new(opts.rules.clone(), "evaluate-detector");
    let mut scoring = opts.model_surprise.as_ref().map(|m| {
        (
            FeatureWindower::new(m.windower.clone()),
            Scorer::new(m.model.clone(), &m.scorer, ""),
        )
    });
    let (mut clean, mut now) = (0u64, i64::MIN);
    let mut alerts = Vec::new();
    for mut ev in events {
        now = now.max(ev.event_time);
        let real = real_users.contains(&ev.user_id);
        if validate_and_normalise(&mut ev, &opts.validation, now).is_err()
            || dedupe.is_duplicate(&ev.event_id, ev.event_time)
        {
            dropped += u64::from(real);
            continue;
        }
        clean += u64::from(real);
        let mut raised = detector.on_event(&ev);
        if let Some((windower, scorer)) = scoring.as_mut() {
            // As in the pipeline: the prediction for an event reaches the detector after it.
            let prediction = scorer.score(&windower.update(&ev));
            raised.extend(detector.on_prediction(&prediction));
        }
        for a in raised {
            alerts.push(AlertRecord {
                alert_id: a.alert_id,
                user_id: a.user_id,
                alert_type: a.alert_type,
                window_end: a.window_end,
            });
        }
    }
    let mut false_alarms: BTreeMap<String, usize> = BTreeMap::new();
    let mut seen = HashSet::new();
    for a in &alerts {
        if real_users.contains(&a.user_id) && seen.insert(a.alert_id.as_str()) {
            *false_alarms
                .entry(alert_type_symbol(a.alert_type).to_string())
                .or_default() += 1;
        }
    }
    Ok(RealDataReport {
        name: format!("{} {}", d.format, d.path.display()),
        events: clean,
        dropped,
        users: real_users.len(),
        hours: (last - first).max(0) as f64 / 3_600_000.0,
        false_alarms,
        injected: (opts.inject_per_type > 0).then(|| score(&labels, &alerts)),
        over_budget: detector
            .over_budget()
            .into_iter()
            .map(|(t, n)| (alert_type_symbol(t).to_string(), n))
            .collect(),
        model_surprise: opts.model_surprise.is_some(),
    })
}

/// The generator's attacks (with the few ordinary sessions their victims need as history), moved
/// to start at `start` and given user and event ids that cannot collide with the data's.
fn attacks(
    opts: &RealDataOptions,
    start: i64,
) -> anyhow::Result<(Vec<ClickEvent>, Vec<AnomalyLabel>)> {
    let n = opts.inject_per_type;
    let sessions = u64::from(n) * 20;
    let mut generator = Generator::new(GeneratorConfig {
        seed: opts.seed,
        sessions,
        users: u32::try_from((sessions / 5).max(50)).unwrap_or(u32::MAX),
        // No legitimate-but-odd patterns here: their checkouts would teach the learned grammar
        // the generator's checkout habit on a data set that has none (they are measured on the
        // generated mix, whose grammar is their own).
        scenarios: super::scenario_mix(n, n, 0),
        ..GeneratorConfig::default()
    })
    .context("generator configuration")?;
    let mut events: Vec<ClickEvent> = generator
        .by_ref()
        .filter_map(|g| match g {
            Generated::Event(e) => Some(e),
            Generated::Malformed(_) => None,
        })
        .collect();
    let gen_start = events.iter().map(|e| e.event_time).min().unwrap_or(start);
    let shift = start - gen_start;
    for e in &mut events {
        e.event_time += shift;
        e.user_id = format!("injected-{}", e.user_id);
        e.event_id = format!("injected-{}", e.event_id);
    }
    let labels = generator
        .take_truth()
        .into_iter()
        .filter_map(|t| match t {
            TruthRecord::Anomaly(mut l) => {
                l.user_id = format!("injected-{}", l.user_id);
                l.start_time += shift;
                l.end_time += shift;
                l.detectable_at_ms += shift;
                Some(l)
            }
            _ => None,
        })
        .collect();
    Ok((events, labels))
}

/// The reports as Markdown.
pub fn render_real(reports: &[RealDataReport]) -> String {
    let mut s = String::new();
    if reports.iter().any(|r| r.model_surprise) {
        let _ = writeln!(
            s,
            "Model surprise on: every clean event scored by the configured model, its prediction fed to the detector.\n"
        );
    }
    let _ = writeln!(
        s,
        "| data set | events | users | hours | false alarms | per 10k users per hour | by type | held back by the budget |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---|---|");
    for r in reports {
        let by_type: Vec<String> = r
            .false_alarms
            .iter()
            .map(|(t, n)| format!("{t} {n}"))
            .collect();
        let held: Vec<String> = r
            .over_budget
            .iter()
            .map(|(t, n)| format!("{t} {n}"))
            .collect();
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.2} | {} | {:.2} | {} | {} |",
            r.name,
            r.events,
            r.users,
            r.hours,
            r.false_alarms.values().sum::<usize>(),
            r.false_alarms_per_10k_users_hour(),
            if by_type.is_empty() {
                "-".to_string()
            } else {
                by_type.join(", ")
            },
            if held.is_empty() {
                "-".to_string()
            } else {
                held.join(", ")
            }
        );
    }
    for r in reports {
        let Some(rows) = &r.injected else { continue };
        let _ = writeln!(s, "\nAttacks mixed into {}:\n", r.name);
        let _ = writeln!(
            s,
            "| type | labelled | detected | alerts | true pos. | precision | recall | latency p50 ms | latency p99 ms |"
        );
        let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
        for row in rows {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {:.3} | {:.3} | {} | {} |",
                row.name,
                row.labelled,
                row.detected,
                row.alerts,
                row.true_positives,
                row.precision(),
                row.recall(),
                super::ms(row.latency_p50_ms),
                super::ms(row.latency_p99_ms)
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_sets_are_named_format_equals_path() {
        let d: DataSet = "rees46=data/x.csv".parse().unwrap();
        assert_eq!(d.format, Format::Rees46);
        assert_eq!(d.path, PathBuf::from("data/x.csv"));
        assert!("data/x.csv".parse::<DataSet>().is_err());
        assert!(
            "parquet=x"
                .parse::<DataSet>()
                .unwrap_err()
                .contains("unknown format")
        );
    }
}
