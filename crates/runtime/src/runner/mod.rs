//! The one run loop every stage shares.
//!
//! Per batch: poll up to `runtime.max_batch` records, decode each (decode failures go to the dead-letter
//! topic), hand it to the stage, and produce every output and dead letter. At-least-once, every
//! `runtime.commit_interval_ms` the batches since the last commit are made durable together: the stage's
//! state changes are produced, every output is waited for until delivered, and only then are their
//! offsets stored (committed by librdkafka's auto-commit). A crash at any point therefore replays those
//! batches. Exactly-once, each batch is one transaction ([`transaction`]). The loop runs on its own
//! thread, off the async reactor, because stage work is CPU-bound.
//!
//! A stage may read several co-partitioned topics (see [`crate::stage::StageInput`]): the loop subscribes to
//! all of them, and offsets, transactions, dead letters and rebalances are kept per `(topic, partition)`
//! ([`crate::inputs`]), while the stage's hooks, its changelog and its query store see partition numbers.
//!
//! This module holds the loop and its batch steps; [`transaction`] the exactly-once commit and rewind,
//! [`delivery`] producing outputs and storing offsets, and `watch` the stall check.

mod delivery;
mod transaction;
mod watch;

use delivery::InFlight;
pub use delivery::deliver;
use transaction::transactional_producer;

use crate::changelog::{changelog_topic, ensure_changelog_topic, restore};
use crate::config::{BusConfig, Guarantee, TraceContextMode};
use crate::deadletter::{Rejection, dead_letter_output};
use crate::health::Health;
use crate::inputs::{Assignment, BatchOffsets, InputTopics, co_partitioned};
use crate::kafka::{RebalanceEvent, StageContext, create_producer, stage_consumer_config};
use crate::metrics::{Metrics, StageLabel, StageTopic};
use crate::shutdown::Shutdown;
use crate::stage::{Context, Output, Stage, StageError, StageInput};
use crate::stall::StallWatch;
use crate::trace_context::{TRACEPARENT, TRACESTATE, TraceHeaders, TraceParent};
use clickpath_schema::codec::Codec;
use prometheus_client::metrics::counter::Counter;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::{FutureProducer, Producer};
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
    let query_stores: Vec<crate::query::QueryStore> = stage
        .query_stores()
        .into_iter()
        .map(|(answers_for, store)| {
            env.queries.register_in(answers_for, store.clone(), name);
            store
        })
        .collect();
    tracing::info!(stage = name, topics = ?inputs.names(), group = %format!("{}.{}", cfg.kafka.group_prefix, name), exactly_once = eos, "Stage started.");

    let mut run = Run {
        env,
        name,
        inputs: &inputs,
        changelog: changelog.as_deref(),
        consumer: &consumer,
        producer,
        eos,
        query_stores,
        input_partitions,
        end_offsets: std::cell::OnceCell::new(),
        producer_stuck: false,
        committed: BatchOffsets::new(),
        in_flight: InFlight::default(),
        owned: Default::default(),
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
            if let Err(e) = run.commit_batch(&mut stage, outputs, &BatchOffsets::new(), true) {
                if eos && !run.producer_stuck {
                    // Left open, the transaction would hold its partitions' next owner until it times out.
                    let _ = run.producer.abort_transaction(Duration::from_secs(10));
                }
                if !(eos && consumer.assignment_lost()) {
                    return Err(e);
                }
                // Not a failure of this instance: its partitions moved on while it stopped.
                tracing::warn!(stage = name, error = %e, "The last transaction was not committed: the partitions were lost; their next owner processes that input again.");
            }
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

/// One stage loop's clients and settings.
struct Run<'a> {
    env: &'a RunnerEnv,
    name: &'static str,
    inputs: &'a InputTopics,
    changelog: Option<&'a str>,
    consumer: &'a BaseConsumer<StageContext>,
    producer: FutureProducer,
    eos: bool,
    /// The stage's query stores (one per stage of a chain).
    query_stores: Vec<crate::query::QueryStore>,
    input_partitions: usize,
    /// A `read_uncommitted` client for the stall check's end offsets, made on first use: the stage consumer's
    /// own watermark look-up answers with the last stable offset, behind which an open transaction hides
    /// exactly the records the check looks for.
    end_offsets: std::cell::OnceCell<BaseConsumer>,
    /// Set when a transactional call of the producer never returned ([`Run::within`]): the producer is
    /// abandoned rather than aborted.
    producer_stuck: bool,
    /// Exactly-once: the next offset of every owned input partition as the group last committed it (read on
    /// assignment, advanced by each transaction). Every transaction sends all of them, so even one without
    /// input records (a tick's outputs and state changes) carries the group generation and is refused once
    /// the partitions have moved to another instance.
    committed: BatchOffsets,
    /// At-least-once: batches sent since the last commit.
    in_flight: InFlight,
    /// Input partition numbers owned now: state changes of any other are not written (a partition
    /// revoked since the changes were made belongs to another instance's changelog writes).
    owned: std::collections::BTreeSet<i32>,
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
        let destinations = self.inputs.names().join(",");
        let span_name = format!("process {destinations}");
        let group = format!("{}.{}", env.config.kafka.group_prefix, self.name);

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
            // At-least-once commits under way: each step that the broker has acknowledged.
            self.advance_commits(usize::MAX)?;
            if batch.is_empty() && !tick_due && !self.commit_due() {
                continue;
            }
            if tick_due {
                last_tick = Instant::now();
            }
            let started = Instant::now();
            // One span per batch: processing, delivery and commit (exported with the `otlp` feature). Counts as
            // i64: OpenTelemetry integers are signed, and tracing-opentelemetry exports a u64 as text.
            // Named and attributed as the OpenTelemetry messaging conventions name a consumer's
            // processing of a batch (`process <destination>`, kind consumer, `messaging.*`).
            let span = tracing::info_span!(
                "batch",
                otel.name = %span_name,
                otel.kind = "consumer",
                messaging.system = "kafka",
                messaging.operation.type = "process",
                messaging.operation.name = "process",
                messaging.destination.name = tracing::field::Empty,
                messaging.consumer.group.name = %group,
                messaging.batch.message_count = batch.len() as i64,
                stage = self.name,
                records = batch.len() as i64,
                outputs = tracing::field::Empty
            );
            // Only for one input topic: a batch of several has no single destination.
            if let [topic] = self.inputs.names() {
                span.record("messaging.destination.name", topic.as_str());
            }
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
            if let Err(e) = self.commit_batch(stage, outputs, &done.offsets, false) {
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
                    if self.eos {
                        // Before the restore: the previous owner's last transaction may still be open. The
                        // stable offset fetch waits until it has ended, so the changelog read next holds the
                        // state of exactly the batches these offsets count.
                        let committed = self.stable_committed(&tps)?;
                        let offsets: Vec<(&str, i32, i64)> = committed.iter().collect();
                        tracing::info!(
                            stage = name,
                            ?offsets,
                            "Committed offsets read before the restore."
                        );
                        self.committed.overwrite_with(&committed);
                    }
                    if let Some(changelog) = self.changelog {
                        let stats = restore(
                            &env.config,
                            changelog,
                            &ps,
                            stage,
                            Some(&env.metrics),
                            &|| env.health.beat(name),
                        )?;
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
                    self.committed.forget(&tps);
                    // At-least-once: their new owner processes again what was not committed here.
                    // (No state change is in flight here: a commit writes its state and waits for it
                    // within one step of the loop, so none can land after the new owner restored.)
                    self.in_flight.forget(&tps, &ps);
                    stage.on_revoke(&ps);
                    watch.revoked(&tps);
                }
            }
            self.owned = assigned.partitions();
            env.health.set_assigned(name, assigned.len());
            for store in &self.query_stores {
                store.set_assignment(&assigned.partitions(), self.input_partitions);
            }
            env.metrics
                .assigned_partitions
                .get_or_create(&StageLabel { stage: name.into() })
                .set(assigned.len() as i64);
        }
        Ok(())
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
        let trace_context = env.config.runtime.trace_context;
        let mut links = 0;
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
            let headers = crate::kafka::record_headers(msg);
            let trace = match trace_context {
                TraceContextMode::Off => None,
                mode => {
                    let sent = header_value(&headers, TRACEPARENT);
                    if let Some(p) = TraceParent::from_header(sent)
                        && links < crate::telemetry::MAX_LINKS
                    {
                        crate::telemetry::link_current_span(&p);
                        links += 1;
                    }
                    TraceParent::headers_for_input(
                        sent,
                        header_value(&headers, TRACESTATE),
                        mode == TraceContextMode::Start,
                    )
                }
            };
            let rejected =
                self.process_record(stage, msg, input, now, trace.as_ref(), &mut done.outputs)?;
            if let Some((kind, reason)) = rejected {
                tracing::debug!(stage = name, topic, partition = msg.partition(), offset = msg.offset(), kind, %reason, "Record dead-lettered.");
                env.metrics.dead_letter(name, kind);
                summary.dead_letters += 1;
                let why = Rejection {
                    stage: name,
                    topic,
                    partition: msg.partition(),
                    offset: msg.offset(),
                    kind,
                    reason: &reason,
                    now_ms: now,
                };
                let input_headers = headers.iter().copied();
                let mut dead_letter = dead_letter_output(
                    &env.config.topics.dead_letters,
                    &why,
                    msg.key(),
                    msg.payload(),
                    input_headers,
                    trace.is_some(),
                );
                if let Some(t) = &trace {
                    t.push_onto(&mut dead_letter.headers);
                }
                done.outputs.push(dead_letter);
            }
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
        now: i64,
        trace: Option<&TraceHeaders>,
        outputs: &mut Vec<Output>,
    ) -> anyhow::Result<Option<(&'static str, String)>> {
        let env = self.env;
        let payload = msg.payload().unwrap_or_default();
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
        let mut ctx = Context::new(&env.codec, outputs, now)
            .for_record(msg.topic(), msg.partition())
            .at_offset(msg.offset())
            .with_trace(trace);
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
        // Per record: poll to outputs sent (exactly-once: committed), and the record's Kafka timestamp to
        // the same point.
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

/// The value of the last header `name` of a record's `headers` (as OpenTelemetry's Kafka
/// instrumentation reads them), if it has one with a value.
fn header_value<'m>(headers: &[(&'m str, Option<&'m [u8]>)], name: &str) -> Option<&'m [u8]> {
    headers
        .iter()
        .rev()
        .find(|(k, _)| *k == name)
        .and_then(|(_, v)| *v)
}

/// Wall-clock milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
