//! The one run loop every stage shares.
//!
//! Per batch: poll up to `runtime.max_batch` records, decode each (decode failures go to the dead-letter
//! topic), hand it to the stage, produce every output and dead letter, wait until all are delivered, and only
//! then store the batch's offsets (committed by librdkafka's auto-commit). A crash at any point therefore
//! replays the batch: at-least-once. The loop runs on its own thread, off the async reactor, because stage
//! work is CPU-bound.
//!
//! A stage may read several co-partitioned topics (see [`crate::stage::StageInput`]): the loop subscribes to
//! all of them, and offsets, transactions, dead letters and rebalances are kept per `(topic, partition)`
//! ([`crate::inputs`]), while the stage's hooks, its changelog and its query store see partition numbers.

use crate::changelog::{changelog_topic, ensure_changelog_topic, restore};
use crate::config::{BusConfig, Guarantee};
use crate::deadletter::dead_letter_output;
use crate::health::Health;
use crate::inputs::{Assignment, BatchOffsets, InputTopics, co_partitioned};
use crate::kafka::{RebalanceEvent, StageContext, create_producer, stage_consumer_config};
use crate::metrics::{Metrics, StageLabel, StageTopic};
use crate::shutdown::Shutdown;
use crate::stage::{Context, Output, Stage, StageError, StageInput};
use crate::stall::{PartitionEnds, StallWatch};
use clickpath_schema::codec::Codec;
use prometheus_client::metrics::counter::Counter;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// What a stage loop needs besides the stage itself.
#[derive(Clone)]
pub struct RunnerEnv {
    /// The shared settings: Kafka, guarantee, topics, run loop, HTTP.
    pub config: BusConfig,
    /// Wire codec (schema registry).
    pub codec: Codec,
    /// Process-wide metrics.
    pub metrics: Metrics,
    /// Process-wide health board.
    pub health: Health,
    /// Shared shutdown flag.
    pub shutdown: Shutdown,
    /// Per-user views published by stages for the HTTP query API.
    pub queries: crate::query::Queries,
    /// Fault injection: a stage made artificially slow (none unless the reliability suite asks).
    pub slowdown: Option<Slowdown>,
}

/// A stage made artificially slow, for the back-pressure test: after each batch it sleeps
/// `(factor - 1)` times the batch's processing time, for `for_ms` after its first input (0: always).
#[derive(Debug, Clone, PartialEq)]
pub struct Slowdown {
    /// The stage's name.
    pub stage: String,
    /// How much slower (> 1).
    pub factor: f64,
    /// For how long after the stage's first input (ms); 0: as long as it runs.
    pub for_ms: u64,
}

impl Slowdown {
    /// The extra time `stage` sleeps after a batch that took `busy`, `running` after its first input.
    pub fn extra(&self, stage: &str, running: Duration, busy: Duration) -> Option<Duration> {
        let active = self.stage == stage
            && self.factor > 1.0
            && (self.for_ms == 0 || running.as_millis() < u128::from(self.for_ms));
        active.then(|| busy.mul_f64(self.factor - 1.0))
    }
}

impl RunnerEnv {
    /// An environment with fresh metrics, health, shutdown flag and query registry.
    pub fn new(config: BusConfig, codec: Codec) -> Self {
        RunnerEnv {
            config,
            codec,
            metrics: Metrics::new(),
            health: Health::new(),
            shutdown: Shutdown::new(),
            queries: crate::query::Queries::new(),
            slowdown: None,
        }
    }
}

/// Counts of one finished run.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RunSummary {
    /// Records read.
    pub records_in: u64,
    /// Records produced (dead letters included).
    pub records_out: u64,
    /// Records sent to the dead-letter topic.
    pub dead_letters: u64,
}

/// Runs `stage` on its input topics until the shutdown flag is set, then drains and returns.
///
/// `input_topics` has one topic per role of the stage's input type, in the same order
/// ([`StageInput::ROLES`]; a one-record-type stage reads one topic). Several input topics must have the same
/// partition count (checked here, after waiting for each to appear); their records are decoded by topic.
///
/// Blocking: call it on a dedicated thread. Returns an error when outputs could not be delivered, a transaction
/// failed or the stage reports a fatal error; the failed batch's offsets are not committed, so the next owner of
/// its partitions redoes it (from the restored state, in exactly-once mode).
pub fn run_stage<S: Stage, T: AsRef<str>>(
    mut stage: S,
    input_topics: &[T],
    env: &RunnerEnv,
) -> anyhow::Result<RunSummary> {
    let name = stage.name();
    let cfg = &env.config;
    let eos = cfg.processing.guarantee == Guarantee::ExactlyOnce;
    let inputs = InputTopics::new(name, <S::Input as StageInput>::ROLES, input_topics)?;
    // Every input topic may have been created a moment ago: wait for each before checking co-partitioning.
    let mut counts = Vec::with_capacity(inputs.len());
    for topic in inputs.names() {
        let n = crate::changelog::wait_partition_count(cfg, topic, Duration::from_secs(15))?;
        counts.push((topic.clone(), n));
    }
    let input_partitions = co_partitioned(name, &counts)?;
    let changelog = if stage.is_stateful() {
        // Changelog partition p holds the state of input partition number p (the same in every input topic).
        let topic = changelog_topic(cfg, name);
        ensure_changelog_topic(cfg, &topic, inputs.first())?;
        Some(topic)
    } else {
        None
    };
    let context = StageContext::new(name, env.metrics.clone());
    let consumer: BaseConsumer<StageContext> =
        stage_consumer_config(cfg, name, inputs.len()).create_with_context(context)?;
    let producer = if eos {
        transactional_producer(cfg, name)?
    } else {
        create_producer(cfg)?
    };
    let topic_refs: Vec<&str> = inputs.names().iter().map(String::as_str).collect();
    consumer.subscribe(&topic_refs)?;
    env.health.register(name);
    let query_store = stage.query_store();
    if let Some(store) = &query_store {
        env.queries.register(name, store.clone());
    }
    tracing::info!(stage = name, topics = ?inputs.names(), group = %format!("{}.{}", cfg.kafka.group_prefix, name), exactly_once = eos, "Stage started.");

    let mut run = Run {
        env,
        name,
        inputs: &inputs,
        changelog: changelog.as_deref(),
        consumer: &consumer,
        producer,
        eos,
        query_store,
        input_partitions,
        end_offsets: std::cell::OnceCell::new(),
        producer_stuck: false,
    };
    let result = run.run_loop(&mut stage);

    let summary = match result {
        Ok(mut summary) => {
            // Drain: the stage's last outputs, then flush, commit and leave the group.
            let mut outputs = Vec::new();
            let mut ctx = Context::new(&env.codec, &mut outputs, now_ms());
            if let Err(e) = stage.on_shutdown(&mut ctx) {
                tracing::error!(stage = name, error = %e, "Shutdown hook failed.");
            }
            summary.records_out += outputs.len() as u64;
            run.commit_batch(&mut stage, outputs, &BatchOffsets::new())?;
            let grace = Duration::from_millis(cfg.runtime.shutdown_grace_ms);
            run.producer.flush(grace)?;
            if !eos && let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
                // Nothing stored yet is a normal case.
                if !matches!(e, KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) {
                    tracing::warn!(stage = name, error = %e, "Final offset commit failed.");
                }
            }
            consumer.unsubscribe();
            summary
        }
        Err(e) => {
            if eos && !run.producer_stuck {
                // Best effort: the broker aborts it anyway after the transaction timeout or when fenced.
                let _ = run.producer.abort_transaction(Duration::from_secs(10));
            }
            env.health.remove(name);
            env.metrics.error(name, "fatal");
            return Err(e);
        }
    };
    env.health.remove(name);
    tracing::info!(stage = name, ?summary, "Stage stopped.");
    Ok(summary)
}

/// A transactional producer for `stage`, its transactions initialised: this fences any earlier producer
/// with the same transactional id (a previous incarnation of this instance) and aborts its open transaction.
fn transactional_producer(cfg: &BusConfig, stage: &str) -> anyhow::Result<FutureProducer> {
    let p: FutureProducer = transactional_producer_config(cfg, stage).create()?;
    p.init_transactions(Duration::from_secs(60))?;
    Ok(p)
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

/// One stage loop's clients and settings.
struct Run<'a> {
    env: &'a RunnerEnv,
    name: &'static str,
    inputs: &'a InputTopics,
    changelog: Option<&'a str>,
    consumer: &'a BaseConsumer<StageContext>,
    producer: FutureProducer,
    eos: bool,
    query_store: Option<crate::query::QueryStore>,
    input_partitions: usize,
    /// A `read_uncommitted` client for the stall check's end offsets, made on first use: the stage consumer's
    /// own watermark look-up answers with the last stable offset, behind which an open transaction hides
    /// exactly the records the check looks for.
    end_offsets: std::cell::OnceCell<BaseConsumer>,
    /// Set when a transactional call of the producer never returned ([`Run::within`]): the producer is
    /// abandoned rather than aborted.
    producer_stuck: bool,
}

/// What processing one batch gave: the outputs to make durable with its input offsets, and what the metrics
/// need afterwards.
struct ProcessedBatch {
    outputs: Vec<Output>,
    offsets: BatchOffsets,
    per_input: Vec<u64>,
    event_times: Vec<i64>,
}

impl Run<'_> {
    /// Batch after batch until shutdown: poll (and replay rebalances), check for stalled partitions,
    /// process, make durable (rewinding after a failed transaction), record metrics.
    fn run_loop<S: Stage>(&mut self, stage: &mut S) -> anyhow::Result<RunSummary> {
        let env = self.env;
        let rt = &env.config.runtime;
        let poll_timeout = Duration::from_millis(rt.poll_timeout_ms);
        let tick_every = Duration::from_millis(rt.tick_interval_ms);
        let mut last_tick = Instant::now();
        // When the stage first got input: the clock of `[faults]`.
        let mut first_input: Option<Instant> = None;
        let mut summary = RunSummary::default();
        let mut assigned = Assignment::new();
        let mut watch = StallWatch::new(Duration::from_millis(rt.stall_after_ms));
        let in_counters = self.input_counters();

        while !env.shutdown.is_triggered() {
            env.health.beat(self.name);
            let mut batch = poll_batch(
                self.consumer,
                poll_timeout,
                stage.poll_linger(),
                rt.max_batch,
                self.name,
                &env.metrics,
            );
            self.replay_rebalances(stage, &mut assigned, &mut watch)?;
            // Records of partitions revoked while the batch was collected belong to their new owner now.
            batch.retain(|m| assigned.contains(m.topic(), m.partition()));
            self.check_stalls(&mut watch);
            let tick_due = last_tick.elapsed() >= tick_every;
            if batch.is_empty() && !tick_due {
                continue;
            }
            if tick_due {
                last_tick = Instant::now();
            }
            let started = Instant::now();
            // One span per batch: processing, delivery and commit (exported with the `otlp` feature). Counts as
            // i64: OpenTelemetry integers are signed, and tracing-opentelemetry exports a u64 as text.
            let span = tracing::info_span!(
                "batch",
                stage = self.name,
                records = batch.len() as i64,
                outputs = tracing::field::Empty
            );
            let _in_batch = span.enter();
            let mut done = self.process_batch(stage, &batch, tick_due, &mut summary)?;
            let records = batch.len() as u64;
            summary.records_in += records;
            summary.records_out += done.outputs.len() as u64;
            span.record("outputs", done.outputs.len() as i64);
            drop(batch);
            for (topic, partition, _) in done.offsets.iter() {
                watch.progressed(topic, partition, started);
            }
            watch.clear_progressed(started);
            let outputs = std::mem::take(&mut done.outputs);
            if let Err(e) = self.commit_batch(stage, outputs, &done.offsets) {
                if !self.eos {
                    return Err(e);
                }
                // A rebalance or a broker restart in the middle of a transaction (a stale group generation,
                // an unknown member, a moved coordinator, a produce timeout) aborts the batch; the stage goes
                // back to its last committed state and input and carries on. Only a producer that cannot
                // abort (fenced, fatal) stops it.
                self.rewind_after_abort(stage, &assigned, &e)?;
                watch.restart_all(Instant::now());
                continue;
            }
            if records > 0 {
                first_input.get_or_insert(started);
            }
            self.inject_slowdown(first_input, started);
            self.record_batch_metrics(stage, &in_counters, &done, records, started);
        }
        Ok(summary)
    }

    /// One `records_in` counter per input topic. Cloned: holding the family's guard would block every other
    /// thread's `get_or_create`.
    fn input_counters(&self) -> Vec<Counter> {
        self.inputs
            .names()
            .iter()
            .map(|topic| {
                self.env
                    .metrics
                    .records_in
                    .get_or_create(&StageTopic {
                        stage: self.name.into(),
                        topic: topic.clone(),
                    })
                    .clone()
            })
            .collect()
    }

    /// Rebalance callbacks ran inside poll on this thread; replays them to the stage in order, restoring the
    /// state of newly assigned partitions before any of their input is processed.
    fn replay_rebalances<S: Stage>(
        &mut self,
        stage: &mut S,
        assigned: &mut Assignment,
        watch: &mut StallWatch,
    ) -> anyhow::Result<()> {
        let env = self.env;
        let name = self.name;
        for event in self.consumer.context().take_rebalances() {
            match event {
                RebalanceEvent::Assigned(tps) => {
                    // Partition numbers this instance did not own before, in any input topic.
                    let ps = assigned.assign(&tps);
                    if let Some(changelog) = self.changelog {
                        let stats =
                            restore(&env.config, changelog, &ps, stage, Some(&env.metrics))?;
                        tracing::info!(
                            stage = name,
                            partitions = ?ps,
                            records = stats.records,
                            bytes = stats.bytes,
                            seconds = stats.seconds,
                            records_per_second = stats.records as f64 / stats.seconds.max(1e-9),
                            "State restored."
                        );
                    }
                    stage.on_assign(&ps);
                    // The clock starts after the restore: restoring is progress of its own.
                    watch.assigned(&tps, Instant::now());
                }
                RebalanceEvent::Revoked(tps) => {
                    let ps = assigned.revoke(&tps);
                    stage.on_revoke(&ps);
                    watch.revoked(&tps);
                }
            }
            env.health.set_assigned(name, assigned.len());
            if let Some(store) = &self.query_store {
                store.set_assignment(&assigned.partitions(), self.input_partitions);
            }
            env.metrics
                .assigned_partitions
                .get_or_create(&StageLabel { stage: name.into() })
                .set(assigned.len() as i64);
        }
        Ok(())
    }

    /// Judges partitions idle for `runtime.stall_after_ms` against their end offsets (when a check is due),
    /// and publishes the verdict: health board, metric, and one warning per partition when it stalls.
    fn check_stalls(&self, watch: &mut StallWatch) {
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

    /// Decodes every record (decode failures and rejected records become dead letters), hands it to the
    /// stage, then runs the end-of-batch hook and, when due, the tick hook.
    fn process_batch<S: Stage>(
        &mut self,
        stage: &mut S,
        batch: &[BorrowedMessage<'_>],
        tick_due: bool,
        summary: &mut RunSummary,
    ) -> anyhow::Result<ProcessedBatch> {
        let env = self.env;
        let name = self.name;
        let mut done = ProcessedBatch {
            outputs: Vec::new(),
            offsets: BatchOffsets::new(),
            per_input: vec![0u64; self.inputs.len()],
            event_times: Vec::with_capacity(batch.len()),
        };
        let now = now_ms();
        for msg in batch {
            let topic = msg.topic();
            done.offsets.consumed(topic, msg.partition(), msg.offset());
            let input = self.inputs.index(topic);
            if let Some(i) = input {
                done.per_input[i] += 1;
            }
            if let Some(ts) = msg.timestamp().to_millis() {
                done.event_times.push(ts);
            }
            let payload = msg.payload().unwrap_or_default();
            let Some((kind, reason)) =
                self.process_record(stage, msg, input, payload, now, &mut done.outputs)?
            else {
                continue;
            };
            tracing::debug!(stage = name, topic, partition = msg.partition(), offset = msg.offset(), kind, %reason, "Record dead-lettered.");
            env.metrics.dead_letter(name, kind);
            summary.dead_letters += 1;
            done.outputs.push(dead_letter_output(
                &env.codec,
                &env.config.topics.dead_letters,
                name,
                topic,
                msg.partition(),
                msg.offset(),
                msg.key(),
                payload,
                kind,
                &reason,
                now,
            )?);
        }
        if !batch.is_empty() {
            let mut ctx = Context::new(&env.codec, &mut done.outputs, now);
            if let Err(e) = stage.end_batch(&mut ctx) {
                anyhow::bail!("stage {name} failed at the end of a batch: {e}");
            }
        }
        if tick_due {
            let mut ctx = Context::new(&env.codec, &mut done.outputs, now);
            if let Err(e) = stage.tick(&mut ctx) {
                anyhow::bail!("stage {name} tick failed: {e}");
            }
        }
        Ok(done)
    }

    /// One record: `Ok(None)` when the stage took it, `Ok(Some((kind, reason)))` when it must be
    /// dead-lettered, an error when the stage failed fatally.
    fn process_record<S: Stage>(
        &self,
        stage: &mut S,
        msg: &BorrowedMessage<'_>,
        input: Option<usize>,
        payload: &[u8],
        now: i64,
        outputs: &mut Vec<Output>,
    ) -> anyhow::Result<Option<(&'static str, String)>> {
        let env = self.env;
        let max = env.config.runtime.max_record_bytes;
        if payload.len() > max {
            // Hostile or broken producers: never decode what we would not store.
            return Ok(Some((
                "oversized_record",
                format!(
                    "record is {} bytes, more than runtime.max_record_bytes = {max}",
                    payload.len()
                ),
            )));
        }
        let Some(input) = input else {
            // Cannot happen with a subscription to exact names; never handed to the stage.
            return Ok(Some((
                "unexpected_topic",
                format!(
                    "record from {}, which is not an input of this stage ({:?})",
                    msg.topic(),
                    self.inputs.names()
                ),
            )));
        };
        let record = match <S::Input as StageInput>::decode(&env.codec, input, payload) {
            Ok(record) => record,
            Err(e) => return Ok(Some((e.kind(), e.to_string()))),
        };
        let mut ctx =
            Context::new(&env.codec, outputs, now).for_record(msg.topic(), msg.partition());
        match stage.process(record, &mut ctx) {
            Ok(()) => Ok(None),
            Err(StageError::Rejected { kind, reason }) => Ok(Some((kind, reason))),
            Err(StageError::Fatal(reason)) => anyhow::bail!(
                "stage {} failed at {}/{}@{}: {reason}",
                self.name,
                msg.topic(),
                msg.partition(),
                msg.offset()
            ),
        }
    }

    /// Fault injection (`[faults]`): the stage made artificially slow, batch processing and delivery
    /// together, for the back-pressure test.
    fn inject_slowdown(&self, first_input: Option<Instant>, started: Instant) {
        if let Some(first) = first_input
            && let Some(extra) = self
                .env
                .slowdown
                .as_ref()
                .and_then(|s| s.extra(self.name, first.elapsed(), started.elapsed()))
        {
            std::thread::sleep(extra);
        }
    }

    /// Counts, latencies and sizes of a batch made durable.
    fn record_batch_metrics<S: Stage>(
        &self,
        stage: &S,
        in_counters: &[Counter],
        done: &ProcessedBatch,
        records: u64,
        started: Instant,
    ) {
        let metrics = &self.env.metrics;
        let label = StageLabel {
            stage: self.name.into(),
        };
        for (counter, n) in in_counters.iter().zip(&done.per_input) {
            if *n > 0 {
                counter.inc_by(*n);
            }
        }
        // Per record: poll to durable output, and the record's Kafka timestamp to durable output.
        let processing = started.elapsed().as_secs_f64();
        let now = now_ms();
        metrics.observe_latencies(
            self.name,
            std::iter::repeat_n(processing, records as usize),
            done.event_times.iter().map(|t| (now - t) as f64 / 1000.0),
        );
        metrics
            .batch_seconds
            .get_or_create(&label)
            .observe(started.elapsed().as_secs_f64());
        metrics
            .batch_records
            .get_or_create(&label)
            .observe(records as f64);
        metrics
            .state_entries
            .get_or_create(&label)
            .set(stage.state_entries() as i64);
    }

    /// After a failed transaction: aborts it, drops the stage's state of every owned partition and
    /// restores it from the changelog (the state of the last committed batch), and seeks every input
    /// partition back to its committed offset, so the aborted batch is processed again from scratch.
    fn rewind_after_abort<S: Stage>(
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
        self.producer
            .init_transactions(Duration::from_secs(60))
            .map_err(|e| {
                anyhow::anyhow!(
                    "stage {name}: transaction failed ({cause:#}); a new transactional producer could not \
                     be initialised to end it: {e}"
                )
            })?;
        let ps: Vec<i32> = assigned.partitions().into_iter().collect();
        stage.on_revoke(&ps);
        if let Some(changelog) = self.changelog {
            restore(
                &self.env.config,
                changelog,
                &ps,
                stage,
                Some(&self.env.metrics),
            )?;
        }
        stage.on_assign(&ps);
        let committed = self
            .consumer
            .committed_offsets(self.consumer.assignment()?, timeout)?;
        for e in committed.elements() {
            let to = match e.offset() {
                Offset::Offset(o) => Offset::Offset(o),
                // Nothing committed yet: `auto.offset.reset = earliest`.
                _ => Offset::Beginning,
            };
            self.consumer.seek(e.topic(), e.partition(), to, timeout)?;
        }
        tracing::info!(stage = name, partitions = ?ps, "Rewound to the last committed batch.");
        Ok(())
    }

    /// Makes a batch durable: its outputs, its state changes and its input offsets. At-least-once: produce and
    /// wait for acknowledgements, then store the offsets. Exactly-once: all three in one transaction.
    fn commit_batch<S: Stage>(
        &mut self,
        stage: &mut S,
        mut outputs: Vec<Output>,
        next_offsets: &BatchOffsets,
    ) -> anyhow::Result<()> {
        // Always asked, so stages can refresh their query views once per batch; written only when durable.
        let changes = stage.take_state_changes();
        if let Some(changelog) = self.changelog {
            for change in changes {
                outputs.push(Output {
                    topic: changelog.to_string(),
                    key: change.key,
                    tombstone: change.value.is_none(),
                    payload: change.value.unwrap_or_default(),
                    headers: Vec::new(),
                    partition: Some(change.partition),
                });
            }
        }
        if !self.eos {
            deliver(&self.producer, outputs, self.name, &self.env.metrics)?;
            store_offsets(self.consumer, next_offsets, self.name);
            return Ok(());
        }
        if outputs.is_empty() && next_offsets.is_empty() {
            return Ok(());
        }
        let timeout = Duration::from_secs(30);
        self.producer.begin_transaction()?;
        deliver(&self.producer, outputs, self.name, &self.env.metrics)?;
        if !next_offsets.is_empty() {
            // Every input topic's offsets, in the one transaction.
            let tpl = next_offsets.to_list()?;
            let group = self
                .consumer
                .group_metadata()
                .ok_or_else(|| anyhow::anyhow!("no consumer group metadata"))?;
            let producer = self.producer.clone();
            self.within(timeout, "send_offsets_to_transaction", move || {
                producer.send_offsets_to_transaction(&tpl, &group, timeout)
            })?;
        }
        let producer = self.producer.clone();
        self.within(timeout, "commit_transaction", move || {
            producer.commit_transaction(timeout)
        })?;
        Ok(())
    }

    /// Runs a blocking transactional call of librdkafka on a helper thread, and gives up on it a while
    /// after its own `timeout`. librdkafka 2.12 can block `send_offsets_to_transaction` for good after a
    /// broker restart, whatever its timeout: the group coordinator stays cached as a broker it has since
    /// decommissioned, and nothing wakes the request up again (confluentinc/librdkafka#5511; reproduced by
    /// `scripts/chaos.sh restarts`, where the stage thread sat in that call for minutes). A call that does
    /// not return is abandoned together with its producer: [`Run::rewind_after_abort`] then skips the abort
    /// (it would wait on the same stuck transaction) and starts a new producer, which fences the old one.
    fn within(
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
fn committed_offset(
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

/// Polls up to `max` records: waits `timeout` for the first, then takes only what is already buffered.
fn poll_batch<'c>(
    consumer: &'c BaseConsumer<StageContext>,
    timeout: Duration,
    linger: Duration,
    max: usize,
    stage: &str,
    metrics: &Metrics,
) -> Vec<rdkafka::message::BorrowedMessage<'c>> {
    let mut batch = Vec::new();
    let mut wait = timeout;
    // Set by the first record: until then the poll waits up to `timeout`.
    let mut deadline: Option<Instant> = None;
    while batch.len() < max {
        match consumer.poll(wait) {
            None => break,
            Some(Ok(m)) => {
                batch.push(m);
                let end = *deadline.get_or_insert_with(|| Instant::now() + linger);
                wait = end.saturating_duration_since(Instant::now());
                continue;
            }
            Some(Err(e)) => {
                tracing::warn!(stage, error = %e, "Kafka consumer error.");
                metrics.error(stage, "kafka");
                break;
            }
        }
    }
    batch
}

/// Produces every output and waits until each one is acknowledged by the broker.
pub fn deliver(
    producer: &FutureProducer,
    outputs: Vec<Output>,
    stage: &str,
    metrics: &Metrics,
) -> anyhow::Result<()> {
    if outputs.is_empty() {
        return Ok(());
    }
    let mut per_topic: BTreeMap<&str, u64> = BTreeMap::new();
    let mut pending = Vec::with_capacity(outputs.len());
    for out in &outputs {
        let mut headers = OwnedHeaders::new_with_capacity(1 + out.headers.len()).insert(Header {
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
                    pending.push(fut);
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

fn store_offsets(consumer: &BaseConsumer<StageContext>, next: &BatchOffsets, stage: &str) {
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

/// Wall-clock milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

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
