//! Making batches durable without transactions: every output produced and acknowledged, then the input
//! offsets stored (librdkafka's auto-commit commits them).

use crate::inputs::BatchOffsets;
use crate::kafka::StageContext;
use crate::metrics::{Metrics, StageTopic};
use crate::stage::Output;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Produces every output and waits until each one is acknowledged by the broker.
pub fn deliver(
    producer: &FutureProducer,
    outputs: Vec<Output>,
    stage: &str,
    metrics: &Metrics,
) -> anyhow::Result<()> {
    let mut sent = InFlight::default();
    sent.send(producer, outputs, stage, metrics)?;
    sent.settle(stage, metrics)
}

/// At-least-once: outputs sent but not known to be delivered yet, and the input offsets they
/// cover. Batches are sent as they are processed and made durable together every
/// `runtime.commit_interval_ms` ([`InFlight::settle`], then the offsets are stored): the loop does
/// not stop for the broker's acknowledgements after every batch.
#[derive(Default)]
pub(super) struct InFlight {
    deliveries: Vec<DeliveryFuture>,
    /// The next offset of every input partition read since the last commit.
    pub(super) offsets: BatchOffsets,
    /// When the first batch since the last commit was sent.
    since: Option<Instant>,
}

impl InFlight {
    /// Whether the oldest batch not made durable yet was sent `interval` ago or longer.
    pub(super) fn due(&self, interval: Duration) -> bool {
        self.since.is_some_and(|t| t.elapsed() >= interval)
    }

    /// Notes a processed batch's next offsets (from now on, its outputs are waited for).
    pub(super) fn processed(&mut self, offsets: &BatchOffsets) {
        self.offsets.overwrite_with(offsets);
        self.since.get_or_insert_with(Instant::now);
    }

    /// Hands every output to the producer without waiting for the broker, and counts it in
    /// `records_out`. A record that is then not delivered fails [`InFlight::settle`]: at-least-once
    /// the stage stops; exactly-once its transaction aborts and is done again (counted again).
    pub(super) fn send(
        &mut self,
        producer: &FutureProducer,
        outputs: Vec<Output>,
        stage: &str,
        metrics: &Metrics,
    ) -> anyhow::Result<()> {
        if outputs.is_empty() {
            return Ok(());
        }
        self.since.get_or_insert_with(Instant::now);
        self.deliveries.reserve(outputs.len());
        let mut per_topic: BTreeMap<&str, u64> = BTreeMap::new();
        for out in &outputs {
            let mut headers =
                OwnedHeaders::new_with_capacity(1 + out.headers.len()).insert(Header {
                    key: "clickpath.stage",
                    value: Some(stage),
                });
            for (k, v) in &out.headers {
                headers = headers.insert(Header {
                    key: k,
                    value: Some(v.as_str()),
                });
            }
            let mut record = FutureRecord::to(&out.topic).key(&out.key).headers(headers);
            // A tombstone has no value at all, which compaction removes.
            if !out.tombstone {
                record = record.payload(&out.payload);
            }
            if let Some(p) = out.partition {
                record = record.partition(p);
            }
            if out.topic.is_empty() {
                anyhow::bail!("stage {stage} emitted a record without a topic");
            }
            loop {
                match producer.send_result(record) {
                    Ok(fut) => {
                        self.deliveries.push(fut);
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                        // The local queue is full: let librdkafka drain it, then retry the same record.
                        record = r;
                        producer.poll(Duration::from_millis(10));
                    }
                    Err((e, _)) => anyhow::bail!("cannot produce to {}: {e}", out.topic),
                }
            }
            *per_topic.entry(out.topic.as_str()).or_default() += 1;
        }
        for (topic, n) in per_topic {
            metrics
                .records_out
                .get_or_create(&StageTopic {
                    stage: stage.into(),
                    topic: topic.into(),
                })
                .inc_by(n);
        }
        Ok(())
    }

    /// Waits until every output sent is acknowledged (an error if one was not) and starts afresh;
    /// the offsets are left for the caller to store.
    pub(super) fn settle(&mut self, stage: &str, metrics: &Metrics) -> anyhow::Result<()> {
        self.since = None;
        let pending = std::mem::take(&mut self.deliveries);
        let results = futures::executor::block_on(futures::future::join_all(pending));
        for r in results {
            match r {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => {
                    metrics.error(stage, "delivery");
                    anyhow::bail!("delivery failed: {e}");
                }
                Err(_) => anyhow::bail!("delivery future cancelled (producer dropped)"),
            }
        }
        Ok(())
    }
}

/// Stores the batch's next offsets for auto-commit; a partition revoked mid-batch is logged, not fatal.
pub(super) fn store_offsets(
    consumer: &BaseConsumer<StageContext>,
    next: &BatchOffsets,
    stage: &str,
) {
    if next.is_empty() {
        return;
    }
    let tpl = match next.to_list() {
        Ok(tpl) => tpl,
        Err(e) => {
            tracing::warn!(stage, error = %e, "Bad offset.");
            return;
        }
    };
    if let Err(e) = consumer.store_offsets(&tpl) {
        // Happens when a partition was revoked mid-batch; its new owner replays from the last commit.
        tracing::warn!(stage, error = %e, "Could not store offsets (partition revoked?).");
    }
}
