//! Prometheus metrics of every stage, one registry per process.
//!
//! Names follow Prometheus conventions (base units, `_total` counters); labels are low-cardinality only
//! (stage, topic, partition, kind), never a user id. Counters are bumped once per batch, not per record.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use std::sync::{Arc, Mutex};

/// Labels `stage`, `topic`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageTopic {
    /// Stage name.
    pub stage: String,
    /// Topic name.
    pub topic: String,
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
    /// Entries of in-memory state (users, ids).
    pub state_entries: Family<StageLabel, Gauge>,
    /// Consumer lag per partition, from librdkafka statistics.
    pub consumer_lag: Family<StagePartition, Gauge>,
    /// Partitions currently assigned.
    pub assigned_partitions: Family<StageLabel, Gauge>,
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
        let state_entries = Family::<StageLabel, Gauge>::default();
        let consumer_lag = Family::<StagePartition, Gauge>::default();
        let assigned_partitions = Family::<StageLabel, Gauge>::default();
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
        Metrics {
            registry: Arc::new(Mutex::new(r)),
            records_in,
            records_out,
            dead_letters,
            errors,
            batch_seconds,
            batch_records,
            state_entries,
            consumer_lag,
            assigned_partitions,
        }
    }

    /// The OpenMetrics text exposition of every family.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
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
    }
}
