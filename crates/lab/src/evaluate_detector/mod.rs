//! `clickpath-lab evaluate-detector`: the detector's measured quality on labelled generator traffic.
//!
//! The generator's fraud and bot scenarios are mixed into ordinary traffic (with its dirty data:
//! duplicates, reordering, malformed records), cleaned by the cleaning stage's core code
//! (validation, de-duplication) and fed to the same [`Detector`] the detector stage runs, in
//! process, with no Kafka. Then, per scenario type:
//!
//! - an alert (one `alert_id`; its escalations are the same alert) is a **true positive** when
//!   its user and type match a labelled scenario ([`ScenarioKind::alert_type`]); every other alert
//!   is a **false positive**, including alerts of another type on a scenario's user;
//! - **precision** = true-positive alerts / alerts of that type; **recall** = labelled scenarios
//!   with at least one matching alert / labelled scenarios;
//! - **latency** = the alert's `window_end` when it was first emitted minus the label's
//!   `detectable_at_ms` (event time). Alerts raised before the scenario is complete by its
//!   minimal definition count as 0 and are counted as "early".
//!
//! It also measures the Half-Space Trees score as a detector on its own: the area under the ROC
//! curve of each user's highest per-event score, scenario users of a type against ordinary
//! users.

pub mod real_data;

use anyhow::Context as _;
use clickpath_core::dedupe::Deduper;
use clickpath_core::rules::{RulesConfig, alert_type_symbol};
use clickpath_core::{
    Detector, FeatureSpec, FeatureWindower, ValidationConfig, validate_and_normalise,
};
use clickpath_generator::{
    AnomalyLabel, Generated, Generator, GeneratorConfig, LegitLabel, LegitPattern, ScenarioConfig,
    ScenarioKind, TruthRecord,
};
use clickpath_model::baseline::BaselineModel;
use clickpath_schema::AlertType;
use clickpath_stages::config::ScorerConfig;
use clickpath_stages::scorer::Scorer;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;

/// Arguments of `clickpath-lab evaluate-detector`.
#[derive(Debug, Clone, clap::Args)]
pub struct EvaluateDetectorArgs {
    /// Ordinary sessions to generate.
    #[arg(long, default_value_t = 20_000)]
    pub sessions: u64,
    /// Generator seed.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Injected instances of each scenario type.
    #[arg(long, default_value_t = 25)]
    pub per_type: u32,
    /// Injected instances of each harder variant (jittered crawlers, slow card testing, local
    /// takeovers, human-speed cart stuffing; card-testing rings: a fifth as many, each of 8 to 12
    /// accounts).
    #[arg(long, default_value_t = 25)]
    pub hard_per_type: u32,
    /// Injected legitimate-but-odd sessions of each pattern (bulk orders, fast repeat buyers, new
    /// phones): every alert on them is a false alarm.
    #[arg(long, default_value_t = 25)]
    pub legit_per_type: u32,
    /// Also score every event with the configured model and feed the predictions to the
    /// detector (the model-surprise rule), on the generated mix or with --data.
    #[arg(long)]
    pub model_surprise: bool,
    /// Evaluate on a real data set instead, `FORMAT=PATH` (repeatable): false alarms per 10,000
    /// users per hour, and with `--inject` the generator's attacks mixed in.
    #[arg(long = "data", value_name = "FORMAT=PATH")]
    pub data: Vec<real_data::DataSet>,
    /// With --data: attacks of each type mixed into the data (0: the data alone).
    #[arg(long, default_value_t = 0, requires = "data")]
    pub inject: u32,
}

/// `clickpath-lab evaluate-detector`: the configured detector on labelled scenarios, as a table.
pub fn run_command(
    args: &EvaluateDetectorArgs,
    cfg: clickpath_stages::ClickpathConfig,
) -> anyhow::Result<()> {
    let model_surprise = if args.model_surprise {
        Some(SurpriseSetup {
            model: clickpath_stages::topology::load_scorer_model(&cfg)?,
            windower: cfg.windower.clone(),
            scorer: cfg.scorer.clone(),
        })
    } else {
        None
    };
    if !args.data.is_empty() {
        let mut reports = Vec::new();
        for data in &args.data {
            reports.push(real_data::evaluate_real(&real_data::RealDataOptions {
                data: data.clone(),
                inject_per_type: args.inject,
                seed: args.seed,
                rules: cfg.detector.clone(),
                validation: cfg.cleaning.validation.clone(),
                dedupe_window_ms: cfg.cleaning.dedupe_window_ms,
                dedupe_max_ids: cfg.cleaning.dedupe_max_ids,
                model_surprise: model_surprise.clone(),
            })?);
        }
        print!("{}", real_data::render_real(&reports));
        return Ok(());
    }
    let opts = EvalOptions {
        sessions: args.sessions,
        seed: args.seed,
        per_type: args.per_type,
        hard_per_type: args.hard_per_type,
        legit_per_type: args.legit_per_type,
        rules: cfg.detector,
        validation: cfg.cleaning.validation,
        dedupe_window_ms: cfg.cleaning.dedupe_window_ms,
        dedupe_max_ids: cfg.cleaning.dedupe_max_ids,
        model_surprise,
    };
    print!("{}", render(&evaluate(&opts)?));
    Ok(())
}

/// What to evaluate.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    /// Ordinary sessions to generate.
    pub sessions: u64,
    /// Generator seed.
    pub seed: u64,
    /// Injected instances of each scenario type.
    pub per_type: u32,
    /// Injected instances of each harder variant (see [`scenario_mix`]).
    pub hard_per_type: u32,
    /// Injected legitimate-but-odd sessions of each [`LegitPattern`].
    pub legit_per_type: u32,
    /// Detector thresholds.
    pub rules: RulesConfig,
    /// The cleaning stage's field and time checks.
    pub validation: ValidationConfig,
    /// The cleaning stage's de-duplication window (ms of event time).
    pub dedupe_window_ms: i64,
    /// The most event ids the cleaning stage remembers.
    pub dedupe_max_ids: usize,
    /// When set, every clean event also goes through the windower and the scorer (in process),
    /// and its prediction is fed to the detector, enabling the model-surprise rule.
    pub model_surprise: Option<SurpriseSetup>,
}

/// The windower and scorer that produce predictions for the model-surprise rule.
#[derive(Debug, Clone)]
pub struct SurpriseSetup {
    /// The scorer's model.
    pub model: BaselineModel,
    /// The windower's feature settings.
    pub windower: FeatureSpec,
    /// The scorer's settings.
    pub scorer: ScorerConfig,
}

impl Default for EvalOptions {
    fn default() -> Self {
        EvalOptions {
            sessions: 20_000,
            seed: 42,
            per_type: 25,
            hard_per_type: 25,
            legit_per_type: 25,
            rules: RulesConfig::default(),
            validation: ValidationConfig::default(),
            dedupe_window_ms: 3_600_000,
            dedupe_max_ids: 1_000_000,
            model_surprise: None,
        }
    }
}

/// One emission of an alert: its first, or an escalation (which keeps the alert's id).
#[derive(Debug, Clone, PartialEq)]
pub struct AlertRecord {
    /// Alert id (user, type, window start).
    pub alert_id: String,
    /// The user alerted on.
    pub user_id: String,
    /// What was detected.
    pub alert_type: AlertType,
    /// `window_end` of this emission (ms of event time).
    pub window_end: i64,
}

/// One row of the result table.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Scenario type (or alert type for alerts no scenario explains, or `overall`).
    pub name: String,
    /// Labelled scenarios.
    pub labelled: usize,
    /// Labelled scenarios with a matching alert.
    pub detected: usize,
    /// Distinct alerts of the type.
    pub alerts: usize,
    /// Alerts matching a label.
    pub true_positives: usize,
    /// Alerts raised before `detectable_at_ms`.
    pub early: usize,
    /// Latency percentiles (ms of event time; early alerts count as 0).
    pub latency_p50_ms: Option<i64>,
    /// 99th percentile latency.
    pub latency_p99_ms: Option<i64>,
}

impl Row {
    /// A row named `name` with nothing counted yet.
    fn empty(name: &str) -> Row {
        Row {
            name: name.into(),
            labelled: 0,
            detected: 0,
            alerts: 0,
            true_positives: 0,
            early: 0,
            latency_p50_ms: None,
            latency_p99_ms: None,
        }
    }

    /// True positives / alerts (1 when there are no alerts).
    pub fn precision(&self) -> f64 {
        if self.alerts == 0 {
            1.0
        } else {
            self.true_positives as f64 / self.alerts as f64
        }
    }

    /// Detected / labelled (1 when nothing was labelled).
    pub fn recall(&self) -> f64 {
        if self.labelled == 0 {
            1.0
        } else {
            self.detected as f64 / self.labelled as f64
        }
    }
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[i64], q: f64) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

/// The injected mix: `per_type` of each original scenario, `hard_per_type` of each harder variant
/// (card-testing rings: a fifth as many, since each is 8 to 12 labelled accounts) and
/// `legit_per_type` of each legitimate-but-odd pattern.
pub fn scenario_mix(per_type: u32, hard_per_type: u32, legit_per_type: u32) -> ScenarioConfig {
    ScenarioConfig {
        crawler_bots: per_type,
        card_testing: per_type,
        account_takeovers: per_type,
        cart_stuffing: per_type,
        jittered_crawlers: hard_per_type,
        slow_card_testing: hard_per_type,
        card_testing_rings: hard_per_type.div_ceil(5),
        local_takeovers: hard_per_type,
        slow_cart_stuffing: hard_per_type,
        bulk_buyers: legit_per_type,
        fast_repeat_buyers: legit_per_type,
        new_devices: legit_per_type,
    }
}

/// Every scenario kind, in table order.
const ALL_KINDS: [ScenarioKind; 9] = [
    ScenarioKind::CrawlerBot,
    ScenarioKind::CardTesting,
    ScenarioKind::AccountTakeover,
    ScenarioKind::CartStuffing,
    ScenarioKind::JitteredCrawler,
    ScenarioKind::SlowCardTesting,
    ScenarioKind::CardTestingRing,
    ScenarioKind::LocalTakeover,
    ScenarioKind::SlowCartStuffing,
];

fn legit_name(pattern: LegitPattern) -> &'static str {
    match pattern {
        LegitPattern::BulkBuyer => "bulk_buyer",
        LegitPattern::FastRepeatBuyer => "fast_repeat_buyer",
        LegitPattern::NewDevice => "new_device",
    }
}

/// False alarms on one legitimate-but-odd pattern.
#[derive(Debug, Clone, PartialEq)]
pub struct LegitRow {
    /// The pattern's name.
    pub name: String,
    /// Injected sessions.
    pub sessions: usize,
    /// Sessions with at least one alert on their user within the session.
    pub alerted: usize,
    /// Those alerts by type (distinct alert ids).
    pub alerts_by_type: BTreeMap<String, usize>,
}

/// Alerts on each legitimate pattern's sessions: an alert of the session's user whose first
/// emission falls within the session.
pub fn legit_rows(labels: &[LegitLabel], alerts: &[AlertRecord]) -> Vec<LegitRow> {
    let mut rows: BTreeMap<LegitPattern, LegitRow> = BTreeMap::new();
    for l in labels {
        let row = rows.entry(l.pattern).or_insert_with(|| LegitRow {
            name: legit_name(l.pattern).into(),
            sessions: 0,
            alerted: 0,
            alerts_by_type: BTreeMap::new(),
        });
        row.sessions += 1;
        let mut ids = HashSet::new();
        for a in alerts.iter().filter(|a| {
            a.user_id == l.user_id && (l.start_time..=l.end_time).contains(&a.window_end)
        }) {
            if ids.insert(a.alert_id.as_str()) {
                *row.alerts_by_type
                    .entry(alert_type_symbol(a.alert_type).to_string())
                    .or_default() += 1;
            }
        }
        row.alerted += usize::from(!ids.is_empty());
    }
    rows.into_values().collect()
}

fn scenario_name(kind: ScenarioKind) -> &'static str {
    match kind {
        ScenarioKind::LocalTakeover => "local_takeover",
        ScenarioKind::SlowCartStuffing => "slow_cart_stuffing",
        ScenarioKind::CrawlerBot => "crawler_bot",
        ScenarioKind::JitteredCrawler => "jittered_crawler",
        ScenarioKind::SlowCardTesting => "slow_card_testing",
        ScenarioKind::CardTestingRing => "card_testing_ring",
        ScenarioKind::CardTesting => "card_testing",
        ScenarioKind::AccountTakeover => "account_takeover",
        ScenarioKind::CartStuffing => "cart_stuffing",
    }
}

/// Scores alerts against labels: one row per scenario type, one per other alert type that
/// fired, then `overall`.
pub fn score(labels: &[AnomalyLabel], alerts: &[AlertRecord]) -> Vec<Row> {
    // (user, alert type) -> the labels it may match, by start time. A user can carry two labels of
    // one alert type (a victim taken over twice, once from abroad and once locally): an alert
    // belongs to the latest of them that had started by its window's end, so each takeover needs
    // an alert of its own and a true positive counts for the kind of the label it matched.
    let mut wanted: HashMap<(&str, AlertType), Vec<usize>> = HashMap::new();
    for (i, l) in labels.iter().enumerate() {
        wanted
            .entry((l.user_id.as_str(), l.scenario.alert_type()))
            .or_default()
            .push(i);
    }
    for candidates in wanted.values_mut() {
        candidates.sort_by_key(|&i| labels[i].start_time);
    }
    // No label yet at the alert's window end: the scenario had not begun, so it cannot be the cause.
    let label_of = |key: (&str, AlertType), window_end: i64| -> Option<usize> {
        let candidates = wanted.get(&key)?;
        let started = candidates.partition_point(|&i| labels[i].start_time <= window_end);
        started.checked_sub(1).map(|at| candidates[at])
    };
    // ANOMALY_SCORE names no pattern: on any labelled user it is a true positive.
    let labelled_users: HashSet<&str> = labels.iter().map(|l| l.user_id.as_str()).collect();
    let mut anomaly = Row::empty("anomaly_score (any scenario)");
    let mut anomaly_users: HashSet<&str> = HashSet::new();
    // The first alert (or escalation) matched to each label, in emission order.
    let mut first: HashMap<usize, i64> = HashMap::new();
    let mut seen_ids: HashSet<&str> = HashSet::new();
    let mut tp_by_kind: BTreeMap<ScenarioKind, usize> = BTreeMap::new();
    let mut fp_by_type: BTreeMap<AlertType, usize> = BTreeMap::new();
    // The label an alert matched at its first emission: its escalations count for that one only.
    let mut matched: HashMap<&str, Option<usize>> = HashMap::new();
    for a in alerts {
        let new_id = seen_ids.insert(a.alert_id.as_str());
        let key = (a.user_id.as_str(), a.alert_type);
        if a.alert_type == AlertType::AnomalyScore {
            if new_id {
                anomaly.alerts += 1;
                if labelled_users.contains(a.user_id.as_str()) {
                    anomaly.true_positives += 1;
                    anomaly_users.insert(a.user_id.as_str());
                }
            }
            continue;
        }
        let label = *matched
            .entry(a.alert_id.as_str())
            .or_insert_with(|| label_of(key, a.window_end));
        match label {
            Some(i) => {
                first.entry(i).or_insert(a.window_end);
                if new_id {
                    *tp_by_kind.entry(labels[i].scenario).or_default() += 1;
                }
            }
            None if new_id => *fp_by_type.entry(a.alert_type).or_default() += 1,
            None => {}
        }
    }
    let kinds: Vec<ScenarioKind> = {
        let mut k: Vec<_> = labels.iter().map(|l| l.scenario).collect();
        k.sort();
        k.dedup();
        k
    };
    let mut rows = Vec::new();
    let mut all_latencies = Vec::new();
    let mut overall = Row::empty("overall");
    for kind in &kinds {
        let t = kind.alert_type();
        let mut latencies = Vec::new();
        let mut early = 0;
        let mut labelled = 0;
        for (i, l) in labels
            .iter()
            .enumerate()
            .filter(|(_, l)| l.scenario == *kind)
        {
            labelled += 1;
            if let Some(&end) = first.get(&i) {
                let lat = end - l.detectable_at_ms;
                early += usize::from(lat < 0);
                latencies.push(lat.max(0));
            }
        }
        latencies.sort_unstable();
        let tp = tp_by_kind.get(kind).copied().unwrap_or(0);
        let n_alerts = tp + fp_by_type.get(&t).copied().unwrap_or(0);
        let row = Row {
            name: scenario_name(*kind).into(),
            labelled,
            detected: latencies.len(),
            alerts: n_alerts,
            true_positives: tp,
            early,
            latency_p50_ms: percentile(&latencies, 0.5),
            latency_p99_ms: percentile(&latencies, 0.99),
        };
        overall.labelled += row.labelled;
        overall.detected += row.detected;
        overall.alerts += row.true_positives;
        overall.true_positives += row.true_positives;
        overall.early += row.early;
        all_latencies.extend(latencies);
        rows.push(row);
    }
    // False positives count once overall; types no scenario has get a row of their own.
    for (t, fp) in fp_by_type {
        overall.alerts += fp;
        if kinds.iter().any(|k| k.alert_type() == t) {
            continue;
        }
        rows.push(Row {
            alerts: fp,
            ..Row::empty(&format!(
                "{} (no scenario)",
                alert_type_symbol(t).to_lowercase()
            ))
        });
    }
    if anomaly.alerts > 0 {
        anomaly.detected = anomaly_users.len();
        overall.alerts += anomaly.alerts;
        overall.true_positives += anomaly.true_positives;
        rows.push(anomaly);
    }
    all_latencies.sort_unstable();
    overall.latency_p50_ms = percentile(&all_latencies, 0.5);
    overall.latency_p99_ms = percentile(&all_latencies, 0.99);
    rows.push(overall);
    rows
}

/// Area under the ROC curve of `pos` against `neg` scores (ties count one half).
pub fn auroc(pos: &[f64], neg: &[f64]) -> Option<f64> {
    if pos.is_empty() || neg.is_empty() {
        return None;
    }
    let mut all: Vec<(f64, bool)> = pos
        .iter()
        .map(|&s| (s, true))
        .chain(neg.iter().map(|&s| (s, false)))
        .collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    // Mann-Whitney U with average ranks for ties.
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < all.len() {
        let mut j = i;
        while j < all.len() && all[j].0 == all[i].0 {
            j += 1;
        }
        let avg = (i + j + 1) as f64 / 2.0;
        rank_sum += avg * all[i..j].iter().filter(|x| x.1).count() as f64;
        i = j;
    }
    let (p, n) = (pos.len() as f64, neg.len() as f64);
    Some((rank_sum - p * (p + 1.0) / 2.0) / (p * n))
}

/// A user's Half-Space Trees scores.
#[derive(Debug, Default, Clone, Copy)]
struct UserScore {
    max: f64,
    sum: f64,
    n: u64,
}

impl UserScore {
    fn mean(&self) -> f64 {
        if self.n == 0 {
            0.0
        } else {
            self.sum / self.n as f64
        }
    }
}

/// Per scenario type: labelled scenarios whose user got a `MODEL_SURPRISE` alert.
fn surprise_coverage(
    labels: &[AnomalyLabel],
    alerts: &[AlertRecord],
) -> Vec<(String, usize, usize)> {
    let flagged: HashSet<&str> = alerts
        .iter()
        .filter(|a| a.alert_type == AlertType::ModelSurprise)
        .map(|a| a.user_id.as_str())
        .collect();
    let mut out: BTreeMap<ScenarioKind, (usize, usize)> = BTreeMap::new();
    for l in labels {
        let e = out.entry(l.scenario).or_default();
        e.0 += 1;
        e.1 += usize::from(flagged.contains(l.user_id.as_str()));
    }
    out.into_iter()
        .map(|(k, (n, f))| (scenario_name(k).to_string(), n, f))
        .collect()
}

/// The evaluation's result.
#[derive(Debug, Clone)]
pub struct EvalReport {
    /// The options it ran with.
    pub options: EvalOptions,
    /// Clean events fed to the detector.
    pub events: u64,
    /// Records dropped by cleaning (duplicates, invalid) or malformed.
    pub dropped: u64,
    /// Distinct users seen.
    pub users: usize,
    /// Result rows (see [`score`]).
    pub rows: Vec<Row>,
    /// False alarms on the legitimate-but-odd sessions, per pattern.
    pub legit: Vec<LegitRow>,
    /// Per scenario type: AUROC of users' highest and of their mean Half-Space Trees score,
    /// scenario users against ordinary users.
    pub hst_auroc: Vec<(String, Option<f64>, Option<f64>)>,
    /// Per scenario type: (name, labelled, users with a `MODEL_SURPRISE` alert); empty when
    /// model surprise was off.
    pub surprise_coverage: Vec<(String, usize, usize)>,
    /// Findings merged into open alerts without re-emission.
    pub suppressed: u64,
    /// Escalations (re-emissions with a higher severity).
    pub escalated: u64,
    /// Findings the false-alarm budget held back (they opened no alert), per alert type.
    pub over_budget: Vec<(String, u64)>,
    /// Wall-clock seconds of the run (generation included).
    pub wall_s: f64,
}

/// Runs the evaluation.
pub fn evaluate(opts: &EvalOptions) -> anyhow::Result<EvalReport> {
    let started = std::time::Instant::now();
    let n = opts.per_type;
    let gen_cfg = GeneratorConfig {
        seed: opts.seed,
        sessions: opts.sessions,
        // About five sessions per user: enough history for takeover victims.
        users: u32::try_from((opts.sessions / 5).max(50)).unwrap_or(u32::MAX),
        scenarios: scenario_mix(n, opts.hard_per_type, opts.legit_per_type),
        ..GeneratorConfig::default()
    };
    let mut generator = Generator::new(gen_cfg).context("generator configuration")?;
    let validation = &opts.validation;
    let mut dedupe = Deduper::new(opts.dedupe_window_ms, opts.dedupe_max_ids);
    let mut detector = Detector::new(opts.rules.clone(), "evaluate-detector");
    let mut scoring = opts.model_surprise.as_ref().map(|m| {
        (
            FeatureWindower::new(m.windower.clone()),
            Scorer::new(m.model.clone(), &m.scorer, ""),
        )
    });
    let mut alerts = Vec::new();
    let mut user_scores: HashMap<String, UserScore> = HashMap::new();
    let (mut events, mut dropped, mut now) = (0u64, 0u64, i64::MIN);
    for g in generator.by_ref() {
        let Generated::Event(mut ev) = g else {
            dropped += 1;
            continue;
        };
        now = now.max(ev.event_time);
        if validate_and_normalise(&mut ev, validation, now).is_err()
            || dedupe.is_duplicate(&ev.event_id, ev.event_time)
        {
            dropped += 1;
            continue;
        }
        events += 1;
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
        let s = detector.last_anomaly_score();
        let m = user_scores.entry(ev.user_id).or_default();
        m.max = m.max.max(s);
        m.sum += s;
        m.n += 1;
    }
    let (mut labels, mut legit_labels) = (Vec::new(), Vec::new());
    for t in generator.take_truth() {
        match t {
            TruthRecord::Anomaly(l) => labels.push(l),
            TruthRecord::Legit(l) => legit_labels.push(l),
            _ => {}
        }
    }
    let rows = score(&labels, &alerts);
    let legit = legit_rows(&legit_labels, &alerts);
    let surprise_coverage = if opts.model_surprise.is_some() {
        surprise_coverage(&labels, &alerts)
    } else {
        Vec::new()
    };
    let labelled_users: HashSet<&str> = labels.iter().map(|l| l.user_id.as_str()).collect();
    let normal: Vec<&UserScore> = user_scores
        .iter()
        .filter(|(u, _)| !labelled_users.contains(u.as_str()))
        .map(|(_, s)| s)
        .collect();
    let normal_max: Vec<f64> = normal.iter().map(|s| s.max).collect();
    let normal_mean: Vec<f64> = normal.iter().map(|s| s.mean()).collect();
    let mut hst_auroc = Vec::new();
    for kind in ALL_KINDS {
        let pos: Vec<&UserScore> = labels
            .iter()
            .filter(|l| l.scenario == kind)
            .filter_map(|l| user_scores.get(&l.user_id))
            .collect();
        let pos_max: Vec<f64> = pos.iter().map(|s| s.max).collect();
        let pos_mean: Vec<f64> = pos.iter().map(|s| s.mean()).collect();
        hst_auroc.push((
            scenario_name(kind).to_string(),
            auroc(&pos_max, &normal_max),
            auroc(&pos_mean, &normal_mean),
        ));
    }
    Ok(EvalReport {
        options: opts.clone(),
        events,
        dropped,
        users: user_scores.len(),
        rows,
        legit,
        hst_auroc,
        surprise_coverage,
        suppressed: detector.suppressed(),
        escalated: detector.escalated(),
        over_budget: detector
            .over_budget()
            .into_iter()
            .map(|(t, n)| (alert_type_symbol(t).to_string(), n))
            .collect(),
        wall_s: started.elapsed().as_secs_f64(),
    })
}

pub(crate) fn ms(x: Option<i64>) -> String {
    x.map_or("-".into(), |v| v.to_string())
}

/// The report as Markdown tables.
pub fn render(r: &EvalReport) -> String {
    let mut s = String::new();
    let o = &r.options;
    let _ = writeln!(
        s,
        "{} ordinary sessions, {} of each scenario, {} of each harder variant and {} of each \
         legitimate-but-odd pattern, seed {}: {} clean events from {} users ({} records dropped \
         by cleaning), {:.1} s{}.\n",
        o.sessions,
        o.per_type,
        o.hard_per_type,
        o.legit_per_type,
        o.seed,
        r.events,
        r.users,
        r.dropped,
        r.wall_s,
        if o.model_surprise.is_some() {
            "; predictions from the scorer fed to the detector (model surprise on)"
        } else {
            ""
        }
    );
    let _ = writeln!(
        s,
        "| type | labelled | detected | alerts | true pos. | precision | recall | early | latency p50 ms | latency p99 ms |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for row in &r.rows {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {:.3} | {:.3} | {} | {} | {} |",
            row.name,
            row.labelled,
            row.detected,
            row.alerts,
            row.true_positives,
            row.precision(),
            row.recall(),
            row.early,
            ms(row.latency_p50_ms),
            ms(row.latency_p99_ms)
        );
    }
    let _ = writeln!(
        s,
        "\nAlert updates: {} escalations re-emitted, {} findings merged silently; held back by the \
         false-alarm budget: {}.\n",
        r.escalated,
        r.suppressed,
        if r.over_budget.is_empty() {
            "none".to_string()
        } else {
            r.over_budget
                .iter()
                .map(|(t, n)| format!("{t} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    if !r.legit.is_empty() {
        let _ = writeln!(
            s,
            "Legitimate-but-odd sessions (every alert on them is a false alarm, already counted above):\n"
        );
        let _ = writeln!(
            s,
            "| pattern | sessions | alerted | alerts |\n|---|---:|---:|---|"
        );
        for row in &r.legit {
            let by: Vec<String> = row
                .alerts_by_type
                .iter()
                .map(|(t, n)| format!("{t} {n}"))
                .collect();
            let by = if by.is_empty() {
                "-".into()
            } else {
                by.join(", ")
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {by} |",
                row.name, row.sessions, row.alerted
            );
        }
        let _ = writeln!(s);
    }
    let _ = writeln!(
        s,
        "Half-Space Trees alone (AUROC of each user's highest and mean event score, scenario users against ordinary users):\n"
    );
    let _ = writeln!(
        s,
        "| scenario | AUROC (max) | AUROC (mean) |\n|---|---:|---:|"
    );
    let f = |a: &Option<f64>| a.map_or("-".into(), |v| format!("{v:.3}"));
    for (name, max, mean) in &r.hst_auroc {
        let _ = writeln!(s, "| {name} | {} | {} |", f(max), f(mean));
    }
    if !r.surprise_coverage.is_empty() {
        let _ = writeln!(
            s,
            "\nModel surprise (scenario users with a MODEL_SURPRISE alert; its false positives are in the table above):\n"
        );
        let _ = writeln!(s, "| scenario | labelled | flagged |\n|---|---:|---:|");
        for (name, n, flagged) in &r.surprise_coverage {
            let _ = writeln!(s, "| {name} | {n} | {flagged} |");
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label(kind: ScenarioKind, user: &str, detectable: i64) -> AnomalyLabel {
        AnomalyLabel {
            scenario: kind,
            user_id: user.into(),
            event_ids: vec![],
            start_time: 0,
            end_time: detectable,
            detectable_at_ms: detectable,
        }
    }

    fn alert(id: &str, user: &str, t: AlertType, end: i64) -> AlertRecord {
        AlertRecord {
            alert_id: id.into(),
            user_id: user.into(),
            alert_type: t,
            window_end: end,
        }
    }

    #[test]
    fn metrics_on_a_hand_built_case() {
        let labels = [
            label(ScenarioKind::CardTesting, "a", 1_000),
            label(ScenarioKind::CardTesting, "b", 5_000),
            label(ScenarioKind::CardTesting, "c", 9_000),
            label(ScenarioKind::CrawlerBot, "d", 2_000),
        ];
        let alerts = [
            alert("a1", "a", AlertType::CardTesting, 1_500),
            // The escalation of a1 (same id, later window) is not a second alert.
            alert("a1", "a", AlertType::CardTesting, 9_999),
            alert("b1", "b", AlertType::CardTesting, 4_000), // early: counts as 0
            alert("n1", "normal", AlertType::CardTesting, 3_000), // false positive
            alert("d1", "d", AlertType::BotCadence, 2_250),
            alert("d2", "d", AlertType::Velocity, 2_100), // wrong type on a bot: FP
        ];
        let rows = score(&labels, &alerts);
        let by: HashMap<&str, &Row> = rows.iter().map(|r| (r.name.as_str(), r)).collect();
        let card = by["card_testing"];
        assert_eq!((card.labelled, card.detected), (3, 2));
        assert_eq!((card.alerts, card.true_positives, card.early), (3, 2, 1));
        assert!((card.precision() - 2.0 / 3.0).abs() < 1e-12);
        assert!((card.recall() - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(card.latency_p50_ms, Some(0));
        assert_eq!(card.latency_p99_ms, Some(500));
        let bot = by["crawler_bot"];
        assert_eq!((bot.precision(), bot.recall()), (1.0, 1.0));
        assert_eq!(bot.latency_p50_ms, Some(250));
        let vel = by["velocity (no scenario)"];
        assert_eq!((vel.alerts, vel.true_positives), (1, 0));
        let all = by["overall"];
        assert_eq!(
            (all.labelled, all.detected, all.alerts, all.true_positives),
            (4, 3, 5, 3)
        );
        assert_eq!(all.latency_p99_ms, Some(500));
    }

    #[test]
    fn a_victim_taken_over_twice_needs_an_alert_for_each_takeover() {
        let at = |kind, start: i64| AnomalyLabel {
            start_time: start,
            end_time: start + 1_000,
            detectable_at_ms: start + 500,
            ..label(kind, "v", 0)
        };
        let labels = [
            at(ScenarioKind::AccountTakeover, 10_000),
            at(ScenarioKind::LocalTakeover, 50_000),
        ];
        // Only the first takeover is alerted: the second is missed, even though the user has an
        // alert of its type.
        let one = [alert("v1", "v", AlertType::AccountTakeover, 10_700)];
        let rows = score(&labels, &one);
        let by: HashMap<&str, &Row> = rows.iter().map(|r| (r.name.as_str(), r)).collect();
        let (plain, local) = (by["account_takeover"], by["local_takeover"]);
        assert_eq!((plain.detected, plain.true_positives), (1, 1));
        assert_eq!(plain.latency_p50_ms, Some(200));
        assert_eq!((local.detected, local.true_positives), (0, 0));
        assert_eq!(local.recall(), 0.0);
        // With a second alert, each takeover is detected by its own, with its own latency.
        let two = [
            one[0].clone(),
            alert("v2", "v", AlertType::AccountTakeover, 50_900),
        ];
        let rows = score(&labels, &two);
        let by: HashMap<&str, &Row> = rows.iter().map(|r| (r.name.as_str(), r)).collect();
        let local = by["local_takeover"];
        assert_eq!((local.detected, local.true_positives), (1, 1));
        assert_eq!(local.latency_p50_ms, Some(400));
        assert_eq!(by["account_takeover"].true_positives, 1);
        // An escalation of the first alert after the second takeover began does not detect it; an
        // alert before any takeover began is a false positive.
        let escalated = [
            alert("v0", "v", AlertType::AccountTakeover, 5_000),
            one[0].clone(),
            alert("v1", "v", AlertType::AccountTakeover, 50_950),
        ];
        let rows = score(&labels, &escalated);
        let by: HashMap<&str, &Row> = rows.iter().map(|r| (r.name.as_str(), r)).collect();
        assert_eq!(by["local_takeover"].detected, 0);
        let plain = by["account_takeover"];
        assert_eq!(
            (plain.detected, plain.true_positives, plain.alerts),
            (1, 1, 2)
        );
    }

    #[test]
    fn legit_rows_count_alerts_within_the_session_only() {
        let legit = |pattern, user: &str, start, end| LegitLabel {
            pattern,
            user_id: user.into(),
            event_ids: vec![],
            start_time: start,
            end_time: end,
        };
        let labels = [
            legit(LegitPattern::BulkBuyer, "b", 1_000, 2_000),
            legit(LegitPattern::BulkBuyer, "c", 1_000, 2_000),
            legit(LegitPattern::NewDevice, "d", 5_000, 6_000),
        ];
        let alerts = [
            alert("b1", "b", AlertType::CartStuffing, 1_500),
            alert("b1", "b", AlertType::CartStuffing, 1_900), // its escalation
            alert("b2", "b", AlertType::Velocity, 1_600),
            alert("c1", "c", AlertType::CartStuffing, 9_000), // after the session
            alert("x1", "x", AlertType::AccountTakeover, 5_500), // another user
        ];
        let rows = legit_rows(&labels, &alerts);
        assert_eq!(rows.len(), 2);
        assert_eq!(
            (rows[0].name.as_str(), rows[0].sessions, rows[0].alerted),
            ("bulk_buyer", 2, 1)
        );
        assert_eq!(rows[0].alerts_by_type.get("CART_STUFFING"), Some(&1));
        assert_eq!(rows[0].alerts_by_type.get("VELOCITY"), Some(&1));
        assert_eq!((rows[1].name.as_str(), rows[1].alerted), ("new_device", 0));
    }

    #[test]
    fn auroc_matches_hand_computation() {
        assert_eq!(auroc(&[0.9, 0.8], &[0.1, 0.2]), Some(1.0));
        assert_eq!(auroc(&[0.1], &[0.9]), Some(0.0));
        // One tie between a positive and a negative: 0.5 of a pair out of 2.
        assert_eq!(auroc(&[0.5], &[0.5, 0.1]), Some(0.75));
        assert_eq!(auroc(&[], &[0.5]), None);
    }

    #[test]
    fn small_mix_runs_end_to_end() {
        let report = evaluate(&EvalOptions {
            sessions: 600,
            seed: 7,
            per_type: 2,
            hard_per_type: 1,
            legit_per_type: 1,
            ..EvalOptions::default()
        })
        .expect("evaluation runs");
        let overall = report.rows.last().expect("overall row");
        assert_eq!(overall.name, "overall");
        // Two of each of the four scenario types, one of each of the five harder variants, whose
        // ring has 8 to 12 labelled accounts.
        assert!(
            (20..=24).contains(&overall.labelled),
            "{} labelled",
            overall.labelled
        );
        assert!(report.events > 1_000);
        let text = render(&report);
        assert!(text.contains("| card_testing |"), "{text}");
        assert!(text.contains("| overall |"), "{text}");
        assert!(text.contains("| local_takeover |"), "{text}");
        assert_eq!(report.legit.len(), 3, "one row per legitimate pattern");
        assert!(
            report.legit.iter().all(|r| r.sessions == 1),
            "{:?}",
            report.legit
        );
        assert!(report.surprise_coverage.is_empty(), "model surprise is off");
    }

    #[test]
    fn model_surprise_runs_the_scorer_in_process() {
        let windower = FeatureSpec::default();
        let model = clickpath_stages::topology::builtin_model(&windower).expect("built-in model");
        let report = evaluate(&EvalOptions {
            sessions: 300,
            seed: 11,
            per_type: 1,
            hard_per_type: 0,
            legit_per_type: 0,
            model_surprise: Some(SurpriseSetup {
                model,
                windower,
                scorer: ScorerConfig::default(),
            }),
            ..EvalOptions::default()
        })
        .expect("evaluation runs");
        let labelled: usize = report.surprise_coverage.iter().map(|r| r.1).sum();
        assert_eq!(labelled, 4, "{:?}", report.surprise_coverage);
        assert!(render(&report).contains("model surprise on"));
    }
}
