//! Exactly-once: the transactional producer, committing a batch's outputs with its input offsets in one
//! transaction, and rewinding the stage after a transaction failed. librdkafka's transactional calls can
//! block for good after a broker restart (confluentinc/librdkafka#5511), so each runs with a deadline.

use super::Run;
use super::delivery::{deliver, produce, store_offsets};
use crate::changelog::restore;
use crate::config::BusConfig;
use crate::inputs::Assignment;
use crate::inputs::BatchOffsets;
use crate::kafka::StageContext;
use crate::stage::Output;
use crate::stage::Stage;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use std::time::Duration;

/// A transactional producer for `stage`, its transactions initialised: this fences any earlier producer
/// with the same transactional id (a previous incarnation of this instance) and aborts its open transaction.
pub(super) fn transactional_producer(
    cfg: &BusConfig,
    stage: &str,
) -> anyhow::Result<FutureProducer> {
    let p: FutureProducer = transactional_producer_config(cfg, stage).create()?;
    init_transactions(&p, stage)?;
    Ok(p)
}

/// At-least-once: commits (one per `runtime.commit_interval_ms`) on their way to being durable
/// before the loop waits for the oldest: bounds what is in flight when the broker is slow.
const MAX_PENDING_EPOCHS: usize = 2;

/// How long a stage keeps asking for its producer id while the broker does not answer (a broker restart
/// that takes minutes, on a loaded machine or a large cluster) before it gives up and exits; below the
/// consumer's default `max.poll.interval.ms` (300 s), after which the group drops the member anyway.
const PRODUCER_INIT_WAIT: Duration = Duration::from_secs(240);

/// Beyond its timeout, how long the broker may take to abort a transaction left open (its check for timed
/// out transactions runs every 10 s by default).
const ABORT_SCAN_MARGIN: Duration = Duration::from_secs(15);

/// Initialises `producer`'s transactions, asking again while the error is not fatal (the transaction
/// coordinator away or still loading) for up to [`PRODUCER_INIT_WAIT`].
fn init_transactions(producer: &FutureProducer, stage: &str) -> rdkafka::error::KafkaResult<()> {
    let deadline = std::time::Instant::now() + PRODUCER_INIT_WAIT;
    loop {
        match producer.init_transactions(Duration::from_secs(60)) {
            Ok(()) => return Ok(()),
            Err(rdkafka::error::KafkaError::Transaction(e))
                if !e.is_fatal() && std::time::Instant::now() < deadline =>
            {
                tracing::warn!(stage, error = %e, "Transactional producer not initialised yet; asking again.");
                std::thread::sleep(Duration::from_secs(1));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Producer settings for exactly-once mode: a transactional id stable per stage instance.
fn transactional_producer_config(cfg: &BusConfig, stage: &str) -> rdkafka::ClientConfig {
    let mut c = crate::kafka::producer_config(cfg);
    let instance = if cfg.kafka.instance_id.trim().is_empty() {
        format!(
            "{}-{}",
            std::env::var("HOSTNAME").unwrap_or_else(|_| "host".into()),
            std::process::id()
        )
    } else {
        cfg.kafka.instance_id.trim().to_string()
    };
    c.set(
        "transactional.id",
        format!("{}.{stage}.{instance}", cfg.kafka.group_prefix),
    )
    .set(
        "transaction.timeout.ms",
        cfg.processing.transaction_timeout_ms.to_string(),
    )
    // librdkafka requires a message to time out no later than its transaction.
    .set(
        "message.timeout.ms",
        cfg.processing.transaction_timeout_ms.to_string(),
    );
    c
}

impl Run<'_> {
    /// After a failed transaction: aborts it, reads every owned input partition's committed offset, drops
    /// the stage's state of every owned partition and restores it from the changelog (the state of the last
    /// committed batch), and seeks every input partition back to that offset, so the aborted batch is
    /// processed again from scratch. The offsets are read before the changelog: a commit whose outcome the
    /// client did not learn (the broker went away) may still be completing, and the stable offset fetch
    /// waits for it, so state and offsets come from the same transactions.
    pub(super) fn rewind_after_abort<S: Stage>(
        &mut self,
        stage: &mut S,
        assigned: &Assignment,
        cause: &anyhow::Error,
    ) -> anyhow::Result<()> {
        let name = self.name;
        let timeout = Duration::from_secs(30);
        tracing::warn!(stage = name, error = %cause, "Transaction failed; aborting it and rewinding to the last commit.");
        self.env.metrics.error(name, "transaction_aborted");
        if std::mem::take(&mut self.producer_stuck) {
            tracing::error!(
                stage = name,
                "A transactional call of the producer never returned; abandoning it (its thread stays blocked) for a new one."
            );
        } else if let Err(e) = self.producer.abort_transaction(timeout) {
            // The coordinator may have ended the transaction already (timed out while the broker was away)
            // or fenced this epoch. Initialising a new producer below aborts whatever is still open for this
            // transactional id, so the stage carries on; only a failed initialisation stops it.
            tracing::warn!(stage = name, error = %e, "Abort failed; a new producer epoch ends the transaction instead.");
        }
        // A new producer epoch for the next transaction. A request of the aborted one may still be on its way
        // (retried across a broker restart, say): with the same epoch the broker would accept it after the
        // abort marker and open a transaction that nobody ends, which holds back the last stable offset of a
        // partition, or, for an offset commit, every read_committed consumer's committed-offset fetch of the
        // group (UNSTABLE_OFFSET_COMMIT), for good. Initialising a new producer with the same transactional
        // id bumps the epoch, aborts a transaction still open under the old one and fences its late
        // requests (what KIP-890 does per transaction). The old client goes first, so none of its retries is
        // still pending when the new epoch begins.
        let fresh: FutureProducer =
            transactional_producer_config(&self.env.config, name).create()?;
        drop(std::mem::replace(&mut self.producer, fresh));
        init_transactions(&self.producer, name).map_err(|e| {
                anyhow::anyhow!(
                    "stage {name}: transaction failed ({cause:#}); a new transactional producer could not \
                     be initialised to end it: {e}"
                )
            })?;
        let owned: Vec<(String, i32)> = self
            .consumer
            .assignment()?
            .elements()
            .iter()
            .map(|e| (e.topic().to_string(), e.partition()))
            .collect();
        self.committed = self.stable_committed(&owned)?;
        let ps: Vec<i32> = assigned.partitions().into_iter().collect();
        stage.on_revoke(&ps);
        if let Some(changelog) = self.changelog {
            let health = &self.env.health;
            restore(
                &self.env.config,
                changelog,
                &ps,
                stage,
                Some(&self.env.metrics),
                &|| health.beat(name),
            )?;
        }
        stage.on_assign(&ps);
        for (topic, partition) in &owned {
            let to = match self.committed.get(topic, *partition) {
                Some(o) => Offset::Offset(o),
                // Nothing committed yet: `auto.offset.reset = earliest`.
                None => Offset::Beginning,
            };
            self.consumer.seek(topic, *partition, to, timeout)?;
        }
        tracing::info!(stage = name, partitions = ?ps, "Rewound to the last committed batch.");
        Ok(())
    }

    /// The group's committed next offset of each of `tps` (none for a partition nothing was committed for).
    /// Under `read_committed`, librdkafka asks for stable offsets (KIP-447): while a transaction that
    /// commits offsets of these partitions is still open, the broker answers UNSTABLE_OFFSET_COMMIT and the
    /// client asks again, so the answer includes every transaction that will ever commit for them. Right after
    /// a broker restart the group coordinator may not answer for a while, and a partition can come back with
    /// an error of its own (still unstable when the client could not retry): both are asked again, for up
    /// to [`crate::changelog::BROKER_WAIT`] or the transaction timeout and a margin, whichever is longer (a
    /// dead owner's open transaction holds the answer until the broker aborts it), rather than taking the
    /// partition for one with nothing committed, which would rewind it to its beginning.
    pub(super) fn stable_committed(&self, tps: &[(String, i32)]) -> anyhow::Result<BatchOffsets> {
        let mut offsets = BatchOffsets::new();
        if tps.is_empty() {
            return Ok(offsets);
        }
        let mut tpl = TopicPartitionList::with_capacity(tps.len());
        for (topic, partition) in tps {
            tpl.add_partition(topic, *partition);
        }
        let transaction_timeout =
            Duration::from_millis(self.env.config.processing.transaction_timeout_ms);
        let wait = crate::changelog::BROKER_WAIT.max(transaction_timeout + ABORT_SCAN_MARGIN);
        let deadline = std::time::Instant::now() + wait;
        let committed = loop {
            let answer = self
                .consumer
                .committed_offsets(tpl.clone(), Duration::from_secs(30))
                .map_err(|e| e.to_string())
                .and_then(|c| match c.elements().iter().find(|e| e.error().is_err()) {
                    Some(e) => Err(format!(
                        "{}/{}: {}",
                        e.topic(),
                        e.partition(),
                        e.error().err().map(|e| e.to_string()).unwrap_or_default()
                    )),
                    None => Ok(c),
                });
            match answer {
                Ok(c) => break c,
                Err(e) if std::time::Instant::now() < deadline => {
                    tracing::warn!(stage = self.name, error = %e, "Committed offsets not known yet; asking again.");
                    std::thread::sleep(Duration::from_millis(500));
                }
                Err(e) => anyhow::bail!(
                    "stage {}: the group's committed offsets could not be read in {} s: {e}",
                    self.name,
                    wait.as_secs()
                ),
            }
        };
        for e in committed.elements() {
            if let Offset::Offset(o) = e.offset() {
                offsets.set(e.topic(), e.partition(), o);
            }
        }
        Ok(offsets)
    }

    /// Makes a batch durable: its outputs, its state changes and its input offsets. Exactly-once: all
    /// three in one transaction. At-least-once: the outputs are sent now, and every
    /// `runtime.commit_interval_ms` the batches sent since the last commit start on their way to
    /// being durable without stopping the loop ([`Run::commit_in_flight`]); `force` waits until
    /// they are.
    pub(super) fn commit_batch<S: Stage>(
        &mut self,
        stage: &mut S,
        mut outputs: Vec<Output>,
        next_offsets: &BatchOffsets,
        force: bool,
    ) -> anyhow::Result<()> {
        if !self.eos {
            self.in_flight
                .send(&self.producer, outputs, self.name, &self.env.metrics)?;
            self.in_flight.processed(next_offsets);
            if force || self.commit_due() {
                self.commit_in_flight(stage, force)?;
            }
            return Ok(());
        }
        outputs.extend(self.changelog_outputs(stage));
        if outputs.is_empty() && next_offsets.is_empty() {
            return Ok(());
        }
        // Every owned partition's offset, advanced by this batch's, even when the batch read nothing: the
        // offset commit is what ties the transaction to the group generation. A transaction without one (a
        // tick of an instance whose partitions already moved, unknown to it) would commit outputs and state
        // the partitions' new owner produces too.
        let mut offsets = self.committed.clone();
        offsets.overwrite_with(next_offsets);
        let timeout = Duration::from_secs(30);
        self.producer.begin_transaction()?;
        deliver(&self.producer, outputs, self.name, &self.env.metrics)?;
        if !offsets.is_empty() {
            // Every input topic's offsets, in the one transaction.
            let tpl = offsets.to_list()?;
            let group = self
                .consumer
                .group_metadata()
                .ok_or_else(|| anyhow::anyhow!("no consumer group metadata"))?;
            let producer = self.producer.clone();
            self.within(timeout, "send_offsets_to_transaction", move || {
                producer.send_offsets_to_transaction(&tpl, &group, timeout)
            })?;
        }
        // Defence in depth: a member that lost its assignment (its session timed out, the broker forgot
        // it) must not commit, as its partitions may already be another instance's. The broker fences a
        // stale member id or generation, but librdkafka clears the member id on UNKNOWN_MEMBER_ID and the
        // generation on ILLEGAL_GENERATION, and a transactional offset commit with both cleared is
        // accepted unchecked (the group coordinator keeps that for producers outside the group).
        // librdkafka marks the assignment lost only when it clears one outside a rebalance, where the
        // broker fences the commit anyway; inside a rebalance (the likelier place for both to be
        // cleared) it does not, so this does not close that hole (RELIABILITY.md). The stage rewinds,
        // and its next poll hands the loss to the rebalance handling.
        if self.consumer.assignment_lost() {
            anyhow::bail!(
                "stage {}: the consumer lost its partitions (its group membership ended) before the transaction \
                 committed; aborting it rather than committing for partitions that may have moved",
                self.name
            );
        }
        let producer = self.producer.clone();
        self.within(timeout, "commit_transaction", move || {
            producer.commit_transaction(timeout)
        })?;
        self.committed = offsets;
        Ok(())
    }

    /// At-least-once: whether the batches sent since the last commit are due to be made durable.
    pub(super) fn commit_due(&self) -> bool {
        !self.eos
            && self.in_flight.due(Duration::from_millis(
                self.env.config.runtime.commit_interval_ms,
            ))
    }

    /// At-least-once: closes the batches sent since the last commit into an epoch with the stage's
    /// state changes, taken now, and moves the pending epochs along ([`Run::advance_commits`]);
    /// `wait` makes every epoch durable before returning (shutdown). An epoch is durable in three
    /// steps: its outputs acknowledged, then its state changes produced and acknowledged, then its
    /// input offsets stored for librdkafka's auto-commit. Outputs go first: state acknowledged
    /// before an output that then fails would already hold events that are processed again from the
    /// uncommitted offsets, and cleaning would drop them as duplicates, never publishing them.
    pub(super) fn commit_in_flight<S: Stage>(
        &mut self,
        stage: &mut S,
        wait: bool,
    ) -> anyhow::Result<()> {
        let changes = self.changelog_outputs(stage);
        self.in_flight.close(changes);
        self.advance_commits(if wait { 0 } else { MAX_PENDING_EPOCHS })
    }

    /// At-least-once: moves pending epochs along without waiting for the broker, unless more than
    /// `keep` are pending; then it waits until only `keep` are.
    pub(super) fn advance_commits(&mut self, keep: usize) -> anyhow::Result<()> {
        if self.in_flight.pending() == 0 {
            return Ok(());
        }
        let (producer, consumer, name, metrics) =
            (&self.producer, self.consumer, self.name, &self.env.metrics);
        self.in_flight.advance(
            keep,
            |changes| produce(producer, changes, name, metrics),
            |offsets| store_offsets(consumer, offsets, name),
            name,
            metrics,
        )
    }

    /// The stage's state changes since the last call, as changelog records, leaving out those of
    /// partitions this instance does not own any more. Always asked, so stages refresh their query
    /// views; none without a changelog.
    fn changelog_outputs<S: Stage>(&self, stage: &mut S) -> Vec<Output> {
        let changes = stage.take_state_changes();
        let Some(changelog) = self.changelog else {
            return Vec::new();
        };
        let before = changes.len();
        let outputs: Vec<Output> = changes
            .into_iter()
            .filter(|c| self.owned.contains(&c.partition))
            .map(|change| Output {
                topic: changelog.to_string(),
                key: change.key,
                tombstone: change.value.is_none(),
                payload: change.value.unwrap_or_default(),
                partition: Some(change.partition),
                ..Output::default()
            })
            .collect();
        if outputs.len() < before {
            tracing::debug!(
                stage = self.name,
                dropped = before - outputs.len(),
                "State changes of partitions no longer owned were not written."
            );
        }
        outputs
    }

    /// Runs a blocking transactional call of librdkafka on a helper thread, and gives up on it a while
    /// after its own `timeout`. librdkafka 2.12 can block `send_offsets_to_transaction` for good after a
    /// broker restart, whatever its timeout: the group coordinator stays cached as a broker it has since
    /// decommissioned, and nothing wakes the request up again (confluentinc/librdkafka#5511; reproduced by
    /// `scripts/chaos.sh restarts`, where the stage thread sat in that call for minutes). A call that does
    /// not return is abandoned together with its producer: [`Run::rewind_after_abort`] then skips the abort
    /// (it would wait on the same stuck transaction) and starts a new producer, which fences the old one.
    pub(super) fn within(
        &mut self,
        timeout: Duration,
        what: &'static str,
        call: impl FnOnce() -> rdkafka::error::KafkaResult<()> + Send + 'static,
    ) -> anyhow::Result<()> {
        match call_within(timeout + STUCK_CALL_MARGIN, self.name, call)? {
            Some(result) => Ok(result?),
            None => {
                self.producer_stuck = true;
                self.env.metrics.error(self.name, "transaction_call_stuck");
                anyhow::bail!(
                    "librdkafka's {what} did not return within {} s (its timeout is {} s); abandoning the producer",
                    (timeout + STUCK_CALL_MARGIN).as_secs(),
                    timeout.as_secs()
                )
            }
        }
    }
}

/// Runs `call` on a thread of its own and waits up to `limit` for it: `None` when it has not returned by
/// then (the thread is left to finish, or not, on its own).
fn call_within<T: Send + 'static>(
    limit: Duration,
    stage: &str,
    call: impl FnOnce() -> T + Send + 'static,
) -> anyhow::Result<Option<T>> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name(format!("{stage}-txn"))
        .spawn(move || {
            let _ = tx.send(call());
        })?;
    Ok(rx.recv_timeout(limit).ok())
}

/// How long past its own timeout a transactional call may take before it is taken for stuck.
const STUCK_CALL_MARGIN: Duration = Duration::from_secs(15);

/// The group's committed offset of one partition, or why it cannot be read.
pub(super) fn committed_offset(
    consumer: &BaseConsumer<StageContext>,
    topic: &str,
    partition: i32,
    timeout: Duration,
) -> (Option<i64>, Option<String>) {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, partition);
    match consumer.committed_offsets(tpl, timeout) {
        Err(e) => (None, Some(e.to_string())),
        Ok(got) => match got.find_partition(topic, partition) {
            Some(e) if e.error().is_err() => (None, e.error().err().map(|e| e.to_string())),
            Some(e) => match e.offset() {
                Offset::Offset(o) => (Some(o), None),
                _ => (None, None),
            },
            None => (None, None),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn a_call_that_does_not_return_in_time_is_given_up_on() {
        let quick = call_within(Duration::from_secs(5), "test", || 7).unwrap();
        assert_eq!(quick, Some(7));
        let started = Instant::now();
        let stuck = call_within(Duration::from_millis(100), "test", || {
            std::thread::sleep(Duration::from_secs(3));
            7
        })
        .unwrap();
        assert_eq!(stuck, None);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "did not wait for it"
        );
    }
}
