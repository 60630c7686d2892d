//! Layered configuration: embedded defaults, then a file, then `CLICKPATH__*` environment variables.
//!
//! Loading reports every problem it can find at once (unknown keys anywhere, wrong types with their key
//! path, and semantic checks), as vector's config compiler does, instead of stopping at the first.

use clickpath_core::analytics::{AnalyticsError, FunnelOrder, FunnelSpec, Step, Unit};
use clickpath_core::features::FeatureSpec;
use clickpath_core::rules::RulesConfig;
use clickpath_core::session::SessionConfig;
use clickpath_core::validate::ValidationConfig;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// The embedded defaults (`config/default.toml`).
pub const DEFAULTS_TOML: &str = include_str!("../../../config/default.toml");

/// Everything a clickpath process can be configured with.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClickpathConfig {
    /// Connection to the Kafka bus.
    pub kafka: KafkaConfig,
    /// Delivery guarantee of every stage.
    pub processing: ProcessingConfig,
    /// Topic names and their layout.
    pub topics: TopicsConfig,
    /// Run-loop tuning shared by every stage.
    pub runtime: RuntimeConfig,
    /// The HTTP endpoint (health, readiness, metrics).
    pub http: HttpConfig,
    /// The cleaning stage.
    pub cleaning: CleaningConfig,
    /// The sessionizer stage.
    pub sessionizer: SessionConfig,
    /// The feature windower stage.
    pub windower: FeatureSpec,
    /// The scorer stage.
    pub scorer: ScorerConfig,
    /// The anomaly detector stage.
    pub detector: RulesConfig,
    /// The analytics stage (funnel aggregates per time bucket and segment).
    pub analytics: AnalyticsConfig,
    /// Fault injection for reliability tests (off by default).
    pub faults: FaultsConfig,
}

/// The stage names a `[faults]` section may name: `clickpath_stages::StageName::ALL`, which this crate cannot
/// see (a test there checks that the two lists agree).
pub const STAGE_NAMES: &[&str] = &[
    "cleaning",
    "sessionizer",
    "windower",
    "scorer",
    "detector",
    "analytics",
];

/// Fault injection, for the reliability suite: a stage made artificially slow for a while. Off by default.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultsConfig {
    /// The stage to slow down (`scorer`, ...); empty: none.
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
    /// The extra time `stage` sleeps after a batch that took `busy`, `running` after its first input.
    pub fn slowdown(
        &self,
        stage: &str,
        running: std::time::Duration,
        busy: std::time::Duration,
    ) -> Option<std::time::Duration> {
        let active = self.slow_stage == stage
            && self.slow_factor > 1.0
            && (self.slow_for_ms == 0 || running.as_millis() < u128::from(self.slow_for_ms));
        active.then(|| busy.mul_f64(self.slow_factor - 1.0))
    }
}

/// Connection to the Kafka bus.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap servers, comma-separated.
    pub brokers: String,
    /// Consumer groups are named `<group_prefix>.<stage>`.
    pub group_prefix: String,
    /// Extra librdkafka properties applied to every client (security, tuning).
    pub properties: BTreeMap<String, String>,
    /// librdkafka properties for consumers only (`session.timeout.ms`, `fetch.wait.max.ms`, ...), applied
    /// after `properties`. Producers warn about consumer properties, hence the separate map.
    pub consumer_properties: BTreeMap<String, String>,
    /// librdkafka properties for producers only (`linger.ms`, `compression.type`, ...), applied after
    /// `properties`.
    pub producer_properties: BTreeMap<String, String>,
    /// Stable name of this instance (e.g. the pod name). It makes the transactional id
    /// `<group_prefix>.<stage>.<instance_id>`, so a restarted instance fences its predecessor and aborts its open
    /// transaction at once. Empty means `<hostname>-<pid>`, which is unique but not stable: a crashed instance's
    /// open transaction then blocks `read_committed` readers of its partitions until `transaction_timeout_ms`.
    pub instance_id: String,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: "127.0.0.1:19092".into(),
            group_prefix: "clickpath".into(),
            properties: BTreeMap::new(),
            consumer_properties: BTreeMap::new(),
            producer_properties: BTreeMap::new(),
            instance_id: String::new(),
        }
    }
}

/// What happens to a batch when a stage fails half-way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Guarantee {
    /// Offsets are stored after the batch's outputs are acknowledged: a crash replays the batch (duplicates possible,
    /// nothing lost).
    #[default]
    AtLeastOnce,
    /// Outputs, state changes and input offsets are committed in one Kafka transaction: a crash aborts it and the
    /// next owner redoes the batch from the restored state (no duplicates for `read_committed` readers).
    ExactlyOnce,
}

/// Delivery guarantee settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProcessingConfig {
    /// `at_least_once` (default) or `exactly_once`.
    pub guarantee: Guarantee,
    /// Transaction timeout in exactly-once mode (ms); the broker aborts a transaction left open longer.
    pub transaction_timeout_ms: u64,
}

impl Default for ProcessingConfig {
    fn default() -> Self {
        ProcessingConfig {
            guarantee: Guarantee::AtLeastOnce,
            transaction_timeout_ms: 30_000,
        }
    }
}

/// Topic names. Every topic is keyed by user id, so one user's records share a partition everywhere.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TopicsConfig {
    /// Raw click events from the platform.
    pub raw: String,
    /// Validated, normalised, de-duplicated click events.
    pub clean: String,
    /// Closed session summaries.
    pub sessions: String,
    /// Feature vectors, one per clean event.
    pub features: String,
    /// Predictions, one per feature vector.
    pub predictions: String,
    /// Fraud and bot alerts.
    pub alerts: String,
    /// Records no stage could process, with the reason.
    pub dead_letters: String,
    /// Events that arrived beyond the sessionizer's allowed lateness, with the reason.
    pub late_events: String,
    /// Funnel aggregates of closed time buckets, from the analytics stage.
    pub analytics: String,
    /// Partitions of each topic made by `clickpath topics create`.
    pub partitions: i32,
    /// Replication factor of each topic made by `clickpath topics create`.
    pub replication_factor: i32,
}

impl Default for TopicsConfig {
    fn default() -> Self {
        TopicsConfig {
            raw: "clickpath.clicks.raw".into(),
            clean: "clickpath.clicks.clean".into(),
            sessions: "clickpath.sessions".into(),
            features: "clickpath.features".into(),
            predictions: "clickpath.predictions".into(),
            alerts: "clickpath.alerts".into(),
            dead_letters: "clickpath.dead-letters".into(),
            late_events: "clickpath.late-events".into(),
            analytics: "clickpath.analytics".into(),
            partitions: 3,
            replication_factor: 1,
        }
    }
}

impl TopicsConfig {
    /// Every topic name with its role, in pipeline order.
    pub fn all(&self) -> Vec<(&'static str, &str)> {
        vec![
            ("raw", self.raw.as_str()),
            ("clean", self.clean.as_str()),
            ("sessions", self.sessions.as_str()),
            ("features", self.features.as_str()),
            ("predictions", self.predictions.as_str()),
            ("alerts", self.alerts.as_str()),
            ("dead_letters", self.dead_letters.as_str()),
            ("late_events", self.late_events.as_str()),
            ("analytics", self.analytics.as_str()),
        ]
    }

    /// A copy with every topic name prefixed (tests use unique prefixes per run).
    pub fn with_prefix(&self, prefix: &str) -> TopicsConfig {
        let p = |s: &str| format!("{prefix}{s}");
        TopicsConfig {
            raw: p(&self.raw),
            clean: p(&self.clean),
            sessions: p(&self.sessions),
            features: p(&self.features),
            predictions: p(&self.predictions),
            alerts: p(&self.alerts),
            dead_letters: p(&self.dead_letters),
            late_events: p(&self.late_events),
            analytics: p(&self.analytics),
            ..self.clone()
        }
    }
}

/// Run-loop tuning shared by every stage.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Records per batch; offsets are stored only after a batch's outputs are delivered.
    pub max_batch: usize,
    /// How long to wait for the first record of a batch (ms).
    pub poll_timeout_ms: u64,
    /// How often the stage's tick hook runs (ms).
    pub tick_interval_ms: u64,
    /// How long a SIGTERM drain may take (ms).
    pub shutdown_grace_ms: u64,
    /// Largest accepted input record value, in bytes; larger ones go to the dead-letter topic undecoded.
    pub max_record_bytes: usize,
    /// The most input a stage's consumer fetches ahead of processing, in KiB (librdkafka's
    /// `queued.max.messages.kbytes`). This bounds a stage's memory when it falls behind: its lag grows on
    /// the broker instead of in the process.
    pub input_buffer_kbytes: u64,
    /// An assigned input partition holding records from which the stage has consumed nothing for this long
    /// (ms) is stalled: `/healthz` fails, `clickpath_stalled_partitions` counts it and the log names it.
    /// 0 turns the check off.
    pub stall_after_ms: u64,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            max_batch: 1000,
            poll_timeout_ms: 100,
            tick_interval_ms: 1000,
            shutdown_grace_ms: 30_000,
            max_record_bytes: 1 << 20,
            input_buffer_kbytes: 65_536,
            stall_after_ms: 120_000,
        }
    }
}

/// The HTTP endpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Listen address; port 0 picks a free port.
    pub bind: String,
    /// File holding a bearer token; when set, every path but `/healthz` and `/readyz` requires
    /// `Authorization: Bearer <token>`. Empty: no authentication.
    pub bearer_token_file: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            bind: "127.0.0.1:9464".into(),
            bearer_token_file: String::new(),
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
    /// Directory of a model artifact from `clickpath train`; empty means the built-in baseline.
    pub model_dir: String,
    /// How many next actions each prediction lists.
    pub top_k: usize,
    /// How many decision factors each prediction lists.
    pub factors: usize,
    /// Sequence models: decision factors (occlusion) for every Nth prediction; 0 for none.
    pub explain_every: u64,
    /// Sequence models: steps of the greedy predicted path (0: none).
    pub path_steps: usize,
    /// Sequence models: most events per model call (micro-batch across users).
    pub max_batch: usize,
    /// Longest wait (µs) for more input after the first record of a batch, to fill micro-batches.
    pub max_wait_us: u64,
    /// `cpu` (Burn flex) or `cuda` (a build with the `cuda` feature and an NVIDIA GPU).
    pub device: String,
    /// How often `model_dir` is checked for a new artifact to hot-swap (ms); 0 turns it off.
    pub reload_interval_ms: u64,
    /// Optional shadow sequence model scored beside the live one; empty for none.
    pub shadow_model_dir: String,
}

impl Default for ScorerConfig {
    fn default() -> Self {
        ScorerConfig {
            model_dir: String::new(),
            top_k: 3,
            factors: 3,
            explain_every: 10,
            path_steps: 3,
            max_batch: 256,
            max_wait_us: 2_000,
            device: "cpu".into(),
            reload_interval_ms: 5_000,
            shadow_model_dir: String::new(),
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
    /// How often closed buckets are looked for and published (ms of wall time).
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

/// Every problem found in a configuration.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n{}", .problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
pub struct ConfigError {
    /// One line per problem, each naming the key path.
    pub problems: Vec<String>,
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
        use config::{Environment, File, FileFormat};
        let mut builder =
            config::Config::builder().add_source(File::from_str(DEFAULTS_TOML, FileFormat::Toml));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError {
                    problems: vec![format!("config file {} does not exist", path.display())],
                });
            }
            builder = builder.add_source(File::from(path).format(FileFormat::Toml));
        }
        // librdkafka property names contain dots, which the layered loader would split into nested keys:
        // CLICKPATH__KAFKA__[CONSUMER_|PRODUCER_]PROPERTIES__<name> variables are applied verbatim after
        // loading instead.
        const PROPS: [(&str, &str); 3] = [
            ("CLICKPATH__KAFKA__PROPERTIES__", "properties"),
            (
                "CLICKPATH__KAFKA__CONSUMER_PROPERTIES__",
                "consumer_properties",
            ),
            (
                "CLICKPATH__KAFKA__PRODUCER_PROPERTIES__",
                "producer_properties",
            ),
        ];
        let props_map = |k: &str| {
            PROPS
                .iter()
                .find(|(prefix, _)| k.starts_with(prefix))
                .map(|&(prefix, map)| (prefix.len(), map))
        };
        type Vars = Vec<(String, String)>;
        let (props, env_map): (Vars, Vars) = env
            .into_iter()
            .filter(|(k, _)| k.starts_with("CLICKPATH__"))
            .partition(|(k, _)| props_map(k).is_some());
        let env_map: std::collections::HashMap<String, String> = env_map.into_iter().collect();
        builder = builder.add_source(
            Environment::with_prefix("CLICKPATH")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .source(Some(env_map)),
        );
        let merged = builder.build().map_err(|e| ConfigError {
            problems: vec![e.to_string()],
        })?;
        let mut value: serde_json::Value = merged.try_deserialize().map_err(|e| ConfigError {
            problems: vec![e.to_string()],
        })?;
        for (k, v) in props {
            let Some((prefix_len, map_name)) = props_map(&k) else {
                continue;
            };
            let name = k[prefix_len..].to_lowercase();
            if let Some(map) = value
                .get_mut("kafka")
                .and_then(|k| k.get_mut(map_name))
                .and_then(|p| p.as_object_mut())
            {
                map.insert(name, serde_json::Value::String(v));
            }
        }
        Self::from_value(value)
    }

    /// Parses a TOML document layered on the defaults (no environment).
    pub fn from_toml_str(toml_text: &str) -> Result<Self, ConfigError> {
        use config::{File, FileFormat};
        let merged = config::Config::builder()
            .add_source(File::from_str(DEFAULTS_TOML, FileFormat::Toml))
            .add_source(File::from_str(toml_text, FileFormat::Toml))
            .build()
            .map_err(|e| ConfigError {
                problems: vec![e.to_string()],
            })?;
        let value: serde_json::Value = merged.try_deserialize().map_err(|e| ConfigError {
            problems: vec![e.to_string()],
        })?;
        Self::from_value(value)
    }

    fn from_value(value: serde_json::Value) -> Result<Self, ConfigError> {
        let mut problems = Vec::new();
        let known = serde_json::to_value(ClickpathConfig::default()).unwrap_or_default();
        unknown_keys(&value, &known, "", &mut problems);
        if !problems.is_empty() {
            return Err(ConfigError { problems });
        }
        let parsed: Result<ClickpathConfig, _> = serde_path_to_error::deserialize(value);
        let cfg = match parsed {
            Ok(cfg) => cfg,
            Err(e) => {
                return Err(ConfigError {
                    problems: vec![format!("{}: {}", e.path(), e.inner())],
                });
            }
        };
        cfg.check()?;
        Ok(cfg)
    }

    /// Semantic checks, all at once.
    pub fn check(&self) -> Result<(), ConfigError> {
        let mut p = Vec::new();
        if self.kafka.brokers.trim().is_empty() {
            p.push("kafka.brokers: must name at least one broker".to_string());
        }
        if self.kafka.group_prefix.trim().is_empty() {
            p.push("kafka.group_prefix: must not be empty".to_string());
        }
        let mut seen = std::collections::BTreeMap::new();
        for (role, name) in self.topics.all() {
            if name.trim().is_empty() {
                p.push(format!("topics.{role}: must not be empty"));
            } else if let Some(other) = seen.insert(name.to_string(), role) {
                p.push(format!(
                    "topics.{role}: same topic as topics.{other} ({name})"
                ));
            }
        }
        if self.topics.partitions < 1 {
            p.push(format!(
                "topics.partitions: must be >= 1, got {}",
                self.topics.partitions
            ));
        }
        if self.topics.replication_factor < 1 {
            p.push(format!(
                "topics.replication_factor: must be >= 1, got {}",
                self.topics.replication_factor
            ));
        }
        if self.processing.transaction_timeout_ms < 1000 {
            p.push("processing.transaction_timeout_ms: must be >= 1000".to_string());
        }
        if self.runtime.max_batch == 0 {
            p.push("runtime.max_batch: must be >= 1".to_string());
        }
        if self.runtime.max_record_bytes < 64 {
            p.push("runtime.max_record_bytes: must be >= 64".to_string());
        }
        if self.runtime.tick_interval_ms == 0 {
            p.push("runtime.tick_interval_ms: must be >= 1".to_string());
        }
        // librdkafka's range for queued.max.messages.kbytes.
        if !(1..=2_097_151).contains(&self.runtime.input_buffer_kbytes) {
            p.push(format!(
                "runtime.input_buffer_kbytes: must be between 1 and 2097151, got {}",
                self.runtime.input_buffer_kbytes
            ));
        }
        let f = &self.faults;
        if !f.slow_stage.is_empty() && !STAGE_NAMES.contains(&f.slow_stage.as_str()) {
            p.push(format!(
                "faults.slow_stage: unknown stage {:?} (one of {})",
                f.slow_stage,
                STAGE_NAMES.join(", ")
            ));
        }
        if !(f.slow_factor.is_finite() && f.slow_factor >= 1.0) {
            p.push(format!(
                "faults.slow_factor: must be a number >= 1, got {}",
                f.slow_factor
            ));
        }
        if self.http.bind.parse::<std::net::SocketAddr>().is_err() {
            p.push(format!(
                "http.bind: not an address:port ({})",
                self.http.bind
            ));
        }
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
        if self.scorer.max_batch == 0 {
            p.push("scorer.max_batch: must be at least 1".into());
        }
        if !matches!(self.scorer.device.as_str(), "cpu" | "cuda") {
            p.push(format!(
                "scorer.device: must be \"cpu\" or \"cuda\", got {:?}",
                self.scorer.device
            ));
        }
        self.analytics.problems(&mut p);
        if p.is_empty() {
            Ok(())
        } else {
            Err(ConfigError { problems: p })
        }
    }
}

/// Collects the key paths present in `value` but not in `known`. Free-form maps (`kafka.properties`) accept any key.
fn unknown_keys(
    value: &serde_json::Value,
    known: &serde_json::Value,
    path: &str,
    out: &mut Vec<String>,
) {
    const FREE_FORM: &[&str] = &[
        "kafka.properties",
        "kafka.consumer_properties",
        "kafka.producer_properties",
    ];
    if FREE_FORM.contains(&path) {
        return;
    }
    if let (Some(v), Some(k)) = (value.as_object(), known.as_object()) {
        for (key, child) in v {
            let child_path = if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            };
            match k.get(key) {
                Some(known_child) => unknown_keys(child, known_child, &child_path, out),
                None => out.push(format!("{child_path}: unknown key")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_load_and_pass_checks() {
        let cfg = ClickpathConfig::load_with_env(None, Vec::new()).expect("defaults are valid");
        assert_eq!(cfg.topics.raw, "clickpath.clicks.raw");
        assert_eq!(cfg.runtime.max_batch, 1000);
    }

    #[test]
    fn environment_overrides_file_and_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[kafka]\nbrokers = \"file:1\"\n[topics]\npartitions = 6\n",
        )
        .unwrap();
        let env = vec![("CLICKPATH__KAFKA__BROKERS".to_string(), "env:2".to_string())];
        let cfg = ClickpathConfig::load_with_env(Some(&path), env).unwrap();
        assert_eq!(cfg.kafka.brokers, "env:2");
        assert_eq!(cfg.topics.partitions, 6);
    }

    #[test]
    fn librdkafka_properties_from_the_environment_keep_their_dots() {
        let env = vec![
            (
                "CLICKPATH__KAFKA__PROPERTIES__GROUP.INSTANCE.ID".to_string(),
                "pod-1".to_string(),
            ),
            (
                "CLICKPATH__KAFKA__PROPERTIES__LINGER.MS".to_string(),
                "5".to_string(),
            ),
        ];
        let cfg = ClickpathConfig::load_with_env(None, env).unwrap();
        assert_eq!(cfg.kafka.properties["group.instance.id"], "pod-1");
        assert_eq!(
            cfg.kafka.properties["linger.ms"], "5",
            "numbers stay strings"
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
    fn faults_slow_only_the_named_stage_for_the_set_time() {
        let cfg = ClickpathConfig::from_toml_str(
            "[faults]\nslow_stage = \"scorer\"\nslow_factor = 10\nslow_for_ms = 5000\n",
        )
        .unwrap();
        let f = &cfg.faults;
        let ms = std::time::Duration::from_millis;
        assert_eq!(f.slowdown("scorer", ms(100), ms(2)), Some(ms(18)));
        assert_eq!(f.slowdown("windower", ms(100), ms(2)), None);
        assert_eq!(f.slowdown("scorer", ms(5000), ms(2)), None, "over");
        assert_eq!(
            ClickpathConfig::default()
                .faults
                .slowdown("scorer", ms(1), ms(2)),
            None
        );

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
    fn missing_file_is_a_clear_error() {
        let err =
            ClickpathConfig::load_with_env(Some(Path::new("/nonexistent/c.toml")), Vec::new())
                .unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
    }
}
