//! The stall check of the run loop: assigned partitions with records waiting and nothing consumed
//! ([`crate::stall`]), judged against end offsets read without transactions in the way.

use super::Run;
use super::transaction::committed_offset;
use crate::metrics::StageLabel;
use crate::stall::{PartitionEnds, StallWatch};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::topic_partition_list::Offset;
use std::time::{Duration, Instant};

impl Run<'_> {
    /// Judges partitions idle for `runtime.stall_after_ms` against their end offsets (when a check is due),
    /// and publishes the verdict: health board, metric, and one warning per partition when it stalls.
    pub(super) fn check_stalls(&self, watch: &mut StallWatch) {
        let now = Instant::now();
        if !watch.check_due(now) {
            return;
        }
        let lookup_timeout = Duration::from_secs(2);
        let consumer = self.consumer;
        let ends_client = match self.end_offsets_client() {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(stage = self.name, error = %e, "Cannot create the stall check's client.");
                return;
            }
        };
        let positions = consumer.position().ok();
        let newly = watch.check(now, |topic, partition| {
            let position = positions
                .as_ref()
                .and_then(|tpl| tpl.find_partition(topic, partition))
                .and_then(|e| match e.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                });
            let (committed, committed_error) = if position.is_some() {
                (None, None)
            } else {
                committed_offset(consumer, topic, partition, lookup_timeout)
            };
            let (low, high) = ends_client
                .fetch_watermarks(topic, partition, lookup_timeout)
                .ok()?;
            Some(PartitionEnds {
                position,
                committed,
                committed_error,
                low,
                high,
                fetch: consumer.context().fetch_info(topic, partition),
            })
        });
        for s in &newly {
            tracing::warn!(
                stage = self.name,
                topic = %s.topic,
                partition = s.partition,
                position = ?s.ends.position,
                committed = ?s.ends.committed,
                end = s.ends.high,
                idle_seconds = s.idle.as_secs_f64(),
                cause = %s.cause(),
                "Partition stalled: records are waiting but none was consumed; /healthz now fails."
            );
        }
        let stalled: Vec<String> = watch.stalled().iter().map(ToString::to_string).collect();
        self.env
            .metrics
            .stalled_partitions
            .get_or_create(&StageLabel {
                stage: self.name.into(),
            })
            .set(stalled.len() as i64);
        self.env.health.set_stalled(self.name, stalled);
    }

    /// The stall check's end-offset client ([`Run::end_offsets`]).
    fn end_offsets_client(&self) -> anyhow::Result<&BaseConsumer> {
        if let Some(c) = self.end_offsets.get() {
            return Ok(c);
        }
        let mut c = crate::kafka::consumer_client_config(&self.env.config);
        c.set("isolation.level", "read_uncommitted");
        let client: BaseConsumer = c.create()?;
        Ok(self.end_offsets.get_or_init(|| client))
    }
}
