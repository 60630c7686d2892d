//! One phase of the load test. What runs between the load producer and the harness's reader is a
//! [`Phase`]: the pass-through loop ([`PassThrough`]), every stage of the pipeline ([`Pipeline`]) or
//! the Kafka Streams peer ([`KafkaStreamsPeer`]).
//! The measuring around it ([`run_phase`]) is the same for both: fresh topics, consumers started and
//! assigned before the clock starts, the load produced on that clock, lag sampled until everything
//! is read, then the report.

use super::broker::{
    chain_changelog_sizes, changelog_size, compacted_copy, create_plain_topics, delete_topics,
    pass_through, peak_rss_bytes, process_cpu_seconds, topics_end_offsets,
};
use super::load::{Clock, ReadLatencies, Workload, produce, read_outputs};
use super::peer::{KafkaStreamsPeer, PeerSetup};
use super::{
    ChangelogSize, HopLatency, Latency, PhaseReport, RestoreTiming, StateReport, TraceSample, cores,
};
use clickpath_cli::pipeline::{self, RunningStage};
use clickpath_runtime::RunnerEnv;
use clickpath_runtime::Stage;
use clickpath_runtime::kafka::create_producer;
use clickpath_runtime::metrics::StageLabel;
use clickpath_schema::codec::Codec;
use clickpath_stages::chain::CHAIN;
use clickpath_stages::config::TopologyMode;
use clickpath_stages::{ClickpathConfig, StageName};
use indicatif::ProgressBar;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Which [`Phase`] a run measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PhaseKind {
    /// [`PassThrough`].
    PassThrough,
    /// [`Pipeline`].
    Pipeline,
    /// [`KafkaStreamsPeer`].
    KafkaStreams,
}

/// How one phase is run.
pub(super) struct PhaseSetup<'a> {
    pub(super) kind: PhaseKind,
    pub(super) base: &'a ClickpathConfig,
    pub(super) run_id: &'a str,
    pub(super) phase: usize,
    pub(super) partitions: i32,
    pub(super) records: usize,
    pub(super) rate: f64,
    pub(super) timeout: Duration,
    pub(super) bar: &'a ProgressBar,
    pub(super) trace: bool,
    pub(super) hops: bool,
    /// How to start the Kafka Streams peer ([`PhaseKind::KafkaStreams`] only).
    pub(super) peer: Option<&'a PeerSetup>,
}

/// The topics of a phase.
pub(super) struct PhaseTopics {
    /// Where the load is produced.
    pub(super) input: String,
    /// What the harness reads, with each topic's role; the phase's output last.
    pub(super) read: Vec<(String, String)>,
    /// Every topic the phase may write (deleted at its end; their end offsets are its broker writes).
    pub(super) created: Vec<String>,
}

/// What runs between the load producer and the reader.
pub(super) trait Phase {
    /// `pass-through` or `pipeline`.
    fn kind(&self) -> &'static str;
    /// Makes the phase's topics (`hops`: also read the intermediate ones).
    fn create_topics(&self, cfg: &ClickpathConfig, hops: bool) -> anyhow::Result<PhaseTopics>;
    /// Starts the consumers; [`Phase::ready`] says when they own their partitions.
    fn start(&mut self, cfg: &ClickpathConfig, env: &RunnerEnv) -> anyhow::Result<()>;
    /// Whether every consumer has been assigned its partitions.
    fn ready(&self, env: &RunnerEnv) -> bool;
    /// Records written to a consumer's input and not read by it yet, summed; `sent` went to the input.
    fn lag(&self, env: &RunnerEnv, sent: u64) -> u64;
    /// Output records written so far, which the reader must see.
    fn expected_outputs(&self, env: &RunnerEnv, sent: u64) -> u64;
    /// Records each consumer read, by consumer.
    fn records_in(&self, env: &RunnerEnv) -> BTreeMap<String, u64>;
    /// Every record the consumers read from the broker (each input topic of each stage).
    fn broker_reads(&self, env: &RunnerEnv) -> u64;
    /// In-memory state entries per stage (none for the pass-through).
    fn state_entries(&self, env: &RunnerEnv) -> BTreeMap<String, i64>;
    /// Whether the phase is done when its last output is read (else when its lag is 0: a phase
    /// whose outputs do not follow its inputs one for one, like the peer's closed sessions).
    fn ends_at_last_output(&self) -> bool {
        true
    }
    /// CPU seconds so far of the process the phase runs in, when that is not this one.
    fn external_cpu_seconds(&self) -> Option<f64> {
        None
    }
    /// Peak RSS of the process the phase runs in, when that is not this one.
    fn external_peak_rss_bytes(&self) -> Option<u64> {
        None
    }
    /// Topics the phase made by itself (a Kafka Streams application's changelogs): counted in its
    /// broker writes and deleted with its own.
    fn internal_topics(&self, _cfg: &ClickpathConfig) -> Vec<String> {
        Vec::new()
    }
    /// Stops the consumers and waits for them.
    fn stop(&mut self, env: &RunnerEnv) -> anyhow::Result<()>;
}

/// The physical limit: consume -> produce with no processing, on its own thread.
pub(super) struct PassThrough {
    input: String,
    output: String,
    stop: Arc<AtomicBool>,
    ready: Arc<AtomicBool>,
    consumed: Arc<AtomicU64>,
    thread: Option<JoinHandle<anyhow::Result<()>>>,
}

impl PassThrough {
    /// A loop from `<prefix>passthrough.in` to `<prefix>passthrough.out`.
    fn new(prefix: &str) -> Self {
        PassThrough {
            input: format!("{prefix}passthrough.in"),
            output: format!("{prefix}passthrough.out"),
            stop: Arc::default(),
            ready: Arc::default(),
            consumed: Arc::default(),
            thread: None,
        }
    }
}

impl Phase for PassThrough {
    fn kind(&self) -> &'static str {
        "pass-through"
    }

    fn create_topics(&self, cfg: &ClickpathConfig, _hops: bool) -> anyhow::Result<PhaseTopics> {
        create_plain_topics(cfg, &[&self.input, &self.output], cfg.topics.partitions)?;
        Ok(PhaseTopics {
            input: self.input.clone(),
            read: vec![("output".into(), self.output.clone())],
            created: vec![self.input.clone(), self.output.clone()],
        })
    }

    fn start(&mut self, cfg: &ClickpathConfig, _env: &RunnerEnv) -> anyhow::Result<()> {
        let (input, output) = (self.input.clone(), self.output.clone());
        let cfg = cfg.clone();
        let (stop, ready, consumed) = (
            Arc::clone(&self.stop),
            Arc::clone(&self.ready),
            Arc::clone(&self.consumed),
        );
        self.thread = Some(
            std::thread::Builder::new()
                .name("pass-through".into())
                .spawn(move || {
                    let r = pass_through(&cfg, &input, &output, &stop, &ready, &consumed);
                    // A loop that failed is "ready" too: the wait ends and the error comes out of `stop`.
                    ready.store(true, Ordering::Release);
                    r
                })?,
        );
        Ok(())
    }

    fn ready(&self, _env: &RunnerEnv) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    fn lag(&self, _env: &RunnerEnv, sent: u64) -> u64 {
        sent.saturating_sub(self.consumed.load(Ordering::Relaxed))
    }

    fn expected_outputs(&self, _env: &RunnerEnv, sent: u64) -> u64 {
        sent
    }

    fn records_in(&self, _env: &RunnerEnv) -> BTreeMap<String, u64> {
        BTreeMap::from([(self.kind().into(), self.consumed.load(Ordering::Relaxed))])
    }

    fn broker_reads(&self, _env: &RunnerEnv) -> u64 {
        self.consumed.load(Ordering::Relaxed)
    }

    fn state_entries(&self, _env: &RunnerEnv) -> BTreeMap<String, i64> {
        BTreeMap::new()
    }

    fn stop(&mut self, _env: &RunnerEnv) -> anyhow::Result<()> {
        self.stop.store(true, Ordering::Release);
        match self.thread.take() {
            Some(t) => t
                .join()
                .map_err(|_| anyhow::anyhow!("pass-through loop panicked"))?,
            None => Ok(()),
        }
    }
}

/// Every stage in this process, chained or one consumer each as `[topology] mode` says, fed the raw
/// topic; the output is the predictions topic.
#[derive(Default)]
pub(super) struct Pipeline {
    stages: Option<Vec<RunningStage>>,
    /// Chained topology (one consumer of the raw topic), else one consumer per stage.
    chained: bool,
}

impl Pipeline {
    /// The pipeline in the topology `cfg.topology.mode` names.
    fn new(cfg: &ClickpathConfig) -> Self {
        Pipeline {
            stages: None,
            chained: cfg.topology.mode == TopologyMode::Chained,
        }
    }

    /// Records written to `topic` so far: `sent` for the raw topic, else what the stages wrote to it.
    fn written(env: &RunnerEnv, topic: &str, sent: u64) -> u64 {
        if topic == env.config.topics.raw {
            return sent;
        }
        pipeline::written(&env.metrics, topic)
    }

    /// Every (stage, input topic) pair of per-stage mode, from the stages' declared inputs.
    fn inputs(env: &RunnerEnv) -> impl Iterator<Item = (StageName, String)> + '_ {
        StageName::ALL
            .into_iter()
            .flat_map(move |s| s.input_topics(env).into_iter().map(move |t| (s, t)))
    }

    /// Raw records the chain has taken.
    fn chain_in(env: &RunnerEnv) -> u64 {
        env.metrics.records_in_total(CHAIN, &env.config.topics.raw)
    }
}

impl Phase for Pipeline {
    fn kind(&self) -> &'static str {
        if self.chained { "chain" } else { "pipeline" }
    }

    fn create_topics(&self, cfg: &ClickpathConfig, hops: bool) -> anyhow::Result<PhaseTopics> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(clickpath_runtime::kafka::create_topics(cfg, &cfg.topics))?;
        let mut created: Vec<String> = cfg
            .topics
            .all()
            .into_iter()
            .map(|(_, n)| n.to_string())
            .collect();
        // Every stage's changelog and the chain's, for those that keep one: counted in the
        // broker's writes and deleted with the rest.
        created.extend(
            StageName::ALL
                .iter()
                .map(|n| n.as_str())
                .chain([CHAIN])
                .map(|n| clickpath_runtime::changelog::changelog_topic(cfg, n)),
        );
        let t = &cfg.topics;
        let mut read = Vec::new();
        if hops {
            read.push(("clean".into(), t.clean.clone()));
            read.push(("features".into(), t.features.clone()));
        }
        read.push(("predictions".into(), t.predictions.clone()));
        Ok(PhaseTopics {
            input: t.raw.clone(),
            read,
            created,
        })
    }

    fn start(&mut self, cfg: &ClickpathConfig, env: &RunnerEnv) -> anyhow::Result<()> {
        self.stages = Some(pipeline::spawn_pipeline(cfg, env, false)?);
        Ok(())
    }

    fn ready(&self, env: &RunnerEnv) -> bool {
        let assigned = |stage: &str| {
            let label = StageLabel {
                stage: stage.into(),
            };
            env.metrics.assigned_partitions.get_or_create(&label).get() > 0
        };
        if self.chained {
            assigned(CHAIN)
        } else {
            StageName::ALL.iter().all(|n| assigned(n.as_str()))
        }
    }

    fn lag(&self, env: &RunnerEnv, sent: u64) -> u64 {
        if self.chained {
            return sent.saturating_sub(Self::chain_in(env));
        }
        Self::inputs(env)
            .map(|(stage, topic)| {
                Self::written(env, &topic, sent)
                    .saturating_sub(env.metrics.records_in_total(stage.as_str(), &topic))
            })
            .sum()
    }

    fn expected_outputs(&self, env: &RunnerEnv, sent: u64) -> u64 {
        Self::written(env, &env.config.topics.predictions, sent)
    }

    fn records_in(&self, env: &RunnerEnv) -> BTreeMap<String, u64> {
        // Per stage what it took: read from its topic, or handed over in the chain.
        StageName::ALL
            .iter()
            .map(|n| {
                let input = n.input_topic(env);
                (
                    n.as_str().to_string(),
                    pipeline::taken(&env.metrics, *n, &input),
                )
            })
            .collect()
    }

    fn broker_reads(&self, env: &RunnerEnv) -> u64 {
        if self.chained {
            return Self::chain_in(env);
        }
        Self::inputs(env)
            .map(|(stage, topic)| env.metrics.records_in_total(stage.as_str(), &topic))
            .sum()
    }

    fn state_entries(&self, env: &RunnerEnv) -> BTreeMap<String, i64> {
        let names: Vec<&str> = if self.chained {
            vec![CHAIN]
        } else {
            StageName::ALL.iter().map(|n| n.as_str()).collect()
        };
        names
            .into_iter()
            .map(|n| {
                let label = StageLabel { stage: n.into() };
                let entries = env.metrics.state_entries.get_or_create(&label).get();
                (n.to_string(), entries)
            })
            .collect()
    }

    fn stop(&mut self, env: &RunnerEnv) -> anyhow::Result<()> {
        env.shutdown.trigger();
        match self.stages.take() {
            Some(stages) => pipeline::join_stages(stages).map(|_| ()),
            None => Ok(()),
        }
    }
}

/// The prefix of the phase's topics and groups: `bench-<run>-<phase>.`.
fn phase_prefix(s: &PhaseSetup<'_>) -> String {
    format!("bench-{}-{}.", s.run_id, s.phase)
}

/// The phase's configuration: fresh topics and groups under [`phase_prefix`].
fn phase_config(s: &PhaseSetup<'_>) -> ClickpathConfig {
    let mut cfg = s.base.clone();
    let prefix = phase_prefix(s);
    cfg.topics = cfg.topics.with_prefix(&prefix);
    cfg.topics.partitions = s.partitions;
    cfg.kafka.group_prefix = format!("{prefix}group");
    cfg.http.bind = "127.0.0.1:0".into();
    if s.hops {
        // The chain hands clean events and features over in process: produce them to time the hops.
        cfg.topology.produce_clean = true;
        cfg.topology.produce_features = true;
    }
    cfg
}

/// Runs one phase on fresh topics; returns its report and, when `want_state`, the sessionizer's
/// state size (pipeline phases).
pub(super) fn run_phase(
    s: &PhaseSetup<'_>,
    w: &Workload,
    want_state: bool,
) -> anyhow::Result<(PhaseReport, Option<StateReport>)> {
    let cfg = phase_config(s);
    let mut phase: Box<dyn Phase> = match s.kind {
        PhaseKind::PassThrough => Box::new(PassThrough::new(&phase_prefix(s))),
        PhaseKind::Pipeline => Box::new(Pipeline::new(&cfg)),
        PhaseKind::KafkaStreams => {
            let setup = s
                .peer
                .ok_or_else(|| anyhow::anyhow!("a Kafka Streams phase needs --kafka-streams"))?;
            Box::new(KafkaStreamsPeer::new(&phase_prefix(s), setup.clone()))
        }
    };
    let label = if s.rate > 0.0 {
        format!("{}, {:.0}/s", phase.kind(), s.rate)
    } else {
        format!("{}, max rate", phase.kind())
    };
    s.bar.reset();
    s.bar.set_length(s.records as u64);
    s.bar.set_prefix(label.clone());
    let topics = phase.create_topics(&cfg, s.hops)?;
    let env = cfg.runner_env(Codec::embedded());
    let outcome = measure(s, w, &cfg, &env, phase.as_mut(), &topics, &label);
    let outcome = outcome.and_then(|(report, entries)| {
        let state = (want_state && s.kind == PhaseKind::Pipeline)
            .then(|| state_report(&cfg, &env, entries))
            .transpose()?;
        Ok((report, state))
    });
    if outcome.is_err() {
        // Whatever failed, the consumers stop before the topics go.
        let _ = phase.stop(&env);
    }
    let mut created = topics.created.clone();
    created.extend(phase.internal_topics(&cfg));
    delete_topics(&cfg, &created);
    outcome
}

/// Waits until every consumer owns its partitions, so the clock measures processing, not group joins.
fn wait_ready(phase: &dyn Phase, env: &RunnerEnv, label: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !phase.ready(env) && !env.shutdown.is_triggered() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the {label} consumers were not assigned partitions within 60 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Starts the consumers, produces the load and reads the outputs on one clock; the phase's figures
/// and its stages' state entries at the end of the load.
fn measure(
    s: &PhaseSetup<'_>,
    w: &Workload,
    cfg: &ClickpathConfig,
    env: &RunnerEnv,
    phase: &mut dyn Phase,
    topics: &PhaseTopics,
    label: &str,
) -> anyhow::Result<(PhaseReport, BTreeMap<String, i64>)> {
    let clock = Clock::new(w.len());
    let cpu_before = process_cpu_seconds();
    phase.start(cfg, env)?;
    wait_ready(phase, env, label)?;
    // An external process is counted from when it is ready: a JVM's start-up is not its steady state.
    let external_before = phase.external_cpu_seconds().unwrap_or(0.0);
    let read_topics: Vec<String> = topics.read.iter().map(|(_, t)| t.clone()).collect();
    std::thread::scope(|scope| {
        // The clients of the load are made before the clock starts, and the clock starts once they are
        // ready, so it measures the steady state and not their start-up. An idempotent producer cannot
        // send until it has a producer id (up to 0.5 s after its creation on the local broker), and a
        // consumer fetches nothing until it has connected and found its partitions' leaders: before this,
        // both showed as a latency tail of the first second of every phase. A stage consumer that was
        // just assigned also looks up its start offsets first, hence the pause.
        let load_producer = create_producer(cfg)?;
        let (clock, read_topics) = (&clock, &read_topics);
        let reader = scope.spawn(move || read_outputs(cfg, read_topics, w, clock, s.trace));
        std::thread::sleep(Duration::from_secs(1));
        let producer = scope
            .spawn(move || produce(&load_producer, &topics.input, w, s.records, s.rate, clock));
        let (max_lag, complete) = follow(s, env, &*phase, clock, || producer.is_finished());
        let end_ns = clock.now_ns();
        let mut written = topics.created.clone();
        written.extend(phase.internal_topics(cfg));
        let mut counts = Counts {
            cpu_seconds: process_cpu_seconds() - cpu_before,
            external_cpu_seconds: phase.external_cpu_seconds().map(|c| c - external_before),
            external_peak_rss_bytes: phase.external_peak_rss_bytes(),
            ends_at_last_output: phase.ends_at_last_output(),
            broker_writes: topics_end_offsets(cfg, &written),
            outputs_expected: phase.expected_outputs(env, clock.sent.load(Ordering::Relaxed)),
            stage_records_in: phase.records_in(env),
            stage_reads: phase.broker_reads(env),
            state_entries: phase.state_entries(env),
            max_lag,
            complete,
            end_ns,
        };
        clock.stop_reader.store(true, Ordering::Release);
        let stopped = phase.stop(env);
        let produced = producer
            .join()
            .map_err(|_| anyhow::anyhow!("bench producer panicked"))?;
        let read = reader
            .join()
            .map_err(|_| anyhow::anyhow!("bench reader panicked"))??;
        stopped?;
        produced?;
        if !complete {
            tracing::warn!(phase = %label, "The phase did not drain before the timeout; figures are partial.");
        }
        let entries = std::mem::take(&mut counts.state_entries);
        Ok((
            phase_report(s, phase.kind(), topics, clock, &read, counts),
            entries,
        ))
    })
}

/// Samples the lag every 5 ms until everything sent was processed and read (complete), or the
/// timeout, a shutdown or a failed producer; returns the largest lag seen and whether it completed.
fn follow(
    s: &PhaseSetup<'_>,
    env: &RunnerEnv,
    phase: &dyn Phase,
    clock: &Clock,
    producer_finished: impl Fn() -> bool,
) -> (u64, bool) {
    let deadline = Instant::now() + s.timeout;
    let mut max_lag = 0;
    let mut last_draw = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(5));
        let sent = clock.sent.load(Ordering::Relaxed);
        let lag = phase.lag(env, sent);
        max_lag = max_lag.max(lag);
        let read = clock.read.load(Ordering::Relaxed);
        if last_draw.elapsed() >= Duration::from_millis(200) {
            last_draw = Instant::now();
            s.bar.set_position(sent);
            s.bar.set_message(format!("read {read} | lag {lag}"));
        }
        let produced = clock.producing_done.load(Ordering::Acquire);
        if produced && lag == 0 && read >= phase.expected_outputs(env, sent) && producer_finished()
        {
            return (max_lag, true);
        }
        // A producer that finished without finishing its work failed; its error comes out of the join.
        let producer_failed = producer_finished() && !produced;
        if env.shutdown.is_triggered() || Instant::now() > deadline || producer_failed {
            return (max_lag, false);
        }
    }
}

/// What the phase's consumers counted, taken when the load was done.
struct Counts {
    cpu_seconds: f64,
    external_cpu_seconds: Option<f64>,
    external_peak_rss_bytes: Option<u64>,
    ends_at_last_output: bool,
    broker_writes: u64,
    outputs_expected: u64,
    stage_records_in: BTreeMap<String, u64>,
    stage_reads: u64,
    state_entries: BTreeMap<String, i64>,
    max_lag: u64,
    complete: bool,
    end_ns: u64,
}

/// The report of a phase from its clock, its reader's latencies and its consumers' counts.
fn phase_report(
    s: &PhaseSetup<'_>,
    kind: &str,
    topics: &PhaseTopics,
    clock: &Clock,
    read: &ReadLatencies,
    c: Counts,
) -> PhaseReport {
    let sent = clock.sent.load(Ordering::Relaxed);
    let first = clock.first_send_ns.load(Ordering::Relaxed);
    let last_send = clock.last_send_ns.load(Ordering::Relaxed);
    let end = if c.complete && c.ends_at_last_output {
        clock.last_read_ns.load(Ordering::Relaxed).max(first)
    } else {
        c.end_ns
    };
    let seconds = end.saturating_sub(first) as f64 / 1e9;
    let throughput = sent as f64 / seconds.max(1e-9);
    let outputs_read = clock.read.load(Ordering::Relaxed);
    // Only the output counts as the harness's read: `--hops` reads of intermediate topics are its own
    // diagnostics, not the pipeline's I/O.
    let hops = if s.hops && topics.read.len() > 1 {
        topics
            .read
            .iter()
            .zip(&read.per_topic)
            .map(|((role, _), h)| HopLatency {
                topic: role.clone(),
                latency: Latency::of(h),
            })
            .collect()
    } else {
        Vec::new()
    };
    PhaseReport {
        kind: kind.into(),
        target_rate: (s.rate > 0.0).then_some(s.rate),
        records_sent: sent,
        outputs_read,
        outputs_expected: c.outputs_expected,
        complete: c.complete,
        seconds,
        send_rate: sent as f64 / (last_send.saturating_sub(first) as f64 / 1e9).max(1e-9),
        throughput,
        throughput_per_core: throughput / cores() as f64,
        cpu_seconds: c.cpu_seconds,
        external_cpu_seconds: c.external_cpu_seconds,
        records_per_cpu_second: sent as f64
            / c.external_cpu_seconds.unwrap_or(c.cpu_seconds).max(1e-9),
        latency: Latency::of(read.per_topic.last().expect("an output topic")),
        hops,
        trace: read
            .trace
            .iter()
            .map(|&(hop, sent_ns, us)| TraceSample {
                hop,
                sent_ms: sent_ns.saturating_sub(first) as f64 / 1e6,
                latency_ms: us as f64 / 1000.0,
            })
            .collect(),
        max_lag: c.max_lag,
        stage_records_in: c.stage_records_in,
        broker_writes: c.broker_writes,
        broker_reads: c.stage_reads + outputs_read,
        peak_rss_bytes: c.external_peak_rss_bytes.unwrap_or_else(peak_rss_bytes),
    }
}

/// The stages' state size, read back from their changelogs, and, after a chained run, the restore of
/// every stage's state from the chain's changelog.
fn state_report(
    cfg: &ClickpathConfig,
    env: &RunnerEnv,
    state_entries: BTreeMap<String, i64>,
) -> anyhow::Result<StateReport> {
    let mut changelogs = BTreeMap::new();
    for stage in StageName::ALL {
        let topic = clickpath_runtime::changelog::changelog_topic(cfg, stage.as_str());
        if clickpath_runtime::changelog::partition_count(cfg, &topic)? == 0 {
            continue; // a stateless stage (the scorer with the baseline model), or the chain ran
        }
        let (keys, bytes) = changelog_size(cfg, &topic)?;
        changelogs.insert(stage.as_str().to_string(), ChangelogSize { keys, bytes });
    }
    // The chain's one changelog, split by the stage each key is tagged with.
    let chain = clickpath_runtime::changelog::changelog_topic(cfg, CHAIN);
    let (mut restore, mut restore_compacted) = (None, None);
    if clickpath_runtime::changelog::partition_count(cfg, &chain)? > 0 {
        for (stage, (keys, bytes)) in chain_changelog_sizes(cfg, &chain)? {
            changelogs.insert(stage, ChangelogSize { keys, bytes });
        }
        let users = changelogs.get("sessionizer").map_or(0, |c| c.keys);
        restore = Some(time_chain_restore(cfg, env, &chain, users)?);
        // The same state once the log cleaner has run: one record per live key.
        let compacted = format!("{chain}.compacted");
        let timed = compacted_copy(cfg, &chain, &compacted)
            .and_then(|_| time_chain_restore(cfg, env, &compacted, users));
        delete_topics(cfg, std::slice::from_ref(&compacted));
        restore_compacted = Some(timed?);
    }
    let session = changelogs.get("sessionizer").copied().unwrap_or_default();
    let users = session.keys;
    Ok(StateReport {
        changelog_users: users,
        changelog_bytes: session.bytes,
        bytes_per_user: session.bytes as f64 / users.max(1) as f64,
        state_entries,
        changelogs,
        restore,
        restore_compacted,
    })
}

/// Restores a fresh chain, every stage in it, from the chain's changelog as a new instance taking
/// over all partitions would: reading every partition to its end and installing each stage's state.
/// `users` (the sessionizer's live keys) is what "users/s" counts.
fn time_chain_restore(
    cfg: &ClickpathConfig,
    env: &RunnerEnv,
    changelog: &str,
    users: u64,
) -> anyhow::Result<RestoreTiming> {
    let mut chain = clickpath_stages::chain::Chain::from_config(cfg, env, false)?;
    let all: Vec<i32> = (0..cfg.topics.partitions.max(1)).collect();
    let started = Instant::now();
    let stats =
        clickpath_runtime::changelog::restore(cfg, changelog, &all, &mut chain, None, &|| {})?;
    chain.on_assign(&all);
    let seconds = started.elapsed().as_secs_f64();
    Ok(RestoreTiming {
        users,
        records: stats.records,
        bytes: stats.bytes,
        seconds,
        users_per_second: users as f64 / seconds.max(1e-9),
    })
}
