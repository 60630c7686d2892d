//! The whole configuration of a clickpath process: the shared sections the runtime reads
//! ([`BusConfig`]: `[kafka]`, `[processing]`, `[topics]`, `[runtime]`, `[http]`) and each stage's
//! own section, loaded in layers (embedded defaults, a file, `CLICKPATH__*` variables) with every
//! problem reported at once (`clickpath_runtime::config`).

use crate::StageName;
use clickpath_core::analytics::{AnalyticsError, FunnelOrder, FunnelSpec, Step, Unit};
use clickpath_core::features::FeatureSpec;
use clickpath_core::rules::RulesConfig;
use clickpath_core::session::SessionConfig;
use clickpath_core::validate::ValidationConfig;
use clickpath_model::sequence::{DeviceFallback, ItemRanking, OnlineDevice};
use clickpath_runtime::RunnerEnv;
use clickpath_runtime::config::{
    BusConfig, ConfigError, layered_toml, layered_value, parse_collecting,
};
use clickpath_runtime::runner::Slowdown;
use clickpath_schema::codec::Codec;
use serde::{Deserialize, Deserializer, Serialize};
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};

/// The embedded defaults (`config/default.toml`).
pub const DEFAULTS_TOML: &str = include_str!("../../../config/default.toml");

/// Everything a clickpath process can be configured with.
///
/// The shared sections are top-level tables in the file, beside the stages' sections, so they are
/// reached the same way here: `cfg.kafka`, `cfg.topics` (through `Deref` to [`BusConfig`]) as well
/// as `cfg.scorer`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ClickpathConfig {
    /// `[kafka]`, `[processing]`, `[topics]`, `[runtime]` and `[http]`.
    #[serde(flatten)]
    pub bus: BusConfig,
    /// The cleaning stage.
    pub cleaning: CleaningConfig,
    /// The sessionizer stage.
    pub sessionizer: SessionConfig,
    /// The session outlook the sessionizer adds to each closed session (off by default).
    pub outlook: OutlookConfig,
    /// The feature windower stage.
    pub windower: FeatureSpec,
    /// The scorer stage.
    pub scorer: ScorerConfig,
    /// The anomaly detector stage.
    pub detector: RulesConfig,
    /// The analytics stage (funnel aggregates per time bucket and segment).
    pub analytics: AnalyticsConfig,
    /// How `clickpath run all` and the demo run the stages: chained in one consumer, or one
    /// consumer per stage.
    pub topology: TopologyConfig,
    /// Fault injection for reliability tests (off by default).
    pub faults: FaultsConfig,
}

impl Deref for ClickpathConfig {
    type Target = BusConfig;

    fn deref(&self) -> &BusConfig {
        &self.bus
    }
}

impl DerefMut for ClickpathConfig {
    fn deref_mut(&mut self) -> &mut BusConfig {
        &mut self.bus
    }
}

/// The stages' sections, parsed apart from the shared ones so that both keep their key paths in errors.
#[derive(Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct StageSections {
    cleaning: CleaningConfig,
    sessionizer: SessionConfig,
    outlook: OutlookConfig,
    windower: FeatureSpec,
    scorer: ScorerConfig,
    detector: RulesConfig,
    analytics: AnalyticsConfig,
    topology: TopologyConfig,
    faults: FaultsConfig,
}

impl StageSections {
    fn with_bus(self, bus: BusConfig) -> ClickpathConfig {
        ClickpathConfig {
            bus,
            cleaning: self.cleaning,
            sessionizer: self.sessionizer,
            outlook: self.outlook,
            windower: self.windower,
            scorer: self.scorer,
            detector: self.detector,
            analytics: self.analytics,
            topology: self.topology,
            faults: self.faults,
        }
    }
}

/// `[outlook]`: the session outlook model (return propensity and segment at each session's end).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutlookConfig {
    /// Directory of an artifact from `clickpath train --model outlook`; absent (or empty): sessions are
    /// published without an outlook. Read at start-up (a new artifact needs a restart).
    #[serde(deserialize_with = "empty_as_none")]
    pub model_dir: Option<PathBuf>,
}

/// A path that older configurations wrote as `""` for "none".
fn empty_as_none<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    let s = Option::<String>::deserialize(d)?;
    Ok(s.filter(|s| !s.trim().is_empty()).map(PathBuf::from))
}

/// How the stages run together (`[topology]`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TopologyConfig {
    /// `chained` (the default): one consumer of the raw topic runs every stage in process, per
    /// partition, passing typed records between them and committing every output, changelog and
    /// input offset together. `per-stage`: each stage is its own consumer of the previous stage's
    /// topic, so stages scale apart (the scorer alone on GPU nodes, say).
    pub mode: TopologyMode,
    /// Chained mode: also produce the clean events topic (`topics.clean`) for other readers.
    pub produce_clean: bool,
    /// Chained mode: also produce the feature vectors topic (`topics.features`).
    pub produce_features: bool,
}

/// See [`TopologyConfig::mode`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TopologyMode {
    /// Every stage in one consumer of the raw topic.
    #[default]
    Chained,
    /// One consumer per stage.
    PerStage,
}

/// Fault injection, for the reliability suite: a stage made artificially slow for a while. Off by default.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultsConfig {
    /// The stage to slow down (`scorer`, ..., or `chain` for the chained topology); empty: none.
    pub slow_stage: String,
    /// How much slower: after each batch the stage sleeps `(slow_factor - 1)` times the batch's processing
    /// time, so 10 makes it ten times slower.
    pub slow_factor: f64,
    /// For how long after the stage's first input (ms); 0: as long as it runs.
    pub slow_for_ms: u64,
}

impl Default for FaultsConfig {
    fn default() -> Self {
        FaultsConfig {
            slow_stage: String::new(),
            slow_factor: 1.0,
            slow_for_ms: 0,
        }
    }
}

impl FaultsConfig {
    /// The slowdown the run loop applies, if a stage is named.
    pub fn slowdown(&self) -> Option<Slowdown> {
        (!self.slow_stage.is_empty()).then(|| Slowdown {
            stage: self.slow_stage.clone(),
            factor: self.slow_factor,
            for_ms: self.slow_for_ms,
        })
    }

    fn problems(&self, p: &mut Vec<String>) {
        let chain = self.slow_stage == crate::chain::CHAIN;
        if !self.slow_stage.is_empty() && !chain && StageName::parse(&self.slow_stage).is_none() {
            let mut names: Vec<&str> = StageName::ALL.iter().map(|s| s.as_str()).collect();
            names.push(crate::chain::CHAIN);
            p.push(format!(
                "faults.slow_stage: unknown stage {:?} (one of {})",
                self.slow_stage,
                names.join(", ")
            ));
        }
        if !(self.slow_factor.is_finite() && self.slow_factor >= 1.0) {
            p.push(format!(
                "faults.slow_factor: must be a number >= 1, got {}",
                self.slow_factor
            ));
        }
    }
}

/// The cleaning stage.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CleaningConfig {
    /// Field and time checks.
    pub validation: ValidationConfig,
    /// How long an event id is remembered for de-duplication (ms of event time).
    pub dedupe_window_ms: i64,
    /// The most event ids remembered at once (bounds memory).
    pub dedupe_max_ids: usize,
}

impl Default for CleaningConfig {
    fn default() -> Self {
        CleaningConfig {
            validation: ValidationConfig::default(),
            dedupe_window_ms: 3_600_000,
            dedupe_max_ids: 1_000_000,
        }
    }
}

/// The scorer stage.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScorerConfig {
    /// Directory of a model artifact from `clickpath train`; absent (or empty) means the built-in
    /// baseline.
    #[serde(deserialize_with = "empty_as_none")]
    pub model_dir: Option<PathBuf>,
    /// How many next actions each prediction lists.
    pub top_k: usize,
    /// How many decision factors each prediction lists.
    pub factors: usize,
    /// Sequence models: decision factors (occlusion) for every Nth prediction; 0 for none.
    pub explain_every: u64,
    /// Sequence models: steps of the greedy predicted path (0: none).
    pub path_steps: usize,
    /// Sequence models with an item head: items recommended per prediction (0: none).
    pub recommend_items: usize,
    /// Sequence models with a category head: categories recommended per prediction, never the
    /// category on screen or the session's last (0: none).
    pub recommend_categories: usize,
    /// Sequence models with an item head: how many of a user's most recent purchased items are
    /// remembered (in the scorer's changelog) and never recommended to them again (0: none).
    pub recommend_exclude_bought: usize,
    /// Sequence models with an item head, on the CPU: `exact` (every item scored, the default) or
    /// `graph` (a graph index over the item head, built at load when the vocabulary has 4,096 items
    /// or more: on a 3,819-item model it kept 87 % of the exact top 20 scoring 31 % of the items
    /// with `item_index_ef = 64`, 97 % with 128; docs/models.md). GPU backends rank exactly.
    pub item_index: ItemRanking,
    /// With `item_index = "graph"`: items kept while searching; more keeps more of the exact list
    /// and costs more.
    pub item_index_ef: usize,
    /// Sequence models: most events per model call (micro-batch across users).
    pub max_batch: usize,
    /// Longest wait (µs) for more input after the first record of a batch, to fill micro-batches.
    pub max_wait_us: u64,
    /// `cpu` (Burn flex) or `cuda` (a build with the `cuda` feature and an NVIDIA GPU).
    pub device: OnlineDevice,
    /// With `device = "cuda"` and no usable GPU: `fail` (refuse to start, the default) or `cpu`
    /// (score on the CPU, warn, and set `clickpath_model_device_fallback` to 1).
    pub device_fallback: DeviceFallback,
    /// How often `model_dir` is checked for a new artifact to hot-swap (ms); 0 turns it off.
    pub reload_interval_ms: u64,
    /// Optional shadow sequence model scored beside the live one; absent (or empty) for none.
    #[serde(deserialize_with = "empty_as_none")]
    pub shadow_model_dir: Option<PathBuf>,
}

impl Default for ScorerConfig {
    fn default() -> Self {
        ScorerConfig {
            model_dir: None,
            top_k: 3,
            factors: 3,
            explain_every: 10,
            path_steps: 3,
            recommend_items: 10,
            recommend_categories: 3,
            recommend_exclude_bought: 16,
            item_index: ItemRanking::Exact,
            item_index_ef: 64,
            max_batch: 256,
            max_wait_us: 2_000,
            device: OnlineDevice::Cpu,
            device_fallback: DeviceFallback::Fail,
            reload_interval_ms: 5_000,
            shadow_model_dir: None,
        }
    }
}

/// The analytics stage: which funnel it counts and how often it publishes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AnalyticsConfig {
    /// Funnel steps in order; each is `EVENT_TYPE[|EVENT_TYPE...]` (`|` joins event types into one step).
    pub steps: Vec<String>,
    /// `ordered` (other events may come between steps), `strict` (none may) or `any_order`.
    pub order: FunnelOrder,
    /// Count `user`s or `session`s (`session_id`, else the user).
    pub unit: Unit,
    /// Conversion window from an attempt's first step (ms).
    pub window_ms: i64,
    /// Width of the time buckets, aligned to the Unix epoch (ms).
    pub bucket_ms: i64,
    /// How far event time may run behind the newest event seen before a bucket closes (ms).
    pub lateness_ms: i64,
    /// How often (ms of wall time) the tick also looks for closed buckets; a bucket is published
    /// as soon as the event that closes it is processed.
    pub publish_interval_ms: u64,
    /// Most events buffered per unit; the oldest go first (bounds memory).
    pub max_events_per_unit: usize,
}

impl Default for AnalyticsConfig {
    fn default() -> Self {
        AnalyticsConfig {
            steps: vec![
                "PRODUCT_VIEW".into(),
                "ADD_TO_CART".into(),
                "PURCHASE".into(),
            ],
            order: FunnelOrder::Ordered,
            unit: Unit::User,
            window_ms: 3_600_000,
            bucket_ms: 3_600_000,
            lateness_ms: 300_000,
            publish_interval_ms: 10_000,
            max_events_per_unit: 1000,
        }
    }
}

impl AnalyticsConfig {
    /// The validated funnel these settings describe.
    pub fn funnel_spec(&self) -> Result<FunnelSpec, String> {
        let steps = self
            .steps
            .iter()
            .map(|s| Step::parse(s))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("analytics.steps: {e}"))?;
        FunnelSpec::new(steps, self.order, self.window_ms, self.unit, self.bucket_ms).map_err(|e| {
            let key = match e {
                AnalyticsError::NotPositive(w) if w.contains("window") => "window_ms",
                AnalyticsError::NotPositive(_) => "bucket_ms",
                _ => "steps",
            };
            format!("analytics.{key}: {e}")
        })
    }

    fn problems(&self, p: &mut Vec<String>) {
        if let Err(e) = self.funnel_spec() {
            p.push(e);
        }
        // FunnelSpec::new stops at the first bad duration; report both.
        if self.window_ms <= 0 && self.bucket_ms <= 0 {
            p.push(format!(
                "analytics.bucket_ms: must be > 0, got {}",
                self.bucket_ms
            ));
        }
        if self.lateness_ms < 0 {
            p.push(format!(
                "analytics.lateness_ms: must be >= 0, got {}",
                self.lateness_ms
            ));
        }
        if self.publish_interval_ms == 0 {
            p.push("analytics.publish_interval_ms: must be >= 1".to_string());
        }
        if self.max_events_per_unit == 0 {
            p.push("analytics.max_events_per_unit: must be >= 1".to_string());
        }
    }
}

impl ClickpathConfig {
    /// Loads defaults, then `file` (if any), then `CLICKPATH__*` variables from the process environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_with_env(file, std::env::vars())
    }

    /// Like [`ClickpathConfig::load`], with the environment given explicitly (for tests).
    pub fn load_with_env(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        Self::from_value(layered_value(DEFAULTS_TOML, file, env)?)
    }

    /// Parses a TOML document layered on the defaults (no environment).
    pub fn from_toml_str(toml_text: &str) -> Result<Self, ConfigError> {
        Self::from_value(layered_toml(DEFAULTS_TOML, toml_text)?)
    }

    /// The shared sections are parsed as the runtime's [`BusConfig`], the rest as the stages'
    /// sections; unknown keys and wrong types of both are reported together, with their key paths.
    fn from_value(value: serde_json::Value) -> Result<Self, ConfigError> {
        let serde_json::Value::Object(mut all) = value else {
            return Err(ConfigError {
                problems: vec!["the configuration is not a table of sections".into()],
            });
        };
        let bus: serde_json::Map<_, _> = BusConfig::SECTIONS
            .iter()
            .filter_map(|s| all.remove_entry(*s))
            .collect();
        // Every problem at once: unknown keys and wrong values of both parts, then the semantic
        // checks of everything that did parse (wrong values stand in as their defaults there).
        let (bus, mut problems) = parse_collecting::<BusConfig>(bus.into());
        let (sections, more) = parse_collecting::<StageSections>(all.into());
        problems.extend(more);
        let (Some(bus), Some(sections)) = (bus, sections) else {
            return Err(ConfigError { problems });
        };
        let cfg = sections.with_bus(bus);
        if let Err(semantic) = cfg.check() {
            problems.extend(semantic.problems);
        }
        ConfigError::check(problems)?;
        Ok(cfg)
    }

    /// Semantic checks, all at once.
    pub fn check(&self) -> Result<(), ConfigError> {
        let mut p = Vec::new();
        self.bus.problems(&mut p);
        self.faults.problems(&mut p);
        if self.cleaning.dedupe_window_ms <= 0 {
            p.push("cleaning.dedupe_window_ms: must be > 0".to_string());
        }
        if self.cleaning.dedupe_max_ids == 0 {
            p.push("cleaning.dedupe_max_ids: must be >= 1".to_string());
        }
        if self.sessionizer.gap_ms <= 0 {
            p.push(format!(
                "sessionizer.gap_ms: must be > 0, got {}",
                self.sessionizer.gap_ms
            ));
        }
        if self.sessionizer.max_session_ms < self.sessionizer.gap_ms {
            p.push(format!(
                "sessionizer.max_session_ms: must be >= gap_ms ({} < {})",
                self.sessionizer.max_session_ms, self.sessionizer.gap_ms
            ));
        }
        if self.sessionizer.max_out_of_orderness_ms < 0 {
            p.push("sessionizer.max_out_of_orderness_ms: must be >= 0".to_string());
        }
        if self.windower.windows_ms.is_empty() || self.windower.windows_ms.iter().any(|w| *w <= 0) {
            p.push("windower.windows_ms: needs at least one window, each > 0 ms".to_string());
        }
        if self.scorer.top_k == 0 || self.scorer.top_k > clickpath_schema::EventType::COUNT {
            p.push(format!(
                "scorer.top_k: must be between 1 and {}, got {}",
                clickpath_schema::EventType::COUNT,
                self.scorer.top_k
            ));
        }
        if self.scorer.recommend_exclude_bought > 255 {
            p.push(format!(
                "scorer.recommend_exclude_bought: at most 255 bought items are remembered per user, got {}",
                self.scorer.recommend_exclude_bought
            ));
        }
        let d = &self.detector;
        if !(0.0..=1.0).contains(&d.sequence_min_coverage) {
            p.push(format!(
                "detector.sequence_min_coverage: must be between 0 and 1, got {}",
                d.sequence_min_coverage
            ));
        }
        if d.grammar_half_life_events.is_nan() || d.grammar_half_life_events < 1.0 {
            p.push("detector.grammar_half_life_events: must be >= 1".to_string());
        }
        if d.alert_budget_per_10k_users_hour.is_nan() || d.alert_budget_per_10k_users_hour < 0.0 {
            p.push("detector.alert_budget_per_10k_users_hour: must be >= 0".to_string());
        }
        for (name, ratio) in [
            ("takeover_local_value_ratio", d.takeover_local_value_ratio),
            (
                "takeover_local_focused_ratio",
                d.takeover_local_focused_ratio,
            ),
        ] {
            if !ratio.is_finite() || ratio < 0.0 {
                p.push(format!(
                    "detector.{name}: must be a number >= 0, got {ratio}"
                ));
            }
        }
        let q = d.takeover_stream_order_quantile;
        if !(0.0..1.0).contains(&q) {
            p.push(format!(
                "detector.takeover_stream_order_quantile: must be at least 0 (off) and below 1, got {q}"
            ));
        }
        if self.scorer.item_index == ItemRanking::Graph && self.scorer.item_index_ef == 0 {
            p.push("scorer.item_index_ef: must be at least 1 with item_index = \"graph\"".into());
        }
        if self.scorer.max_batch == 0 {
            p.push("scorer.max_batch: must be at least 1".into());
        }
        self.analytics.problems(&mut p);
        ConfigError::check(p)
    }

    /// The environment the stages of this process run in: the shared settings, `codec`, fresh
    /// metrics and health, and the `[faults]` slowdown if one is set.
    pub fn runner_env(&self, codec: Codec) -> RunnerEnv {
        let mut env = RunnerEnv::new(self.bus.clone(), codec);
        env.slowdown = self.faults.slowdown();
        env
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clickpath_schema::codec::Codec;

    #[test]
    fn defaults_load_and_pass_checks() {
        let cfg = ClickpathConfig::load_with_env(None, Vec::new()).expect("defaults are valid");
        assert_eq!(cfg.topics.raw, "clickpath.clicks.raw");
        assert_eq!(cfg.runtime.max_batch, 1000);
    }

    #[test]
    /// The runtime's loader is tested on the bus sections alone; this is the whole file: bus keys
    /// through the flattened `bus`, and a stage's own section, each from the file or the environment.
    fn environment_overrides_file_and_defaults_in_bus_and_stage_sections() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[kafka]\nbrokers = \"file:1\"\n[topics]\npartitions = 6\n\
             [detector]\ntakeover_min_value = 200.0\ncart_stuffing_hold_ms = 60000\n",
        )
        .unwrap();
        let env = vec![
            ("CLICKPATH__KAFKA__BROKERS".to_string(), "env:2".to_string()),
            (
                "CLICKPATH__DETECTOR__TAKEOVER_MIN_VALUE".to_string(),
                "300".to_string(),
            ),
        ];
        let cfg = ClickpathConfig::load_with_env(Some(&path), env).unwrap();
        assert_eq!(cfg.kafka.brokers, "env:2");
        assert_eq!(cfg.topics.partitions, 6);
        assert_eq!(cfg.detector.takeover_min_value, 300.0);
        assert_eq!(cfg.detector.cart_stuffing_hold_ms, 60_000);
        assert_eq!(cfg.detector.takeover_local_value_ratio, 3.0, "the default");
        assert_eq!(
            cfg.detector.takeover_local_focused_ratio, 1.0,
            "the default"
        );
    }

    #[test]
    fn every_unknown_key_is_reported_at_once() {
        let err = ClickpathConfig::from_toml_str(
            "[kafka]\nbrokerz = \"x\"\n[topics]\nraww = \"y\"\n[sessionizer]\ngap = 5\n",
        )
        .unwrap_err();
        let text = err.to_string();
        assert_eq!(err.problems.len(), 3, "{text}");
        assert!(text.contains("kafka.brokerz: unknown key"), "{text}");
        assert!(text.contains("topics.raww: unknown key"), "{text}");
        assert!(text.contains("sessionizer.gap: unknown key"), "{text}");
    }

    /// What a newcomer's first file gets wrong, all in one report: an unknown key, a negative
    /// count, a device that does not exist and a batch of zero (a type error, a value out of its
    /// set and a semantic check behind them used to hide each other).
    #[test]
    fn unknown_keys_wrong_values_and_semantic_problems_are_reported_together() {
        let err = ClickpathConfig::from_toml_str(
            "[scorer]\ntop_kk = 1\ntop_k = -3\ndevice = \"tpu\"\n[runtime]\nmax_batch = 0\n",
        )
        .unwrap_err();
        let text = err.to_string();
        assert_eq!(err.problems.len(), 4, "{text}");
        assert!(text.contains("scorer.top_kk: unknown key"), "{text}");
        assert!(
            text.contains("scorer.top_k: invalid value: integer `-3`"),
            "{text}"
        );
        assert!(
            text.contains("scorer.device: unknown variant `tpu`"),
            "{text}"
        );
        assert!(text.contains("runtime.max_batch: must be >= 1"), "{text}");
    }

    #[test]
    fn semantic_problems_are_listed_together() {
        let err = ClickpathConfig::from_toml_str(
            "[topics]\npartitions = 0\nclean = \"clickpath.clicks.raw\"\n[runtime]\nmax_batch = 0\n",
        )
        .unwrap_err();
        assert!(err.problems.len() >= 3, "{err}");
        assert!(
            err.to_string()
                .contains("topics.clean: same topic as topics.raw"),
            "{err}"
        );
    }

    #[test]
    fn the_scorer_item_index_is_exact_by_default_and_a_graph_needs_a_search_width() {
        assert_eq!(
            ClickpathConfig::default().scorer.item_index,
            ItemRanking::Exact
        );
        let cfg = ClickpathConfig::from_toml_str(
            "[scorer]\nitem_index = \"graph\"\nitem_index_ef = 128\n",
        )
        .unwrap();
        let index = cfg.scorer.item_index.index_config(cfg.scorer.item_index_ef);
        assert_eq!(index.map(|i| (i.graph_degree, i.graph_ef)), Some((16, 128)));
        let err =
            ClickpathConfig::from_toml_str("[scorer]\nitem_index = \"graph\"\nitem_index_ef = 0\n")
                .unwrap_err();
        assert!(
            err.to_string()
                .contains("scorer.item_index_ef: must be at least 1"),
            "{err}"
        );
        let err = ClickpathConfig::from_toml_str("[scorer]\nitem_index = \"hnsw\"\n").unwrap_err();
        assert!(err.to_string().contains("scorer.item_index"), "{err}");
    }

    #[test]
    fn faults_slow_only_the_named_stage_for_the_set_time() {
        let cfg = ClickpathConfig::from_toml_str(
            "[faults]\nslow_stage = \"scorer\"\nslow_factor = 10\nslow_for_ms = 5000\n",
        )
        .unwrap();
        let f = cfg.faults.slowdown().unwrap();
        let ms = std::time::Duration::from_millis;
        assert_eq!(f.extra("scorer", ms(100), ms(2)), Some(ms(18)));
        assert_eq!(f.extra("windower", ms(100), ms(2)), None);
        assert_eq!(f.extra("scorer", ms(5000), ms(2)), None, "over");
        assert_eq!(ClickpathConfig::default().faults.slowdown(), None);
        // The run loop gets it through the environment.
        assert_eq!(cfg.runner_env(Codec::embedded()).slowdown, Some(f));

        let err = ClickpathConfig::from_toml_str(
            "[faults]\nslow_stage = \"scorrer\"\nslow_factor = 0.5\n[runtime]\ninput_buffer_kbytes = 0\n",
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("faults.slow_stage: unknown stage \"scorrer\""),
            "{text}"
        );
        assert!(
            text.contains("faults.slow_factor: must be a number >= 1"),
            "{text}"
        );
        assert!(text.contains("runtime.input_buffer_kbytes"), "{text}");
    }

    #[test]
    fn wrong_types_name_their_key() {
        let err = ClickpathConfig::from_toml_str("[runtime]\nmax_batch = \"many\"\n").unwrap_err();
        assert!(err.to_string().contains("runtime.max_batch"), "{err}");
    }

    #[test]
    fn analytics_settings_build_the_funnel_and_report_every_problem() {
        let cfg = ClickpathConfig::from_toml_str(
            "[analytics]\nsteps = [\"SEARCH|PRODUCT_VIEW\", \"PURCHASE\"]\norder = \"any_order\"\n",
        )
        .unwrap();
        let spec = cfg.analytics.funnel_spec().unwrap();
        assert_eq!(spec.steps().len(), 2);
        assert_eq!(spec.steps()[0].events.len(), 2);
        assert_eq!(spec.order, FunnelOrder::AnyOrder);

        let err = ClickpathConfig::from_toml_str(
            "[analytics]\nsteps = [\"VIEWED\", \"PURCHASE\"]\nlateness_ms = -1\npublish_interval_ms = 0\n",
        )
        .unwrap_err();
        let text = err.to_string();
        assert_eq!(err.problems.len(), 3, "{text}");
        assert!(
            text.contains("analytics.steps: cannot parse step \"VIEWED\""),
            "{text}"
        );
        assert!(text.contains("analytics.lateness_ms"), "{text}");
        assert!(text.contains("analytics.publish_interval_ms"), "{text}");

        let err =
            ClickpathConfig::from_toml_str("[analytics]\nsteps = [\"PURCHASE\"]\nwindow_ms = 0\n")
                .unwrap_err();
        assert!(
            err.to_string()
                .contains("analytics.steps: a funnel needs at least 2 steps"),
            "{err}"
        );
        let err = ClickpathConfig::from_toml_str("[analytics]\nwindow_ms = 0\n").unwrap_err();
        assert!(
            err.to_string()
                .contains("analytics.window_ms: the conversion window must be positive"),
            "{err}"
        );
        let err =
            ClickpathConfig::from_toml_str("[analytics]\norder = \"sideways\"\n").unwrap_err();
        assert!(err.to_string().contains("analytics.order"), "{err}");
        let err = ClickpathConfig::from_toml_str("[topics]\nanalytics = \"clickpath.alerts\"\n")
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("topics.analytics: same topic as topics.alerts"),
            "{err}"
        );
    }

    #[test]
    fn the_outlook_is_off_by_default_and_its_keys_are_checked() {
        assert_eq!(ClickpathConfig::default().outlook.model_dir, None);
        let cfg =
            ClickpathConfig::from_toml_str("[outlook]\nmodel_dir = \"models/outlook\"\n").unwrap();
        assert_eq!(cfg.outlook.model_dir, Some(PathBuf::from("models/outlook")));
        let cfg = ClickpathConfig::from_toml_str("[outlook]\nmodel_dir = \"\"\n").unwrap();
        assert_eq!(cfg.outlook.model_dir, None);
        let err = ClickpathConfig::from_toml_str("[outlook]\nmodeldir = \"x\"\n").unwrap_err();
        assert!(err.to_string().contains("outlook.modeldir"), "{err}");
    }

    #[test]
    fn scorer_paths_are_optional_and_the_device_is_a_choice() {
        let cfg = ClickpathConfig::default();
        assert_eq!(cfg.scorer.model_dir, None);
        assert_eq!(cfg.scorer.device, OnlineDevice::Cpu);
        // Older files said "no model" with an empty string.
        let cfg = ClickpathConfig::from_toml_str(
            "[scorer]\nmodel_dir = \"\"\nshadow_model_dir = \"models/gru\"\ndevice = \"cuda\"\n",
        )
        .unwrap();
        assert_eq!(cfg.scorer.model_dir, None);
        assert_eq!(
            cfg.scorer.shadow_model_dir,
            Some(PathBuf::from("models/gru"))
        );
        assert_eq!(cfg.scorer.device, OnlineDevice::Cuda);
        let err = ClickpathConfig::from_toml_str("[scorer]\ndevice = \"tpu\"\n").unwrap_err();
        assert!(err.to_string().contains("scorer.device"), "{err}");
        // What is written back reads the same.
        let text = toml::to_string(&cfg).unwrap();
        let again = ClickpathConfig::from_toml_str(&text).unwrap();
        assert_eq!(again.scorer.shadow_model_dir, cfg.scorer.shadow_model_dir);
        assert_eq!(again.scorer.device, OnlineDevice::Cuda);
    }

    #[test]
    fn detector_sequence_and_budget_settings_are_checked() {
        let cfg = ClickpathConfig::from_toml_str(
            "[detector]\nsequence_mode = \"fixed\"\nalert_budget_per_10k_users_hour = 5\n",
        )
        .unwrap();
        assert_eq!(
            cfg.detector.sequence_mode,
            clickpath_core::rules::SequenceMode::Fixed
        );
        let err = ClickpathConfig::from_toml_str(
            "[detector]\nsequence_min_coverage = 1.5\ngrammar_half_life_events = 0\nalert_budget_per_10k_users_hour = -1\n",
        )
        .unwrap_err();
        assert_eq!(err.problems.len(), 3, "{err}");
        let err = ClickpathConfig::from_toml_str(
            "[detector]\ntakeover_local_value_ratio = -1\ntakeover_local_focused_ratio = nan\ntakeover_stream_order_quantile = 1\n",
        )
        .unwrap_err();
        assert_eq!(err.problems.len(), 3, "{err}");
        assert!(
            err.to_string()
                .contains("detector.takeover_stream_order_quantile: must be at least 0 (off) and below 1, got 1"),
            "{err}"
        );
        for bad in ["-0.1", "nan"] {
            let err = ClickpathConfig::from_toml_str(&format!(
                "[detector]\ntakeover_stream_order_quantile = {bad}\n"
            ))
            .unwrap_err();
            assert!(
                err.to_string()
                    .contains("detector.takeover_stream_order_quantile"),
                "{bad}: {err}"
            );
        }
        assert!(
            err.to_string()
                .contains("detector.takeover_local_focused_ratio"),
            "{err}"
        );
        let err =
            ClickpathConfig::from_toml_str("[detector]\nsequence_mode = \"strict\"\n").unwrap_err();
        assert!(err.to_string().contains("detector.sequence_mode"), "{err}");
    }

    #[test]
    fn missing_file_is_a_clear_error() {
        let err =
            ClickpathConfig::load_with_env(Some(Path::new("/nonexistent/c.toml")), Vec::new())
                .unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
    }
}
