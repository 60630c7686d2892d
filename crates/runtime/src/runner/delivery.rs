//! Making batches durable without transactions: every output produced and acknowledged, then the input
//! offsets stored (librdkafka's auto-commit commits them).

use crate::inputs::BatchOffsets;
use crate::kafka::StageContext;
use crate::metrics::{Metrics, StageTopic};
use crate::stage::Output;
use futures::FutureExt;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::future_producer::OwnedDeliveryResult;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::time::{Duration, Instant};

/// A record handed to the producer, resolving to whether the broker acknowledged it.
pub(super) type Ack =
    futures::future::Map<DeliveryFuture, fn(DeliveryOutcome) -> anyhow::Result<()>>;

/// What a [`DeliveryFuture`] resolves to.
type DeliveryOutcome = Result<OwnedDeliveryResult, futures::channel::oneshot::Canceled>;

fn acknowledged(outcome: DeliveryOutcome) -> anyhow::Result<()> {
    match outcome {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((e, _))) => anyhow::bail!("delivery failed: {e}"),
        Err(_) => anyhow::bail!("delivery future cancelled (producer dropped)"),
    }
}

/// Produces every output and waits until each one is acknowledged by the broker.
pub fn deliver(
    producer: &FutureProducer,
    outputs: Vec<Output>,
    stage: &str,
    metrics: &Metrics,
) -> anyhow::Result<()> {
    let mut acks = Acks {
        futures: produce(producer, outputs, stage, metrics)?,
        done: 0,
    };
    acks.wait(stage, metrics)
}

/// Hands every output to the producer without waiting for the broker, and counts it in
/// `records_out`. A record that is then not delivered fails its [`Ack`]: at-least-once the stage
/// stops; exactly-once its transaction aborts and is done again (counted again).
pub(super) fn produce(
    producer: &FutureProducer,
    outputs: Vec<Output>,
    stage: &str,
    metrics: &Metrics,
) -> anyhow::Result<Vec<Ack>> {
    let mut acks = Vec::with_capacity(outputs.len());
    let mut per_topic: BTreeMap<&str, u64> = BTreeMap::new();
    for out in &outputs {
        let mut headers =
            OwnedHeaders::new_with_capacity(out.copied_headers.len() + 1 + out.headers.len());
        for (k, v) in &out.copied_headers {
            headers = headers.insert(Header {
                key: k,
                value: v.as_deref(),
            });
        }
        headers = headers.insert(Header {
            key: "clickpath.stage",
            value: Some(stage),
        });
        for (k, v) in &out.headers {
            headers = headers.insert(Header {
                key: k,
                value: Some(v.as_str()),
            });
        }
        let mut record = FutureRecord::to(&out.topic).headers(headers);
        if !out.keyless {
            record = record.key(&out.key);
        }
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
                    acks.push(fut.map(acknowledged as fn(DeliveryOutcome) -> _));
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
    Ok(acks)
}

/// Acknowledgements awaited in the order the records were sent.
struct Acks<F> {
    futures: Vec<F>,
    /// How many of the first `futures` are known to be acknowledged.
    done: usize,
}

impl<F> Default for Acks<F> {
    fn default() -> Self {
        Acks {
            futures: Vec::new(),
            done: 0,
        }
    }
}

impl<F: Future<Output = anyhow::Result<()>> + Unpin> Acks<F> {
    /// Whether every record is acknowledged, without waiting; an error if one failed. Each
    /// future is polled until it is ready and never after.
    fn ready(&mut self, stage: &str, metrics: &Metrics) -> anyhow::Result<bool> {
        while let Some(f) = self.futures.get_mut(self.done) {
            match f.now_or_never() {
                Some(result) => {
                    self.done += 1;
                    result.inspect_err(|_| metrics.error(stage, "delivery"))?;
                }
                None => return Ok(false),
            }
        }
        Ok(true)
    }

    /// Waits until every record is acknowledged; an error if one failed.
    fn wait(&mut self, stage: &str, metrics: &Metrics) -> anyhow::Result<()> {
        while let Some(f) = self.futures.get_mut(self.done) {
            self.done += 1;
            futures::executor::block_on(f).inspect_err(|_| metrics.error(stage, "delivery"))?;
        }
        Ok(())
    }
}

/// The batches sent between two commits, on their way to being durable: outputs, then the state
/// changes taken when the commit began, then the input offsets.
struct Epoch<F> {
    outputs: Acks<F>,
    /// Written once every output is acknowledged.
    changes: Vec<Output>,
    offsets: BatchOffsets,
}

/// At-least-once: outputs sent but not known to be delivered yet, and the input offsets they
/// cover. Batches are sent as they are processed; every `runtime.commit_interval_ms` the batches
/// since the last commit are closed into an epoch ([`InFlight::close`]) that becomes durable in
/// three steps, each waiting for the one before: its outputs acknowledged, then its state changes
/// produced and acknowledged, then its offsets stored. The run loop checks between batches whether
/// the oldest epoch's outputs are acknowledged ([`InFlight::advance`]) instead of stopping for
/// them: a slow acknowledgement delays the commit, not the next events. The last two steps run
/// together, waiting: state changes are never in flight across a poll, so a partition revoked in
/// it has none that could land after its new owner restored, and offsets are stored as soon as
/// the state they match is durable.
pub(super) struct InFlight<F = Ack> {
    /// Outputs of the batches since the last commit.
    current: Acks<F>,
    /// The next offset of every input partition read since the last commit.
    offsets: BatchOffsets,
    /// When the first batch since the last commit was sent.
    since: Option<Instant>,
    /// Closed epochs, oldest first; they become durable in this order.
    pending: VecDeque<Epoch<F>>,
}

impl<F> Default for InFlight<F> {
    fn default() -> Self {
        InFlight {
            current: Acks::default(),
            offsets: BatchOffsets::new(),
            since: None,
            pending: VecDeque::new(),
        }
    }
}

impl InFlight<Ack> {
    /// Hands every output to the producer (see [`produce`]) as part of the current epoch.
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
        let acks = produce(producer, outputs, stage, metrics)?;
        self.sent(acks);
        Ok(())
    }
}

impl<F: Future<Output = anyhow::Result<()>> + Unpin> InFlight<F> {
    /// Adds records handed to the producer to the current epoch.
    fn sent(&mut self, acks: Vec<F>) {
        self.since.get_or_insert_with(Instant::now);
        self.current.futures.extend(acks);
    }

    /// Whether the oldest batch not committed yet was sent `interval` ago or longer.
    pub(super) fn due(&self, interval: Duration) -> bool {
        self.since.is_some_and(|t| t.elapsed() >= interval)
    }

    /// Notes a processed batch's next offsets (from now on, its outputs are waited for).
    pub(super) fn processed(&mut self, offsets: &BatchOffsets) {
        self.offsets.overwrite_with(offsets);
        self.since.get_or_insert_with(Instant::now);
    }

    /// Closed epochs not durable yet.
    pub(super) fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Closes the batches since the last commit into an epoch with the stage's state `changes`,
    /// taken now (they are what those batches made of the state).
    pub(super) fn close(&mut self, changes: Vec<Output>) {
        self.since = None;
        let epoch = Epoch {
            outputs: std::mem::take(&mut self.current),
            changes,
            offsets: std::mem::take(&mut self.offsets),
        };
        self.pending.push_back(epoch);
    }

    /// Moves the epochs along, oldest first: once an epoch's outputs are acknowledged its state
    /// changes are sent (`send`) and waited for, then its offsets stored (`store`). Waits for
    /// outputs only while more than `keep` epochs are pending: `keep` 0 makes everything closed
    /// durable. An error if a record was not delivered.
    pub(super) fn advance(
        &mut self,
        keep: usize,
        mut send: impl FnMut(Vec<Output>) -> anyhow::Result<Vec<F>>,
        mut store: impl FnMut(&BatchOffsets),
        stage: &str,
        metrics: &Metrics,
    ) -> anyhow::Result<()> {
        loop {
            let wait = self.pending.len() > keep;
            let Some(epoch) = self.pending.front_mut() else {
                return Ok(());
            };
            if wait {
                epoch.outputs.wait(stage, metrics)?;
            } else if !epoch.outputs.ready(stage, metrics)? {
                return Ok(());
            }
            let mut state = Acks {
                futures: send(std::mem::take(&mut epoch.changes))?,
                done: 0,
            };
            state.wait(stage, metrics)?;
            store(&epoch.offsets);
            self.pending.pop_front();
        }
    }

    /// Partitions revoked: their offsets are not stored and their state changes not written
    /// (none is in flight: see [`InFlight`]); their new owner restores the state of their last
    /// commit and processes again what came after it.
    pub(super) fn forget(&mut self, tps: &[(String, i32)], partitions: &[i32]) {
        self.offsets.forget(tps);
        for epoch in &mut self.pending {
            epoch.offsets.forget(tps);
            epoch
                .changes
                .retain(|c| c.partition.is_none_or(|p| !partitions.contains(&p)));
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use futures::channel::oneshot;
    use std::cell::RefCell;

    type Reply = anyhow::Result<()>;
    type TestAck = futures::future::Map<
        oneshot::Receiver<Reply>,
        fn(Result<Reply, oneshot::Canceled>) -> Reply,
    >;

    fn cancelled(r: Result<Reply, oneshot::Canceled>) -> Reply {
        r.unwrap_or_else(|_| anyhow::bail!("cancelled"))
    }

    /// `n` records handed to a fake producer: the senders answer for the broker.
    fn records(n: usize) -> (Vec<oneshot::Sender<Reply>>, Vec<TestAck>) {
        (0..n)
            .map(|_| {
                let (tx, rx) = oneshot::channel();
                (tx, rx.map(cancelled as fn(_) -> _))
            })
            .unzip()
    }

    fn change(partition: i32) -> Output {
        Output {
            topic: "changelog".into(),
            key: format!("k{partition}").into_bytes(),
            partition: Some(partition),
            ..Output::default()
        }
    }

    fn offsets(next: i64) -> BatchOffsets {
        let mut o = BatchOffsets::new();
        o.set("in", 0, next);
        o.set("in", 1, next);
        o
    }

    /// What the pipeline did, in order: the state changes it wrote (their partitions) and the
    /// offsets it stored; `state_fails` makes the broker refuse state changes.
    #[derive(Default)]
    struct Log {
        events: Vec<String>,
        state_fails: bool,
    }

    fn advance(f: &mut InFlight<TestAck>, keep: usize, log: &RefCell<Log>) -> anyhow::Result<()> {
        let metrics = Metrics::new();
        f.advance(
            keep,
            |changes| {
                let (tx, acks) = records(changes.len());
                let fails = log.borrow().state_fails;
                for t in tx {
                    let _ = t.send(if fails {
                        Err(anyhow::anyhow!("state refused"))
                    } else {
                        Ok(())
                    });
                }
                let ps: Vec<String> = changes
                    .iter()
                    .map(|c| c.partition.unwrap().to_string())
                    .collect();
                log.borrow_mut()
                    .events
                    .push(format!("state {}", ps.join(",")));
                Ok(acks)
            },
            |o| {
                let stored: Vec<String> =
                    o.iter().map(|(_, p, next)| format!("{p}@{next}")).collect();
                log.borrow_mut()
                    .events
                    .push(format!("offsets {}", stored.join(",")));
            },
            "test",
            &metrics,
        )
    }

    fn events(log: &RefCell<Log>) -> Vec<String> {
        log.borrow().events.clone()
    }

    #[test]
    fn state_waits_for_its_outputs_and_offsets_for_the_state() {
        let log = RefCell::new(Log::default());
        let mut f = InFlight::default();
        let (outputs, acks) = records(2);
        f.sent(acks);
        f.processed(&offsets(10));
        f.close(vec![change(0), change(1)]);
        advance(&mut f, usize::MAX, &log).unwrap();
        assert!(events(&log).is_empty(), "no output acknowledged yet");
        let mut outputs = outputs.into_iter();
        outputs.next().unwrap().send(Ok(())).unwrap();
        advance(&mut f, usize::MAX, &log).unwrap();
        assert!(events(&log).is_empty(), "one output still unacknowledged");
        outputs.next().unwrap().send(Ok(())).unwrap();
        advance(&mut f, usize::MAX, &log).unwrap();
        assert_eq!(events(&log), ["state 0,1", "offsets 0@10,1@10"]);
        assert_eq!(f.pending(), 0);
        // State refused: no offsets stored.
        let log = RefCell::new(Log {
            state_fails: true,
            ..Log::default()
        });
        let (outputs, acks) = records(1);
        f.sent(acks);
        f.processed(&offsets(20));
        f.close(vec![change(0)]);
        outputs.into_iter().for_each(|a| a.send(Ok(())).unwrap());
        let err = advance(&mut f, usize::MAX, &log).unwrap_err();
        assert!(err.to_string().contains("state refused"), "{err}");
        assert_eq!(events(&log), ["state 0"]);
    }

    #[test]
    fn epochs_become_durable_in_order() {
        let log = RefCell::new(Log::default());
        let mut f = InFlight::default();
        let (first, acks) = records(1);
        f.sent(acks);
        f.processed(&offsets(10));
        f.close(vec![change(0)]);
        let (second, acks) = records(1);
        f.sent(acks);
        f.processed(&offsets(20));
        f.close(vec![change(1)]);
        // The second epoch's output is acknowledged first: nothing may overtake the first epoch.
        second.into_iter().for_each(|a| a.send(Ok(())).unwrap());
        advance(&mut f, usize::MAX, &log).unwrap();
        assert!(events(&log).is_empty());
        first.into_iter().for_each(|a| a.send(Ok(())).unwrap());
        advance(&mut f, usize::MAX, &log).unwrap();
        assert_eq!(
            events(&log),
            [
                "state 0",
                "offsets 0@10,1@10",
                "state 1",
                "offsets 0@20,1@20"
            ]
        );
    }

    #[test]
    fn more_epochs_than_kept_are_waited_for() {
        let log = RefCell::new(Log::default());
        let mut f = InFlight::default();
        let mut answers = Vec::new();
        for next in [10, 20, 30] {
            let (tx, acks) = records(1);
            answers.extend(tx);
            f.sent(acks);
            f.processed(&offsets(next));
            f.close(Vec::new());
        }
        let mut answers = answers.into_iter();
        answers.next().unwrap().send(Ok(())).unwrap();
        // Keeping two: the oldest, acknowledged, becomes durable; the others wait for the broker.
        advance(&mut f, 2, &log).unwrap();
        assert_eq!((f.pending(), events(&log).len()), (2, 2));
        // Keeping none: waits until the broker has answered (later, from another thread).
        let broker = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            answers.for_each(|a| a.send(Ok(())).unwrap());
        });
        advance(&mut f, 0, &log).unwrap();
        broker.join().unwrap();
        let stored: Vec<String> = events(&log)
            .into_iter()
            .filter(|e| e.starts_with("offsets"))
            .collect();
        assert_eq!(f.pending(), 0);
        assert_eq!(
            stored,
            [
                "offsets 0@10,1@10",
                "offsets 0@20,1@20",
                "offsets 0@30,1@30"
            ]
        );
    }

    #[test]
    fn a_failed_delivery_stops_the_commit() {
        let log = RefCell::new(Log::default());
        let mut f = InFlight::default();
        let (tx, acks) = records(2);
        f.sent(acks);
        f.processed(&offsets(10));
        f.close(vec![change(0)]);
        let mut tx = tx.into_iter();
        tx.next().unwrap().send(Ok(())).unwrap();
        tx.next()
            .unwrap()
            .send(Err(anyhow::anyhow!("broker said no")))
            .unwrap();
        let err = advance(&mut f, 0, &log).unwrap_err();
        assert!(err.to_string().contains("broker said no"), "{err}");
        assert!(events(&log).is_empty());
    }

    #[test]
    fn revoked_partitions_lose_their_unwritten_changes_and_offsets() {
        let log = RefCell::new(Log::default());
        let mut f = InFlight::default();
        let (tx, acks) = records(1);
        f.sent(acks);
        f.processed(&offsets(10));
        f.close(vec![change(0), change(1)]);
        f.processed(&offsets(20));
        f.forget(&[("in".to_string(), 1)], &[1]);
        tx.into_iter().for_each(|a| a.send(Ok(())).unwrap());
        advance(&mut f, usize::MAX, &log).unwrap();
        assert_eq!(events(&log), ["state 0", "offsets 0@10"]);
        // The batch after the epoch keeps partition 0 only too.
        f.close(Vec::new());
        advance(&mut f, 0, &log).unwrap();
        assert_eq!(events(&log)[3], "offsets 0@20");
    }
}
