//! The settings every stage shares: how to reach Kafka, the delivery guarantee, topic names, run-loop
//! tuning and the HTTP endpoint ([`BusConfig`]), and the layered loading every clickpath configuration
//! goes through: embedded defaults, then a file, then `CLICKPATH__*` environment variables.
//!
//! Loading reports every problem it can find at once (unknown keys anywhere, wrong types with their key
//! path, and semantic checks), as vector's config compiler does, instead of stopping at the first. The
//! stages' own sections, and the whole configuration of a clickpath process, are in `clickpath-stages`
//! (`clickpath_stages::config`).

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// The sections of a clickpath configuration that the runtime reads: `[kafka]`, `[processing]`, `[topics]`,
/// `[runtime]` and `[http]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BusConfig {
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
}

impl BusConfig {
    /// The section names of [`BusConfig`], as they appear in a configuration file.
    pub const SECTIONS: [&str; 5] = ["kafka", "processing", "topics", "runtime", "http"];

    /// Semantic problems of these sections, each naming its key.
    pub fn problems(&self, p: &mut Vec<String>) {
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
        if self.http.bind.parse::<std::net::SocketAddr>().is_err() {
            p.push(format!(
                "http.bind: not an address:port ({})",
                self.http.bind
            ));
        }
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
    /// How long `clickpath run` and `clickpath topics create` wait for a broker to answer at start before
    /// they stop with an error naming `kafka.brokers` (a broker that comes up later in that time is fine).
    /// Default 30 000.
    pub connect_timeout_ms: u64,
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
            connect_timeout_ms: 30_000,
        }
    }
}

/// What happens to a batch when a stage fails half-way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Guarantee {
    /// Offsets are stored after the outputs of the batches since the last commit are acknowledged
    /// (`runtime.commit_interval_ms`): a crash or a rebalance replays those batches (duplicates possible,
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
    /// At-least-once: how often (ms) the batches processed since the last commit are made durable
    /// together, in order: their outputs acknowledged, then the stage's state changes (taken at the
    /// commit) written once per changed key and acknowledged, then their offsets stored (Kafka
    /// Streams' `commit.interval.ms`). The loop checks the outputs' acknowledgements between
    /// batches rather than waiting for them (unless more than two commits are under way), then
    /// writes the state and stores the offsets in one step. After a crash, what was not
    /// committed is processed again: up to three intervals of input (the open one and two under
    /// way) plus the broker's acknowledgement time, and up to a second more (librdkafka's
    /// auto-commit interval); so is what a partition moved by a rebalance had not committed. 0: a
    /// commit starts after every batch (still not waited for). Exactly-once commits one transaction
    /// per batch whatever this is.
    pub commit_interval_ms: u64,
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
    /// W3C Trace Context on the records (`traceparent`): `start` (continue the input record's trace,
    /// or start one when it has none), `continue` (only records that came with one), or `off`.
    pub trace_context: TraceContextMode,
}

/// How `traceparent` headers are written (`runtime.trace_context`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TraceContextMode {
    /// Every output carries a `traceparent`: its input record's trace continued, or a new one.
    #[default]
    Start,
    /// Only the outputs of input records that came with a valid `traceparent` carry one.
    Continue,
    /// No `traceparent` is read or written.
    Off,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            max_batch: 1000,
            commit_interval_ms: 100,
            poll_timeout_ms: 100,
            tick_interval_ms: 1000,
            shutdown_grace_ms: 30_000,
            max_record_bytes: 1 << 20,
            input_buffer_kbytes: 65_536,
            stall_after_ms: 120_000,
            trace_context: TraceContextMode::Start,
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

/// Every problem found in a configuration.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n{}", .problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
pub struct ConfigError {
    /// One line per problem, each naming the key path.
    pub problems: Vec<String>,
}

impl ConfigError {
    /// `Ok` when `problems` is empty, else the error listing them.
    pub fn check(problems: Vec<String>) -> Result<(), ConfigError> {
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError { problems })
        }
    }

    fn one(problem: impl ToString) -> Self {
        ConfigError {
            problems: vec![problem.to_string()],
        }
    }
}

/// The merged value of `defaults` (TOML), then `file` (if any), then the `CLICKPATH__*` variables of `env`.
///
/// librdkafka property names contain dots, which the layered loader would split into nested keys:
/// `CLICKPATH__KAFKA__[CONSUMER_|PRODUCER_]PROPERTIES__<name>` variables are applied verbatim instead.
pub fn layered_value(
    defaults: &str,
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<serde_json::Value, ConfigError> {
    use config::{Environment, File, FileFormat};
    let mut builder =
        config::Config::builder().add_source(File::from_str(defaults, FileFormat::Toml));
    if let Some(path) = file {
        if !path.exists() {
            return Err(ConfigError::one(format!(
                "config file {} does not exist",
                path.display()
            )));
        }
        builder = builder.add_source(File::from(path).format(FileFormat::Toml));
    }
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
    let merged = builder.build().map_err(ConfigError::one)?;
    let mut value: serde_json::Value = merged.try_deserialize().map_err(ConfigError::one)?;
    for (k, v) in props {
        let Some((prefix_len, map_name)) = props_map(&k) else {
            continue;
        };
        let name = k[prefix_len..].to_lowercase();
        // The tables may be absent from the layers; the variable creates them.
        if let Some(map) = value
            .as_object_mut()
            .map(|o| o.entry("kafka").or_insert_with(empty_table))
            .and_then(|k| k.as_object_mut())
            .map(|k| k.entry(map_name).or_insert_with(empty_table))
            .and_then(|p| p.as_object_mut())
        {
            map.insert(name, serde_json::Value::String(v));
        }
    }
    Ok(value)
}

fn empty_table() -> serde_json::Value {
    serde_json::Value::Object(serde_json::Map::new())
}

/// The merged value of `defaults` and then `toml_text` (no environment).
pub fn layered_toml(defaults: &str, toml_text: &str) -> Result<serde_json::Value, ConfigError> {
    use config::{File, FileFormat};
    let merged = config::Config::builder()
        .add_source(File::from_str(defaults, FileFormat::Toml))
        .add_source(File::from_str(toml_text, FileFormat::Toml))
        .build()
        .map_err(ConfigError::one)?;
    merged.try_deserialize().map_err(ConfigError::one)
}

/// Parses `value` as `T`, after listing every key that `T` (as its default serialises) does not have.
/// A wrong type is reported with its key path.
pub fn parse_checked<T: Default + Serialize + DeserializeOwned>(
    value: serde_json::Value,
) -> Result<T, ConfigError> {
    let (parsed, problems) = parse_collecting(value);
    ConfigError::check(problems)?;
    parsed.ok_or_else(|| ConfigError::one("the configuration does not parse"))
}

/// Most wrong values [`parse_collecting`] reports before it gives up.
const MAX_TYPE_PROBLEMS: usize = 32;

/// Parses `value` as `T` and collects every problem on the way, as vector's config compiler does:
/// keys `T` does not have (left out), then each value of the wrong type or out of its set (reported
/// with its key path and replaced by its default, so that the rest can still be checked). Returns
/// the parsed value, with defaults where the problems were (for semantic checks of the rest; the
/// configuration stays invalid), or `None` when a problem could not be set aside.
pub fn parse_collecting<T: Default + Serialize + DeserializeOwned>(
    mut value: serde_json::Value,
) -> (Option<T>, Vec<String>) {
    let mut problems = Vec::new();
    let known = serde_json::to_value(T::default()).unwrap_or_default();
    unknown_keys(&value, &known, "", &mut problems);
    drop_unknown_keys(&mut value, &known, "");
    for _ in 0..MAX_TYPE_PROBLEMS {
        match serde_path_to_error::deserialize::<_, T>(value.clone()) {
            Ok(parsed) => return (Some(parsed), problems),
            Err(e) => {
                problems.push(format!("{}: {}", e.path(), e.inner()));
                if !replace_with_default(&mut value, &known, e.path()) {
                    break;
                }
            }
        }
    }
    (None, problems)
}

/// Replaces the value at `path` in `value` by the one at the same path in `known`; false when
/// either has nothing there.
fn replace_with_default(
    value: &mut serde_json::Value,
    known: &serde_json::Value,
    path: &serde_path_to_error::Path,
) -> bool {
    use serde_path_to_error::Segment;
    let (mut at, mut default) = (value, known);
    for segment in path {
        let next = match segment {
            Segment::Map { key } => at.get_mut(key.as_str()).zip(default.get(key.as_str())),
            Segment::Seq { index } => at.get_mut(*index).zip(default.get(*index)),
            Segment::Enum { .. } | Segment::Unknown => None,
        };
        let Some((v, d)) = next else {
            return false;
        };
        (at, default) = (v, d);
    }
    if at == default {
        return false; // the default itself does not parse: replacing changes nothing
    }
    *at = default.clone();
    true
}

/// Removes from `value` the keys [`unknown_keys`] reports.
fn drop_unknown_keys(value: &mut serde_json::Value, known: &serde_json::Value, path: &str) {
    if FREE_FORM.contains(&path) {
        return;
    }
    if let (Some(v), Some(k)) = (value.as_object_mut(), known.as_object()) {
        v.retain(|key, _| k.contains_key(key));
        for (key, child) in v.iter_mut() {
            let child_path = if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            };
            if let Some(known_child) = k.get(key) {
                drop_unknown_keys(child, known_child, &child_path);
            }
        }
    }
}

/// Maps whose keys are free-form (librdkafka properties): any key is accepted.
const FREE_FORM: &[&str] = &[
    "kafka.properties",
    "kafka.consumer_properties",
    "kafka.producer_properties",
];

/// Collects the key paths present in `value` but not in `known`. Free-form maps (`kafka.properties`) accept any key.
fn unknown_keys(
    value: &serde_json::Value,
    known: &serde_json::Value,
    path: &str,
    out: &mut Vec<String>,
) {
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

    fn bus(toml_text: &str) -> Result<BusConfig, ConfigError> {
        let cfg: BusConfig = parse_checked(layered_toml("", toml_text)?)?;
        let mut p = Vec::new();
        cfg.problems(&mut p);
        ConfigError::check(p)?;
        Ok(cfg)
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
        let value = layered_value("[kafka]\nbrokers = \"default:0\"\n", Some(&path), env).unwrap();
        let cfg: BusConfig = parse_checked(value).unwrap();
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
        let value = layered_value("", None, env).unwrap();
        let cfg: BusConfig = parse_checked(value).unwrap();
        assert_eq!(cfg.kafka.properties["group.instance.id"], "pod-1");
        assert_eq!(
            cfg.kafka.properties["linger.ms"], "5",
            "numbers stay strings"
        );
    }

    #[test]
    fn every_unknown_key_is_reported_at_once() {
        let err = bus("[kafka]\nbrokerz = \"x\"\n[topics]\nraww = \"y\"\n[kafka.properties]\n\"any.name\" = \"1\"\n")
            .unwrap_err();
        let text = err.to_string();
        assert_eq!(err.problems.len(), 2, "{text}");
        assert!(text.contains("kafka.brokerz: unknown key"), "{text}");
        assert!(text.contains("topics.raww: unknown key"), "{text}");
    }

    #[test]
    fn semantic_problems_are_listed_together() {
        let err = bus(
            "[topics]\npartitions = 0\nclean = \"clickpath.clicks.raw\"\n[runtime]\nmax_batch = 0\ninput_buffer_kbytes = 0\n",
        )
        .unwrap_err();
        let text = err.to_string();
        assert_eq!(err.problems.len(), 4, "{text}");
        assert!(
            text.contains("topics.clean: same topic as topics.raw"),
            "{text}"
        );
        assert!(text.contains("runtime.input_buffer_kbytes"), "{text}");
    }

    #[test]
    fn wrong_types_name_their_key() {
        let err = bus("[runtime]\nmax_batch = \"many\"\n").unwrap_err();
        assert!(err.to_string().contains("runtime.max_batch"), "{err}");
    }

    #[test]
    fn missing_file_is_a_clear_error() {
        let err =
            layered_value("", Some(Path::new("/nonexistent/c.toml")), Vec::new()).unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
    }
}
