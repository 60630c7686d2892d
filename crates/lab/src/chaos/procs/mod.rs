//! Stage processes under fire: several `clickpath run <stage>` (or chained `clickpath run all`) instances
//! in one consumer group, SIGKILLed at random points of the run (and restarted), optionally with the broker
//! itself restarted half-way, or with one of them killed for good to measure how long its partitions stay
//! idle. The committed output (`read_committed`) is then compared with what an uninterrupted run gives over
//! exactly what each input partition holds: the pure `core` logic for one stage, an in-process chain for
//! the chained pipeline.

mod fleet;
mod reference;

pub(crate) use fleet::Progress;

use super::TopicReader;
use clickpath_cli::generate::send_generated;
use clickpath_cli::produce::EventProducer;
use clickpath_generator::Generated;
use clickpath_runtime::config::Guarantee;
use clickpath_schema::codec::Codec;
use clickpath_stages::chain::CHAIN;
use clickpath_stages::config::TopologyMode;
use clickpath_stages::{ClickpathConfig, StageName};
use fleet::{Fleet, measure_recovery, restart_broker, stall_warnings, write_config};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reference::{
    chain_output_key, chain_reference, compare, input_items, output_key, reference, send_sentinels,
};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Shell commands that stop and start the broker (for the broker-restart scenario), and when.
#[derive(Debug, Clone)]
pub struct BrokerControl {
    /// Stops the broker (e.g. `KAFKA_PORT=39092 ... scripts/kafka.sh stop`).
    pub stop: String,
    /// Starts it again and waits until it answers.
    pub start: String,
    /// How long it stays down, seconds.
    pub down_s: f64,
    /// Restart points: fractions of the input the group has committed (one restart each).
    pub at: Vec<f64>,
    /// SIGKILL one instance just before each stop and start it again while the broker is down, so that
    /// it joins the group and restores its state against a broker that is coming back.
    pub kill_one: bool,
}

/// What runs under fire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// One stage (`cleaning`, `sessionizer` or `windower`), `clickpath run <stage>`.
    Stage(StageName),
    /// Every stage chained, `clickpath run all` with `[topology] mode = "chained"`.
    Chain,
    /// Every stage its own consumer, `clickpath run all` with `[topology] mode = "per-stage"`.
    Pipeline,
}

impl Target {
    /// The consumer group's suffix and the word in reports: the stage's name, or `chain`.
    pub fn name(self) -> &'static str {
        match self {
            Target::Stage(s) => s.as_str(),
            Target::Chain => CHAIN,
            Target::Pipeline => "pipeline",
        }
    }

    /// The consumer group whose commits of the input show the run's progress.
    fn progress_group(self) -> &'static str {
        match self {
            Target::Pipeline => StageName::Cleaning.as_str(),
            t => t.name(),
        }
    }

    /// Whether the whole pipeline runs (the chain, or every stage on its own).
    pub(super) fn whole(self) -> bool {
        matches!(self, Target::Chain | Target::Pipeline)
    }

    /// What `clickpath run` is given.
    pub(super) fn run_arg(self) -> &'static str {
        match self {
            Target::Stage(s) => s.as_str(),
            Target::Chain | Target::Pipeline => "all",
        }
    }
}

/// One chaos run.
#[derive(Debug, Clone)]
pub struct ChaosOptions {
    /// What runs: one stage, or the chained pipeline.
    pub target: Target,
    /// Delivery guarantee of the stage processes.
    pub guarantee: Guarantee,
    /// Instances of the stage.
    pub instances: usize,
    /// Generator sessions (about 10 events each).
    pub sessions: u64,
    /// SIGKILLs, each followed by a restart of that instance.
    pub kills: usize,
    /// Restart the broker at the points it names.
    pub broker: Option<BrokerControl>,
    /// Kill one instance for good (after a third of the input) and measure how long until every partition
    /// commits progress again.
    pub rebalance: bool,
    /// Add an instance (a new member of the group) after two thirds of the input: with `rebalance`,
    /// one instance leaves and one joins during the run.
    pub add_instance: bool,
    /// Input records per second (0 = as fast as possible).
    pub rate: f64,
    /// Random seed (events, victims, kill points).
    pub seed: u64,
    /// The `clickpath` binary.
    pub binary: PathBuf,
    /// Directory for the config file and the instances' logs.
    pub work_dir: PathBuf,
    /// Upper bound of the whole run after the input is sent.
    pub timeout: Duration,
}

/// What a chaos run measured.
#[derive(Debug, Default, Clone)]
pub struct ChaosReport {
    /// Stage and guarantee, e.g. `sessionizer exactly_once`.
    pub what: String,
    /// Input records produced (sentinels included).
    pub input_records: u64,
    /// Expected distinct outputs (sessions, clean events or feature vectors).
    pub expected: usize,
    /// Distinct outputs found.
    pub distinct: usize,
    /// Expected outputs that never appeared.
    pub lost: usize,
    /// Outputs the reference does not have.
    pub unexpected: usize,
    /// Extra copies of outputs.
    pub duplicates: usize,
    /// SIGKILLs sent.
    pub kills: usize,
    /// Instances that exited without being killed (restarted by the harness), with their last log line.
    pub unexpected_exits: Vec<String>,
    /// Broker restarts done, and how long each took until the broker answered (s).
    pub broker_restarts: Vec<f64>,
    /// Rebalance: seconds from the SIGKILL until every input partition committed progress again.
    pub recovery_s: Option<f64>,
    /// Instances added to the group during the run.
    pub instances_added: usize,
    /// Rebalance: per input partition, seconds from the SIGKILL until its committed offset moved (`None`:
    /// never within the timeout).
    pub partition_resume_s: Vec<Option<f64>>,
    /// Seconds from the first input record until the output was complete.
    pub seconds: f64,
    /// Samples of lost, unexpected and duplicated outputs.
    pub samples: Vec<String>,
    /// The chain: per output topic, records expected, lost and unexpected.
    pub per_topic: BTreeMap<String, [usize; 3]>,
    /// "Partition stalled" warnings the instances logged (`runtime.stall_after_ms`), first lines only.
    pub stalls: Vec<String>,
    /// Whether an instance exiting on its own fails the run (the broker-restart scenario: stages must
    /// reconnect by themselves).
    pub exits_fail: bool,
}

impl ChaosReport {
    /// Failed checks: loss or unexpected output always; duplicates in exactly-once mode.
    pub fn problems(&self, guarantee: Guarantee) -> Vec<String> {
        let mut p = Vec::new();
        if self.exits_fail && !self.unexpected_exits.is_empty() {
            p.push(format!(
                "{} instances exited instead of reconnecting",
                self.unexpected_exits.len()
            ));
        }
        if !self.partition_resume_s.is_empty() && self.recovery_s.is_none() {
            p.push(format!(
                "partitions never resumed after the SIGKILL: {:?}",
                self.partition_resume_s
            ));
        }
        if !self.stalls.is_empty() {
            p.push(format!(
                "instances reported stalled partitions: {:?}",
                self.stalls
            ));
        }
        if self.lost > 0 {
            p.push(format!(
                "{} of {} expected outputs lost",
                self.lost, self.expected
            ));
        }
        if self.unexpected > 0 {
            p.push(format!(
                "{} outputs the reference does not have",
                self.unexpected
            ));
        }
        if guarantee == Guarantee::ExactlyOnce && self.duplicates > 0 {
            p.push(format!(
                "{} duplicates in exactly-once mode",
                self.duplicates
            ));
        }
        if !p.is_empty() && !self.samples.is_empty() {
            p.push(format!("samples: {:?}", self.samples));
        }
        p
    }

    /// One paragraph of plain text.
    pub fn render(&self, guarantee: Guarantee) -> String {
        let mut s = format!(
            "{}: {} input records, {} SIGKILLs, {} broker restarts in {:.1} s\n",
            self.what,
            self.input_records,
            self.kills,
            self.broker_restarts.len(),
            self.seconds
        );
        s += &format!(
            "outputs expected {}, found {} distinct: lost {}, unexpected {}, duplicates {}\n",
            self.expected, self.distinct, self.lost, self.unexpected, self.duplicates
        );
        for b in &self.broker_restarts {
            s += &format!("broker back after {b:.1} s\n");
        }
        if self.instances_added > 0 {
            s += &format!("instances added during the run: {}\n", self.instances_added);
        }
        if let Some(r) = self.recovery_s {
            s += &format!(
                "rebalance: every partition committing again {r:.1} s after the SIGKILL\n"
            );
        }
        if !self.partition_resume_s.is_empty() {
            let each: Vec<String> = self
                .partition_resume_s
                .iter()
                .map(|t| t.map_or("never".into(), |t| format!("{t:.1} s")))
                .collect();
            s += &format!("partitions resumed after: {}\n", each.join(", "));
        }
        for (topic, [expected, lost, unexpected]) in &self.per_topic {
            s += &format!("  {topic}: expected {expected}, lost {lost}, unexpected {unexpected}\n");
        }
        s += &format!("unexpected exits: {}\n", self.unexpected_exits.len());
        for e in &self.unexpected_exits {
            s += &format!("  - {e}\n");
        }
        s += &super::verdict(&self.problems(guarantee));
        s
    }
}

fn guarantee_name(g: Guarantee) -> &'static str {
    match g {
        Guarantee::ExactlyOnce => "exactly_once",
        Guarantee::AtLeastOnce => "at_least_once",
    }
}

/// Runs one chaos scenario against the broker in `base` (topics and groups get a fresh prefix).
pub fn run_chaos(base: &ClickpathConfig, opts: &ChaosOptions) -> anyhow::Result<ChaosReport> {
    anyhow::ensure!(
        matches!(
            opts.target,
            Target::Chain
                | Target::Pipeline
                | Target::Stage(StageName::Cleaning | StageName::Sessionizer | StageName::Windower)
        ),
        "chaos runs the cleaning stage, the sessionizer, the windower or the chain, not {}",
        opts.target.name()
    );
    anyhow::ensure!(opts.instances >= 1, "at least one instance");
    let cfg = scenario_config(base, opts);
    std::fs::create_dir_all(&opts.work_dir)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(clickpath_runtime::kafka::create_topics(&cfg, &cfg.topics))?;
    let (input_topic, output_topics) = target_topics(&cfg, opts.target);
    let codec = Codec::embedded();
    let items = input_items(opts)?;
    let mut report = ChaosReport {
        what: format!(
            "{} {} x{}",
            opts.target.name(),
            guarantee_name(opts.guarantee),
            opts.instances
        ),
        exits_fail: opts.broker.is_some(),
        ..ChaosReport::default()
    };
    let mut fleet = Fleet::start(opts, write_config(&opts.work_dir, &cfg)?)?;
    let progress = Progress::new(&cfg, opts.target.progress_group(), &input_topic)?;
    // The harness's own input must outlast a broker restart that takes long on a loaded machine (the
    // default message timeout is 60 s).
    let mut sender_cfg = cfg.clone();
    sender_cfg
        .kafka
        .producer_properties
        .insert("message.timeout.ms".into(), "600000".into());
    let started = Instant::now();
    let done_sending = AtomicBool::new(false);
    std::thread::scope(|s| -> anyhow::Result<()> {
        let sender = s.spawn(|| {
            let r = send_input(&sender_cfg, &codec, &input_topic, opts.rate, &items);
            done_sending.store(true, Ordering::Relaxed);
            r
        });
        let mut faults = Faults::plan(opts, items.len() as u64, started, &done_sending);
        faults.inject(&mut fleet, &progress, &mut report)?;
        sender
            .join()
            .map_err(|_| anyhow::anyhow!("the input producer panicked"))?
    })?;

    // A far-future event on every partition closes every open session of the sessionizer (and, in
    // the chain, every funnel bucket).
    let mut input_records = items.len() as u64;
    if matches!(
        opts.target,
        Target::Stage(StageName::Sessionizer) | Target::Chain | Target::Pipeline
    ) {
        let last = items
            .iter()
            .filter_map(|g| match g {
                Generated::Event(e) => Some(e.event_time),
                Generated::Malformed(_) => None,
            })
            .max()
            .unwrap_or(0);
        send_sentinels(&sender_cfg, &codec, &input_topic, last + 86_400_000)?;
        input_records += cfg.topics.partitions as u64;
    }
    report.input_records = input_records;

    // The reference over exactly what each input partition holds, in order.
    let input = TopicReader::new(&cfg, &input_topic)?.read_until(
        Duration::from_secs(5),
        Duration::from_secs(600),
        |n| n as u64 >= input_records,
    );
    let expected = match opts.target {
        Target::Stage(stage) => reference(&cfg, stage, &codec, &input),
        Target::Chain | Target::Pipeline => chain_reference(&cfg, opts.target, &codec, &input)?,
    };
    report.expected = expected.len();
    let mut output = OutputWait {
        fleet: &mut fleet,
        report: &mut report,
        started,
    };
    let got = output.committed(&cfg, opts, &output_topics, &expected)?;
    fleet.stop();
    report.stalls = stall_warnings(&opts.work_dir);
    compare(&expected, &got, &mut report);
    if opts.target.whole() {
        report.per_topic = per_topic(&expected, &got);
    }
    Ok(report)
}

/// The scenario's configuration: its own topics and groups, the guarantee under test, and short
/// timeouts so that killed members and their transactions are noticed quickly.
fn scenario_config(base: &ClickpathConfig, opts: &ChaosOptions) -> ClickpathConfig {
    let scenario = format!("{}-{}", opts.target.name(), guarantee_name(opts.guarantee));
    let mut cfg = super::isolated_config(base, &scenario);
    cfg.processing.guarantee = opts.guarantee;
    cfg.topology.mode = if opts.target == Target::Pipeline {
        TopologyMode::PerStage
    } else {
        TopologyMode::Chained
    };
    if opts.broker.is_none() {
        // An instance killed for good leaves its transaction open until this timeout; keep it short. (Not in
        // the broker-restart scenario: librdkafka caps a transactional producer's message timeout to it.)
        cfg.processing.transaction_timeout_ms = 10_000;
    }
    cfg.http.bind = "127.0.0.1:0".into();
    cfg.runtime.poll_timeout_ms = 50;
    cfg.runtime.tick_interval_ms = 200;
    cfg.runtime.max_batch = 500;
    // A partition without progress for a minute is a stall here; the instances log it with its cause,
    // and the report fails on it.
    cfg.runtime.stall_after_ms = 60_000;
    // A SIGKILLed member holds its partitions until its session times out: keep that short (the broker's
    // minimum is 6 s).
    let props = &mut cfg.kafka.consumer_properties;
    props
        .entry("session.timeout.ms".into())
        .or_insert_with(|| "6000".into());
    props
        .entry("heartbeat.interval.ms".into())
        .or_insert_with(|| "1000".into());
    cfg
}

/// The input topic and the output topics that are compared.
fn target_topics(cfg: &ClickpathConfig, target: Target) -> (String, Vec<String>) {
    let t = &cfg.topics;
    match target {
        Target::Stage(StageName::Cleaning) => (t.raw.clone(), vec![t.clean.clone()]),
        Target::Stage(StageName::Windower) => (t.clean.clone(), vec![t.features.clone()]),
        Target::Stage(_) => (t.clean.clone(), vec![t.sessions.clone()]),
        Target::Chain | Target::Pipeline => (
            t.raw.clone(),
            [&t.sessions, &t.predictions, &t.alerts, &t.analytics]
                .map(String::clone)
                .to_vec(),
        ),
    }
}

/// Produces the generated input to `topic` at `rate`.
fn send_input(
    cfg: &ClickpathConfig,
    codec: &Codec,
    topic: &str,
    rate: f64,
    items: &[Generated],
) -> anyhow::Result<()> {
    let mut producer = EventProducer::new(cfg, codec.clone(), topic, rate)?;
    for item in items {
        send_generated(&mut producer, item)?;
    }
    producer.flush()
}

/// When the faults happen: fractions of the input the group has committed (or at once, if the run
/// stalls after the input was sent).
struct Faults<'a> {
    opts: &'a ChaosOptions,
    rng: StdRng,
    kills: Vec<f64>,
    broker: Vec<f64>,
    rebalance: Option<f64>,
    add: Option<f64>,
    total: u64,
    started: Instant,
    done_sending: &'a AtomicBool,
}

impl<'a> Faults<'a> {
    fn plan(
        opts: &'a ChaosOptions,
        total: u64,
        started: Instant,
        done_sending: &'a AtomicBool,
    ) -> Self {
        let mut rng = StdRng::seed_from_u64(opts.seed ^ 0x5eed);
        let mut kills: Vec<f64> = (0..opts.kills)
            .map(|_| rng.random_range(0.02..0.95))
            .collect();
        kills.sort_by(f64::total_cmp);
        let mut broker: Vec<f64> = opts.broker.as_ref().map_or(Vec::new(), |b| b.at.clone());
        broker.sort_by(f64::total_cmp);
        Faults {
            opts,
            rng,
            kills,
            broker,
            rebalance: opts.rebalance.then_some(0.33),
            add: opts.add_instance.then_some(0.66),
            total,
            started,
            done_sending,
        }
    }

    fn sending(&self) -> bool {
        !self.done_sending.load(Ordering::Relaxed)
    }

    /// Runs until the input is sent and every planned fault happened, restarting instances that exit.
    fn inject(
        &mut self,
        fleet: &mut Fleet<'_>,
        progress: &Progress,
        report: &mut ChaosReport,
    ) -> anyhow::Result<()> {
        let mut committed = 0u64;
        while self.sending()
            || !self.kills.is_empty()
            || !self.broker.is_empty()
            || self.rebalance.is_some()
            || self.add.is_some()
        {
            fleet.reap_exits(report)?;
            if let Some(c) = progress.committed() {
                committed = c.iter().map(|&o| o.max(0) as u64).sum();
            }
            let frac = committed as f64 / self.total.max(1) as f64;
            let stalled = !self.sending() && self.started.elapsed() > self.opts.timeout;
            let due = |points: &[f64]| points.first().is_some_and(|&p| frac >= p || stalled);
            if due(&self.kills) {
                self.kills.remove(0);
                let victim = self.rng.random_range(0..self.opts.instances);
                fleet.kill(victim);
                report.kills += 1;
                std::thread::sleep(Duration::from_millis(self.rng.random_range(0..1000)));
                fleet.spawn(victim)?;
            }
            if due(&self.broker) {
                self.broker.remove(0);
                self.restart_broker(fleet, report)?;
            }
            if self.rebalance.is_some_and(|p| frac >= p || stalled) {
                self.rebalance = None;
                report.kills += 1;
                let resumed = measure_recovery(fleet, progress);
                report.recovery_s = resumed
                    .iter()
                    .copied()
                    .try_fold(0.0f64, |m, t| t.map(|t| m.max(t)));
                report.partition_resume_s = resumed;
            }
            if self.add.is_some_and(|p| frac >= p || stalled) {
                self.add = None;
                fleet.add()?;
                report.instances_added += 1;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(())
    }

    /// Restarts the broker, with one instance SIGKILLed first and restarted while it is down when asked.
    fn restart_broker(
        &mut self,
        fleet: &mut Fleet<'_>,
        report: &mut ChaosReport,
    ) -> anyhow::Result<()> {
        let b = self
            .opts
            .broker
            .as_ref()
            .expect("broker points imply control");
        let victim = b
            .kill_one
            .then(|| self.rng.random_range(0..self.opts.instances));
        if let Some(v) = victim {
            fleet.kill(v);
            report.kills += 1;
        }
        let back = restart_broker(b, || match victim {
            Some(v) => fleet.spawn(v),
            None => Ok(()),
        })?;
        report.broker_restarts.push(back);
        Ok(())
    }
}

/// Per output topic (the part of a chain output key before its first `|`): records expected, lost
/// and unexpected.
fn per_topic(
    expected: &BTreeMap<String, usize>,
    got: &BTreeMap<String, usize>,
) -> BTreeMap<String, [usize; 3]> {
    let topic = |k: &str| k.split('|').next().unwrap_or_default().to_string();
    let mut out: BTreeMap<String, [usize; 3]> = BTreeMap::new();
    for (k, &n) in expected {
        let e = out.entry(topic(k)).or_default();
        e[0] += n;
        e[1] += n.saturating_sub(got.get(k).copied().unwrap_or(0));
    }
    for (k, &n) in got {
        if !expected.contains_key(k) {
            out.entry(topic(k)).or_default()[2] += n;
        }
    }
    out
}

/// At least one, for dividing a polling budget among readers.
fn readers_len(topics: &[String]) -> u32 {
    topics.len().max(1) as u32
}

/// Waiting for the committed output while instances keep running.
struct OutputWait<'f, 'o> {
    fleet: &'f mut Fleet<'o>,
    report: &'f mut ChaosReport,
    started: Instant,
}

impl OutputWait<'_, '_> {
    /// Reads the committed output until every expected record is there or the timeout passes (restarting
    /// instances that exit on their own; the run's seconds end there), then a little longer for late
    /// copies; counts per output key.
    fn committed(
        &mut self,
        cfg: &ClickpathConfig,
        opts: &ChaosOptions,
        output_topics: &[String],
        expected: &BTreeMap<String, usize>,
    ) -> anyhow::Result<BTreeMap<String, usize>> {
        let codec = Codec::embedded();
        let mut readers = output_topics
            .iter()
            .map(|t| TopicReader::new(cfg, t).map(|r| (t.as_str(), r)))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let deadline = Instant::now() + opts.timeout;
        let mut got: BTreeMap<String, usize> = BTreeMap::new();
        let budget = Duration::from_millis(1000 / readers.len().max(1) as u64);
        // Expected keys seen so far, counted as they arrive (recounting every key of a large run
        // after every poll took longer than the polls).
        let mut found = 0usize;
        let mut count = |budget: Duration, got: &mut BTreeMap<String, usize>| {
            for (topic, reader) in readers.iter_mut() {
                for rec in reader.poll_for(budget) {
                    let key = match opts.target {
                        Target::Stage(stage) => output_key(stage, &codec, &rec.payload),
                        whole => {
                            let key =
                                chain_output_key(cfg, whole, &codec, topic, &rec.key, &rec.payload);
                            let Some(key) = key else {
                                continue;
                            };
                            key
                        }
                    };
                    let first = !got.contains_key(&key);
                    found += usize::from(first && expected.contains_key(&key));
                    *got.entry(key).or_default() += 1;
                }
            }
            found
        };
        loop {
            self.fleet.reap_exits(self.report)?;
            let found = count(budget, &mut got);
            if found >= expected.len() || Instant::now() > deadline {
                break;
            }
        }
        self.report.seconds = self.started.elapsed().as_secs_f64();
        // Late copies (at-least-once replays) may still trickle in.
        count(
            Duration::from_secs(2) / readers_len(output_topics),
            &mut got,
        );
        Ok(got)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stall_warnings_are_collected_from_the_instance_logs_without_colours() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("instance-0.1.log"),
            "ok line\n\u{1b}[33m WARN\u{1b}[0m Partition stalled: records are waiting topic=t partition=2\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("instance-1.1.log"), "nothing here\n").unwrap();
        std::fs::write(dir.path().join("clickpath.toml"), "Partition stalled\n").unwrap();
        let found = stall_warnings(dir.path());
        assert_eq!(
            found,
            vec![
                "instance-0.1.log:  WARN Partition stalled: records are waiting topic=t partition=2"
                    .to_string()
            ]
        );
        let report = ChaosReport {
            stalls: found,
            ..ChaosReport::default()
        };
        assert!(report.problems(Guarantee::AtLeastOnce)[0].contains("stalled partitions"));
    }
}
