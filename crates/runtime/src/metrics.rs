//! Prometheus metrics of every stage, one registry per process.
//!
//! Names follow Prometheus conventions (base units, `_total` counters); labels are low-cardinality only
//! (stage, topic, partition, kind), never a user id. Counters are bumped once per batch, not per record.
//!
//! | metric | type | labels | meaning |
//! |---|---|---|---|
//! | `clickpath_records_in_total` | counter | stage, topic | records read from an input topic |
//! | `clickpath_records_out_total` | counter | stage, topic | records produced to an output topic |
//! | `clickpath_dead_letters_total` | counter | stage, kind | records sent to the dead-letter topic |
//! | `clickpath_errors_total` | counter | stage, kind | errors (delivery, kafka, fatal) |
//! | `clickpath_batch_processing_seconds` | histogram | stage | time to process a batch and deliver its outputs |
//! | `clickpath_batch_records` | histogram | stage | records per batch |
//! | `clickpath_processing_latency_seconds` | histogram | stage | a record's time from poll to its outputs being sent (exactly-once: committed; at-least-once acknowledges them at the next commit, `runtime.commit_interval_ms`) |
//! | `clickpath_event_latency_seconds` | histogram | stage | from an input record's timestamp to its outputs being sent (exactly-once: committed) |
//! | `clickpath_model_inference_seconds` | histogram | stage | one model inference call (scorer) |
//! | `clickpath_model_batch_events` | histogram | stage | events per model inference call (scorer micro-batches; was `clickpath_model_batch_size`) |
//! | `clickpath_model_reloads_total` | counter | stage, kind | hot-swap attempts of the scorer's model (`ok`, `failed`) |
//! | `clickpath_model_reload_failed` | gauge | stage | 1 while the last model reload failed (the old model runs) |
//! | `clickpath_model_device_fallback` | gauge | stage | 1 while the scorer runs on the CPU because its configured GPU is not usable (`scorer.device_fallback = "cpu"`) |
//! | `clickpath_state_entries` | gauge | stage | entries of in-memory state |
//! | `clickpath_consumer_lag_records` | gauge | stage, topic, partition | consumer lag |
//! | `clickpath_assigned_partitions` | gauge | stage | partitions assigned to this instance |
//! | `clickpath_stalled_partitions` | gauge | stage | assigned input partitions with records waiting and nothing consumed for `runtime.stall_after_ms` |
//! | `clickpath_restore_progress_ratio` | gauge | stage, topic, partition | fraction of a changelog partition restored (0..1) |
//! | `clickpath_build_info` | gauge | version | always 1: which clickpath version the process runs |
//!
//! deploy/grafana/dashboards/clickpath.json charts these names; scripts/validate-deploy.sh checks that
//! every name it queries is registered here.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

/// Labels `stage`, `topic`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageTopic {
    /// Stage name.
    pub stage: String,
    /// Topic name.
    pub topic: String,
}

/// Labels of `clickpath_build_info`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    /// The workspace version (`CARGO_PKG_VERSION`).
    version: String,
}

/// Labels `stage`, `kind`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageKind {
    /// Stage name.
    pub stage: String,
    /// Error kind, e.g. `wrong_magic`, `bad_time`.
    pub kind: String,
}

/// Labels `stage`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabel {
    /// Stage name.
    pub stage: String,
}

/// Labels `stage`, `topic`, `partition`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StagePartition {
    /// Stage name.
    pub stage: String,
    /// Topic name.
    pub topic: String,
    /// Partition number.
    pub partition: i32,
}

fn latency_histogram() -> Histogram {
    // 10 µs .. ~20 s
    Histogram::new(exponential_buckets(1e-5, 2.0, 22))
}

fn event_latency_histogram() -> Histogram {
    // 1 ms .. ~35 min: event-to-output latency includes producer-side delay and consumer lag, so it
    // spans far more than in-process time does.
    Histogram::new(exponential_buckets(1e-3, 2.0, 22))
}

fn size_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 16))
}

/// The metric families every stage reports into.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
    /// Records read, by stage and topic.
    pub records_in: Family<StageTopic, Counter>,
    /// Records produced, by stage and topic.
    pub records_out: Family<StageTopic, Counter>,
    /// Records sent to the dead-letter topic, by stage and kind.
    pub dead_letters: Family<StageKind, Counter>,
    /// Errors, by stage and kind (delivery, kafka, fatal).
    pub errors: Family<StageKind, Counter>,
    /// Time to process and deliver one batch.
    pub batch_seconds: Family<StageLabel, Histogram, fn() -> Histogram>,
    /// Records per batch.
    pub batch_records: Family<StageLabel, Histogram, fn() -> Histogram>,
    /// Per record: from poll to its outputs being sent (exactly-once: committed), in process.
    pub processing_latency: Family<StageLabel, Histogram, fn() -> Histogram>,
    /// Per record: from the input record's timestamp to its outputs being sent (exactly-once: committed).
    pub event_latency: Family<StageLabel, Histogram, fn() -> Histogram>,
    /// One model inference call.
    pub model_inference: Family<StageLabel, Histogram, fn() -> Histogram>,
    /// Events per model inference call.
    pub model_batch_size: Family<StageLabel, Histogram, fn() -> Histogram>,
    /// Model hot-swap attempts, by outcome.
    pub model_reloads: Family<StageKind, Counter>,
    /// 1 while the last model reload failed.
    pub model_reload_failed: Family<StageLabel, Gauge>,
    /// 1 while the scorer runs on the CPU because its configured device is not usable.
    pub model_device_fallback: Family<StageLabel, Gauge>,
    /// Fraction (0..1) of a changelog partition restored after it was assigned.
    pub restore_progress: Family<StagePartition, Gauge<f64, AtomicU64>>,
    /// Entries of in-memory state (users, ids).
    pub state_entries: Family<StageLabel, Gauge>,
    /// Consumer lag per partition, from librdkafka statistics.
    pub consumer_lag: Family<StagePartition, Gauge>,
    /// Partitions currently assigned.
    pub assigned_partitions: Family<StageLabel, Gauge>,
    /// Assigned partitions with records waiting and no progress for `runtime.stall_after_ms`.
    pub stalled_partitions: Family<StageLabel, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every family.
    pub fn new() -> Self {
        let mut r = Registry::default();
        let records_in = Family::<StageTopic, Counter>::default();
        let records_out = Family::<StageTopic, Counter>::default();
        let dead_letters = Family::<StageKind, Counter>::default();
        let errors = Family::<StageKind, Counter>::default();
        let batch_seconds =
            Family::<StageLabel, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram as fn() -> Histogram,
            );
        let batch_records =
            Family::<StageLabel, Histogram, fn() -> Histogram>::new_with_constructor(
                size_histogram as fn() -> Histogram,
            );
        let processing_latency =
            Family::<StageLabel, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram as fn() -> Histogram,
            );
        let event_latency =
            Family::<StageLabel, Histogram, fn() -> Histogram>::new_with_constructor(
                event_latency_histogram as fn() -> Histogram,
            );
        let model_inference =
            Family::<StageLabel, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram as fn() -> Histogram,
            );
        let model_batch_size =
            Family::<StageLabel, Histogram, fn() -> Histogram>::new_with_constructor(
                size_histogram as fn() -> Histogram,
            );
        let model_reloads = Family::<StageKind, Counter>::default();
        let model_reload_failed = Family::<StageLabel, Gauge>::default();
        let model_device_fallback = Family::<StageLabel, Gauge>::default();
        let restore_progress = Family::<StagePartition, Gauge<f64, AtomicU64>>::default();
        let state_entries = Family::<StageLabel, Gauge>::default();
        let consumer_lag = Family::<StagePartition, Gauge>::default();
        let assigned_partitions = Family::<StageLabel, Gauge>::default();
        let stalled_partitions = Family::<StageLabel, Gauge>::default();
        r.register(
            "clickpath_records_in",
            "Records read from an input topic",
            records_in.clone(),
        );
        r.register(
            "clickpath_records_out",
            "Records produced to an output topic",
            records_out.clone(),
        );
        r.register(
            "clickpath_dead_letters",
            "Records sent to the dead-letter topic",
            dead_letters.clone(),
        );
        r.register("clickpath_errors", "Errors by kind", errors.clone());
        r.register_with_unit(
            "clickpath_batch_processing",
            "Time to process a batch and deliver its outputs",
            Unit::Seconds,
            batch_seconds.clone(),
        );
        r.register(
            "clickpath_batch_records",
            "Records per batch",
            batch_records.clone(),
        );
        r.register_with_unit(
            "clickpath_processing_latency",
            "Per record, from poll to its outputs being sent (exactly-once: committed)",
            Unit::Seconds,
            processing_latency.clone(),
        );
        r.register_with_unit(
            "clickpath_event_latency",
            "Per record, from the input record's timestamp to its outputs being sent (exactly-once: committed)",
            Unit::Seconds,
            event_latency.clone(),
        );
        r.register_with_unit(
            "clickpath_model_inference",
            "Time of one model inference call",
            Unit::Seconds,
            model_inference.clone(),
        );
        r.register(
            "clickpath_model_batch_events",
            "Events per model inference call",
            model_batch_size.clone(),
        );
        r.register(
            "clickpath_model_reloads",
            "Model hot-swap attempts by outcome",
            model_reloads.clone(),
        );
        r.register(
            "clickpath_model_reload_failed",
            "1 while the last model reload failed and the previous model still runs",
            model_reload_failed.clone(),
        );
        r.register(
            "clickpath_model_device_fallback",
            "1 while the scorer runs on the CPU because its configured GPU is not usable",
            model_device_fallback.clone(),
        );
        // prometheus-client's Unit::Ratios would render `_ratios`; Prometheus's convention is `_ratio`.
        r.register(
            "clickpath_restore_progress_ratio",
            "Fraction of a changelog partition restored after assignment (1 when done)",
            restore_progress.clone(),
        );
        r.register(
            "clickpath_state_entries",
            "Entries of in-memory state",
            state_entries.clone(),
        );
        r.register(
            "clickpath_consumer_lag_records",
            "Consumer lag per partition",
            consumer_lag.clone(),
        );
        r.register(
            "clickpath_assigned_partitions",
            "Partitions assigned to this instance",
            assigned_partitions.clone(),
        );
        r.register(
            "clickpath_stalled_partitions",
            "Assigned input partitions with records waiting and nothing consumed for runtime.stall_after_ms",
            stalled_partitions.clone(),
        );
        // The Prometheus idiom for build metadata: a gauge of 1 whose labels say what runs.
        let build_info = Family::<BuildLabels, Gauge>::default();
        build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").to_string(),
            })
            .set(1);
        r.register(
            "clickpath_build_info",
            "Always 1; the labels say which clickpath version runs",
            build_info,
        );
        Metrics {
            registry: Arc::new(Mutex::new(r)),
            records_in,
            records_out,
            dead_letters,
            errors,
            batch_seconds,
            batch_records,
            processing_latency,
            event_latency,
            model_inference,
            model_batch_size,
            model_reloads,
            model_reload_failed,
            model_device_fallback,
            restore_progress,
            state_entries,
            consumer_lag,
            assigned_partitions,
            stalled_partitions,
        }
    }

    /// Counts one error of `kind` (`delivery`, `kafka`, `fatal`, `transaction_aborted`, ...) in `stage`.
    pub fn error(&self, stage: &str, kind: &str) {
        self.errors
            .get_or_create(&StageKind {
                stage: stage.into(),
                kind: kind.into(),
            })
            .inc();
    }

    /// Counts one record of `stage` sent to the dead-letter topic for `kind`.
    pub fn dead_letter(&self, stage: &str, kind: &str) {
        self.dead_letters
            .get_or_create(&StageKind {
                stage: stage.into(),
                kind: kind.into(),
            })
            .inc();
    }

    /// The OpenMetrics text exposition of every family.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }

    /// Observes one batch's per-record latencies, in seconds, for `stage`: `processing` (poll to
    /// acknowledgement) and `event` (record timestamp to acknowledgement). Takes each family's lock once
    /// per batch, not once per record. Negative or non-finite values (clock skew between the producer
    /// and this host) are skipped rather than recorded as zero.
    pub fn observe_latencies(
        &self,
        stage: &str,
        processing: impl IntoIterator<Item = f64>,
        event: impl IntoIterator<Item = f64>,
    ) {
        let label = StageLabel {
            stage: stage.into(),
        };
        {
            let h = self.processing_latency.get_or_create(&label);
            for v in processing
                .into_iter()
                .filter(|v| v.is_finite() && *v >= 0.0)
            {
                h.observe(v);
            }
        }
        let h = self.event_latency.get_or_create(&label);
        for v in event.into_iter().filter(|v| v.is_finite() && *v >= 0.0) {
            h.observe(v);
        }
    }

    /// Sets the restore progress of one changelog partition from records restored so far and the
    /// records to restore (end offset minus start offset). Nothing to restore counts as done (1.0).
    pub fn set_restore_progress(
        &self,
        stage: &str,
        topic: &str,
        partition: i32,
        restored: u64,
        total: u64,
    ) {
        let ratio = if total == 0 {
            1.0
        } else {
            (restored as f64 / total as f64).clamp(0.0, 1.0)
        };
        self.restore_progress
            .get_or_create(&StagePartition {
                stage: stage.into(),
                topic: topic.into(),
                partition,
            })
            .set(ratio);
    }

    /// Sum of `records_in` for one stage (used by the demo's progress line).
    pub fn records_in_total(&self, stage: &str, topic: &str) -> u64 {
        self.records_in
            .get_or_create(&StageTopic {
                stage: stage.into(),
                topic: topic.into(),
            })
            .get()
    }

    /// Sum of `records_out` for one stage and topic.
    pub fn records_out_total(&self, stage: &str, topic: &str) -> u64 {
        self.records_out
            .get_or_create(&StageTopic {
                stage: stage.into(),
                topic: topic.into(),
            })
            .get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_units_and_total_suffixes() {
        let m = Metrics::new();
        m.records_in
            .get_or_create(&StageTopic {
                stage: "cleaning".into(),
                topic: "t".into(),
            })
            .inc_by(5);
        m.batch_seconds
            .get_or_create(&StageLabel {
                stage: "cleaning".into(),
            })
            .observe(0.002);
        let text = m.encode();
        assert!(
            text.contains("clickpath_records_in_total{stage=\"cleaning\",topic=\"t\"} 5"),
            "{text}"
        );
        assert!(
            text.contains("clickpath_batch_processing_seconds_bucket"),
            "{text}"
        );
        assert_eq!(m.records_in_total("cleaning", "t"), 5);
        // Which build runs, from the first scrape.
        let build = format!(
            "clickpath_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        assert!(text.contains(&build), "{text}");
    }

    #[test]
    fn latency_histograms_count_valid_observations_only() {
        let m = Metrics::new();
        m.observe_latencies("scorer", [0.001, 0.002, -0.5], [1.5, f64::NAN, 3.0, 0.0]);
        let text = m.encode();
        assert!(
            text.contains("clickpath_processing_latency_seconds_count{stage=\"scorer\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("clickpath_event_latency_seconds_count{stage=\"scorer\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("clickpath_event_latency_seconds_sum{stage=\"scorer\"} 4.5"),
            "{text}"
        );
    }

    #[test]
    fn restore_progress_is_a_clamped_ratio() {
        let m = Metrics::new();
        m.set_restore_progress("sessionizer", "cl", 2, 25, 100);
        m.set_restore_progress("sessionizer", "cl", 3, 0, 0);
        m.set_restore_progress("sessionizer", "cl", 4, 150, 100);
        let text = m.encode();
        let line = |p: i32, v: &str| {
            format!(
                "clickpath_restore_progress_ratio{{stage=\"sessionizer\",topic=\"cl\",partition=\"{p}\"}} {v}"
            )
        };
        assert!(text.contains(&line(2, "0.25")), "{text}");
        assert!(text.contains(&line(3, "1.0")), "{text}");
        assert!(text.contains(&line(4, "1.0")), "{text}");
    }
}
