//! Stage processes under fire: several `clickpath run <stage>` instances in one consumer group, SIGKILLed at
//! random points of the run (and restarted), optionally with the broker itself restarted half-way, or with one
//! of them killed for good to measure how long its partitions stay idle. The committed output
//! (`read_committed`) is then compared with what the pure `core` logic gives over exactly what each input
//! partition holds, which is what an uninterrupted run produces.

use super::TopicReader;
use clickpath_cli::generate::send_generated;
use clickpath_cli::produce::EventProducer;
use clickpath_core::dedupe::Deduper;
use clickpath_core::session::Sessionizer;
use clickpath_core::validate::validate_and_normalise;
use clickpath_generator::{DirtyConfig, Generated, Generator, GeneratorConfig};
use clickpath_runtime::config::Guarantee;
use clickpath_runtime::kafka::base_client_config;
use clickpath_schema::codec::Codec;
use clickpath_schema::{ClickEvent, EventType, FeatureVector, SessionSummary};
use clickpath_stages::ClickpathConfig;
use clickpath_stages::StageName;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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

/// One chaos run.
#[derive(Debug, Clone)]
pub struct ChaosOptions {
    /// The stage under test: `cleaning`, `sessionizer` or `windower`.
    pub stage: StageName,
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
    /// Rebalance: per input partition, seconds from the SIGKILL until its committed offset moved (`None`:
    /// never within the timeout).
    pub partition_resume_s: Vec<Option<f64>>,
    /// Seconds from the first input record until the output was complete.
    pub seconds: f64,
    /// Samples of lost and unexpected outputs.
    pub samples: Vec<String>,
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
        s += &format!("unexpected exits: {}\n", self.unexpected_exits.len());
        for e in &self.unexpected_exits {
            s += &format!("  - {e}\n");
        }
        s += &super::verdict(&self.problems(guarantee));
        s
    }
}

/// The instances of the stage under test.
struct Fleet<'a> {
    opts: &'a ChaosOptions,
    config: PathBuf,
    children: Vec<Option<Child>>,
    starts: Vec<usize>,
}

impl Fleet<'_> {
    fn log_path(&self, i: usize, n: usize) -> PathBuf {
        self.opts.work_dir.join(format!("instance-{i}.{n}.log"))
    }

    fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        self.starts[i] += 1;
        let log = std::fs::File::create(self.log_path(i, self.starts[i]))?;
        let child = Command::new(&self.opts.binary)
            .arg("--config")
            .arg(&self.config)
            .args(["run", self.opts.stage.as_str()])
            .env_remove("CLICKPATH_CONFIG")
            .env("CLICKPATH__KAFKA__INSTANCE_ID", format!("chaos-{i}"))
            // Warnings, and the rebalances (which a failed run's diagnosis starts from);
            // CLICKPATH_CHAOS_INSTANCE_LOG overrides it.
            .env(
                "RUST_LOG",
                std::env::var("CLICKPATH_CHAOS_INSTANCE_LOG")
                    .unwrap_or_else(|_| "warn,clickpath_runtime::kafka=info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        self.children[i] = Some(child);
        Ok(())
    }

    /// SIGKILL (std's `Child::kill` is SIGKILL on Unix) and reap.
    fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.children[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Instances that exited on their own: recorded and restarted.
    fn reap_exits(&mut self, report: &mut ChaosReport) -> anyhow::Result<()> {
        for i in 0..self.children.len() {
            let exited = match self.children[i].as_mut() {
                Some(c) => c.try_wait()?,
                None => None,
            };
            if let Some(status) = exited {
                let log =
                    std::fs::read_to_string(self.log_path(i, self.starts[i])).unwrap_or_default();
                let last = log
                    .lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("");
                report
                    .unexpected_exits
                    .push(format!("instance {i} exited ({status}): {last}"));
                self.spawn(i)?;
            }
        }
        Ok(())
    }

    /// SIGTERM everyone (drain) and wait.
    fn stop(&mut self) {
        for c in self.children.iter().flatten() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
        }
        for c in self.children.iter_mut() {
            if let Some(mut c) = c.take() {
                let deadline = Instant::now() + Duration::from_secs(40);
                while matches!(c.try_wait(), Ok(None)) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(100));
                }
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

impl Drop for Fleet<'_> {
    fn drop(&mut self) {
        for i in 0..self.children.len() {
            self.kill(i);
        }
    }
}

/// Committed offsets of the stage's consumer group on its input topic.
pub(super) struct Progress {
    consumer: BaseConsumer,
    tpl: TopicPartitionList,
}

impl Progress {
    pub(super) fn new(
        cfg: &ClickpathConfig,
        stage: StageName,
        topic: &str,
    ) -> anyhow::Result<Self> {
        let mut c = base_client_config(cfg);
        c.set(
            "group.id",
            format!("{}.{}", cfg.kafka.group_prefix, stage.as_str()),
        )
        .set("enable.auto.commit", "false")
        // The harness's view of progress must not wait for open transactions: read_committed would ask
        // for stable offsets, and a transaction holding an offset commit (a killed instance's, until it
        // times out) makes that look-up fail.
        .set("isolation.level", "read_uncommitted");
        let consumer: BaseConsumer = c.create()?;
        let mut tpl = TopicPartitionList::new();
        for p in 0..cfg.topics.partitions {
            tpl.add_partition(topic, p);
        }
        Ok(Progress { consumer, tpl })
    }

    /// The group's lag: high watermarks minus committed offsets, summed over the partitions; `None` while
    /// the broker does not answer.
    pub(super) fn lag(&self) -> Option<u64> {
        let committed: i64 = self.committed()?.iter().sum();
        let mut high = 0;
        for e in self.tpl.elements() {
            high += self
                .consumer
                .fetch_watermarks(e.topic(), e.partition(), Duration::from_secs(3))
                .ok()?
                .1;
        }
        Some((high - committed).max(0) as u64)
    }

    /// High watermark per partition; `None` while the broker does not answer.
    fn ends(&self) -> Option<Vec<i64>> {
        self.tpl
            .elements()
            .iter()
            .map(|e| {
                self.consumer
                    .fetch_watermarks(e.topic(), e.partition(), Duration::from_secs(3))
                    .ok()
                    .map(|w| w.1)
            })
            .collect()
    }

    /// Committed offset per partition (0 when none yet); `None` while the broker does not answer.
    fn committed(&self) -> Option<Vec<i64>> {
        let got = self
            .consumer
            .committed_offsets(self.tpl.clone(), Duration::from_secs(3))
            .ok()?;
        Some(
            got.elements()
                .iter()
                .map(|e| match e.offset() {
                    Offset::Offset(o) => o,
                    _ => 0,
                })
                .collect(),
        )
    }
}

fn write_config(dir: &Path, cfg: &ClickpathConfig) -> anyhow::Result<PathBuf> {
    let path = dir.join("clickpath.toml");
    std::fs::write(&path, toml::to_string(cfg)?)?;
    Ok(path)
}

/// The input: generated events (the cleaning stage also gets the generator's malformed records).
fn input_items(opts: &ChaosOptions) -> anyhow::Result<Vec<Generated>> {
    let mut gcfg = GeneratorConfig {
        seed: opts.seed,
        sessions: opts.sessions,
        ..GeneratorConfig::default()
    };
    if opts.stage != StageName::Cleaning {
        gcfg.dirty = DirtyConfig {
            malformed_rate: 0.0,
            ..gcfg.dirty
        };
    }
    Ok(Generator::new(gcfg)?.collect())
}

/// Runs one chaos scenario against the broker in `base` (topics and groups get a fresh prefix).
pub fn run_chaos(base: &ClickpathConfig, opts: &ChaosOptions) -> anyhow::Result<ChaosReport> {
    anyhow::ensure!(
        matches!(
            opts.stage,
            StageName::Cleaning | StageName::Sessionizer | StageName::Windower
        ),
        "chaos runs the cleaning stage, the sessionizer or the windower, not {}",
        opts.stage.as_str()
    );
    anyhow::ensure!(opts.instances >= 1, "at least one instance");
    let scenario = format!("{}-{}", opts.stage.as_str(), guarantee_name(opts.guarantee));
    let mut cfg = super::isolated_config(base, &scenario);
    cfg.processing.guarantee = opts.guarantee;
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
    std::fs::create_dir_all(&opts.work_dir)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(clickpath_runtime::kafka::create_topics(&cfg, &cfg.topics))?;
    let input_topic = match opts.stage {
        StageName::Cleaning => cfg.topics.raw.clone(),
        _ => cfg.topics.clean.clone(),
    };
    let output_topic = match opts.stage {
        StageName::Cleaning => cfg.topics.clean.clone(),
        StageName::Windower => cfg.topics.features.clone(),
        _ => cfg.topics.sessions.clone(),
    };
    let codec = Codec::embedded();
    let items = input_items(opts)?;
    let total = items.len() as u64;

    let mut report = ChaosReport {
        what: format!(
            "{} {} x{}",
            opts.stage.as_str(),
            guarantee_name(opts.guarantee),
            opts.instances
        ),
        exits_fail: opts.broker.is_some(),
        ..ChaosReport::default()
    };
    let mut fleet = Fleet {
        opts,
        config: write_config(&opts.work_dir, &cfg)?,
        children: (0..opts.instances).map(|_| None).collect(),
        starts: vec![0; opts.instances],
    };
    for i in 0..opts.instances {
        fleet.spawn(i)?;
    }
    let progress = Progress::new(&cfg, opts.stage, &input_topic)?;
    let mut rng = StdRng::seed_from_u64(opts.seed ^ 0x5eed);
    // Kill points: fractions of the input the group has committed.
    let mut kill_points: Vec<f64> = (0..opts.kills)
        .map(|_| rng.random_range(0.02..0.95))
        .collect();
    kill_points.sort_by(f64::total_cmp);
    let mut broker_points: Vec<f64> = opts.broker.as_ref().map_or(Vec::new(), |b| b.at.clone());
    broker_points.sort_by(f64::total_cmp);
    let mut rebalance_point = opts.rebalance.then_some(0.33);

    // The harness's own input must outlast a broker restart that takes long on a loaded machine (the
    // default message timeout is 60 s).
    let mut sender_cfg = cfg.clone();
    sender_cfg
        .kafka
        .producer_properties
        .insert("message.timeout.ms".into(), "600000".into());
    let started = Instant::now();
    let sent = AtomicU64::new(0);
    let done_sending = AtomicBool::new(false);
    let result: anyhow::Result<()> = std::thread::scope(|s| {
        let sender = s.spawn(|| -> anyhow::Result<()> {
            let r = (|| {
                let mut producer =
                    EventProducer::new(&sender_cfg, codec.clone(), &input_topic, opts.rate)?;
                for (i, item) in items.iter().enumerate() {
                    send_generated(&mut producer, item)?;
                    if i % 1000 == 999 {
                        sent.store(i as u64 + 1, Ordering::Relaxed);
                    }
                }
                producer.flush()?;
                sent.store(total, Ordering::Relaxed);
                Ok(())
            })();
            done_sending.store(true, Ordering::Relaxed);
            r
        });
        let mut last_committed = 0u64;
        while !(done_sending.load(Ordering::Relaxed)
            && kill_points.is_empty()
            && broker_points.is_empty()
            && rebalance_point.is_none())
        {
            fleet.reap_exits(&mut report)?;
            if let Some(c) = progress.committed() {
                last_committed = c.iter().map(|&o| o.max(0) as u64).sum();
            }
            let frac = last_committed as f64 / total.max(1) as f64;
            let stalled = done_sending.load(Ordering::Relaxed) && started.elapsed() > opts.timeout;
            if let Some(&p) = kill_points.first()
                && (frac >= p || stalled)
            {
                kill_points.remove(0);
                let victim = rng.random_range(0..opts.instances);
                fleet.kill(victim);
                report.kills += 1;
                std::thread::sleep(Duration::from_millis(rng.random_range(0..1000)));
                fleet.spawn(victim)?;
            }
            if let Some(&p) = broker_points.first()
                && (frac >= p || stalled)
            {
                broker_points.remove(0);
                let b = opts.broker.as_ref().expect("broker points imply control");
                let victim = b.kill_one.then(|| rng.random_range(0..opts.instances));
                if let Some(v) = victim {
                    fleet.kill(v);
                    report.kills += 1;
                }
                report
                    .broker_restarts
                    .push(restart_broker(b, || match victim {
                        Some(v) => fleet.spawn(v),
                        None => Ok(()),
                    })?);
            }
            if let Some(p) = rebalance_point
                && (frac >= p || stalled)
            {
                rebalance_point = None;
                report.kills += 1;
                let resumed = measure_recovery(&mut fleet, &progress);
                report.recovery_s = resumed
                    .iter()
                    .copied()
                    .try_fold(0.0f64, |m, t| t.map(|t| m.max(t)));
                report.partition_resume_s = resumed;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        sender
            .join()
            .map_err(|_| anyhow::anyhow!("the input producer panicked"))??;
        Ok(())
    });
    result?;

    // A far-future event on every partition closes every open session of the sessionizer.
    let mut input_records = total;
    if opts.stage == StageName::Sessionizer {
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
    let expected = reference(&cfg, opts.stage, &codec, &input);
    report.expected = expected.len();

    // Wait for the output, restarting instances that exit on their own.
    let mut reader = TopicReader::new(&cfg, &output_topic)?;
    let deadline = Instant::now() + opts.timeout;
    let mut got: BTreeMap<String, usize> = BTreeMap::new();
    loop {
        fleet.reap_exits(&mut report)?;
        for rec in reader.poll_for(Duration::from_secs(1)) {
            *got.entry(output_key(opts.stage, &codec, &rec.payload))
                .or_default() += 1;
        }
        let found = expected.keys().filter(|k| got.contains_key(*k)).count();
        if found >= expected.len() || Instant::now() > deadline {
            break;
        }
    }
    report.seconds = started.elapsed().as_secs_f64();
    // Late copies (at-least-once replays) may still trickle in.
    for rec in reader.poll_for(Duration::from_secs(2)) {
        *got.entry(output_key(opts.stage, &codec, &rec.payload))
            .or_default() += 1;
    }
    fleet.stop();
    report.stalls = stall_warnings(&opts.work_dir);
    compare(&expected, &got, &mut report);
    Ok(report)
}

/// What identifies one output record of the stage under test: a clean event or a feature vector by its
/// event id (the windower's values depend on in-memory window state, which a rewind or a SIGKILL resets, so
/// only their presence is compared), a session by everything it summarises.
fn output_key(stage: StageName, codec: &Codec, payload: &[u8]) -> String {
    let key = match stage {
        StageName::Cleaning => codec.decode::<ClickEvent>(payload).map(|e| e.event_id),
        StageName::Windower => codec.decode::<FeatureVector>(payload).map(|f| f.event_id),
        _ => codec
            .decode::<SessionSummary>(payload)
            .map(|s| session_key(&s)),
    };
    key.unwrap_or_else(|e| format!("undecodable output: {e}"))
}

/// The first few "Partition stalled" warnings in the instances' logs under `dir`.
fn stall_warnings(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    let mut logs: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    logs.sort();
    for log in logs {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        for line in text.lines().filter(|l| l.contains("Partition stalled")) {
            if found.len() < 5 {
                let name = log.file_name().unwrap_or_default().to_string_lossy();
                found.push(format!("{name}: {}", strip_ansi(line)));
            }
        }
    }
    found
}

/// A log line without its terminal colour codes.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // ESC [ ... letter
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn guarantee_name(g: Guarantee) -> &'static str {
    match g {
        Guarantee::ExactlyOnce => "exactly_once",
        Guarantee::AtLeastOnce => "at_least_once",
    }
}

/// Kills one instance for good; returns per partition the seconds until its committed offset moved past
/// where it stood just after the kill (`None`: not within the run's timeout).
/// A partition counts as resumed once its committed offset moved past where it stood at the kill, or once
/// it has caught up with its input (a partition whose input ended before it could move).
fn measure_recovery(fleet: &mut Fleet<'_>, progress: &Progress) -> Vec<Option<f64>> {
    let started = Instant::now();
    let deadline = started + fleet.opts.timeout;
    // The baseline is taken before the kill: afterwards the look-up may wait for the victim's open
    // transaction, and the others would have moved on meanwhile.
    let baseline = loop {
        if let Some(c) = progress.committed() {
            break c;
        }
        if Instant::now() > deadline {
            return Vec::new();
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let victim = fleet.children.len() - 1;
    fleet.kill(victim);
    let killed = Instant::now();
    let mut resumed: Vec<Option<f64>> = vec![None; baseline.len()];
    while Instant::now() < deadline && resumed.iter().any(Option::is_none) {
        if let (Some(c), Some(ends)) = (progress.committed(), progress.ends()) {
            for (p, o) in c.iter().enumerate() {
                let caught_up = *o >= ends[p] && killed.elapsed() > Duration::from_secs(1);
                if (*o > baseline[p] || caught_up) && resumed[p].is_none() {
                    resumed[p] = Some(killed.elapsed().as_secs_f64());
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    resumed
}

/// Stops the broker, runs `while_down`, waits out the rest of `down_s`, starts it; returns the seconds from
/// stop to answering again.
fn restart_broker(
    b: &BrokerControl,
    while_down: impl FnOnce() -> anyhow::Result<()>,
) -> anyhow::Result<f64> {
    let t = Instant::now();
    let run = |cmd: &str| -> anyhow::Result<()> {
        let out = Command::new("sh").arg("-c").arg(cmd).output()?;
        anyhow::ensure!(
            out.status.success(),
            "{cmd:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    };
    run(&b.stop)?;
    let down = Instant::now();
    while_down()?;
    std::thread::sleep(Duration::from_secs_f64(b.down_s).saturating_sub(down.elapsed()));
    run(&b.start)?;
    Ok(t.elapsed().as_secs_f64())
}

fn send_sentinels(
    cfg: &ClickpathConfig,
    codec: &Codec,
    topic: &str,
    time: i64,
) -> anyhow::Result<()> {
    let producer: ThreadedProducer<DefaultProducerContext> =
        clickpath_runtime::kafka::producer_config(cfg).create()?;
    for p in 0..cfg.topics.partitions {
        let ev = ClickEvent::new(
            format!("sentinel-{p}"),
            format!("sentinel-{p}"),
            EventType::PageView,
            time,
        );
        let bytes = codec.encode(&ev)?;
        producer
            .send(
                BaseRecord::to(topic)
                    .partition(p)
                    .key(ev.user_id.as_bytes())
                    .payload(&bytes),
            )
            .map_err(|(e, _)| anyhow::anyhow!("cannot send a sentinel: {e}"))?;
    }
    producer.flush(Duration::from_secs(30))?;
    Ok(())
}

/// The parts of a session that must match.
fn session_key(s: &SessionSummary) -> String {
    format!(
        "{}|{}|{}|{}|{:?}|{}|{}",
        s.user_id, s.start_time, s.end_time, s.event_count, s.path, s.purchased, s.order_value
    )
}

/// Expected outputs (with multiplicity) of an uninterrupted run over `input`.
fn reference(
    cfg: &ClickpathConfig,
    stage: StageName,
    codec: &Codec,
    input: &[super::ReadRecord],
) -> BTreeMap<String, usize> {
    let mut by_partition: BTreeMap<i32, Vec<&super::ReadRecord>> = BTreeMap::new();
    for r in input {
        by_partition.entry(r.partition).or_default().push(r);
    }
    let mut out: BTreeMap<String, usize> = BTreeMap::new();
    let now = clickpath_runtime::runner::now_ms();
    for records in by_partition.values_mut() {
        records.sort_by_key(|r| r.offset);
        match stage {
            StageName::Cleaning => {
                let c = &cfg.cleaning;
                let mut dedupe = Deduper::new(c.dedupe_window_ms, c.dedupe_max_ids);
                for r in records.iter() {
                    if r.payload.len() > cfg.runtime.max_record_bytes {
                        continue;
                    }
                    let Ok(mut ev) = codec.decode::<ClickEvent>(&r.payload) else {
                        continue;
                    };
                    if validate_and_normalise(&mut ev, &c.validation, now).is_err()
                        || dedupe.is_duplicate(&ev.event_id, ev.event_time)
                    {
                        continue;
                    }
                    *out.entry(ev.event_id).or_default() += 1;
                }
            }
            StageName::Windower => {
                for r in records.iter() {
                    if let Ok(ev) = codec.decode::<ClickEvent>(&r.payload) {
                        *out.entry(ev.event_id).or_default() += 1;
                    }
                }
            }
            _ => {
                let mut s = Sessionizer::new(cfg.sessionizer.clone());
                for r in records.iter() {
                    if let Ok(ev) = codec.decode::<ClickEvent>(&r.payload) {
                        for summary in s.on_event(&ev) {
                            *out.entry(session_key(&summary)).or_default() += 1;
                        }
                    }
                }
            }
        }
    }
    out
}

fn compare(
    expected: &BTreeMap<String, usize>,
    got: &BTreeMap<String, usize>,
    report: &mut ChaosReport,
) {
    report.distinct = got.len();
    for (k, &n) in expected {
        let have = got.get(k).copied().unwrap_or(0);
        if have < n {
            report.lost += n - have;
            if report.samples.len() < 5 {
                report.samples.push(format!("lost: {k}"));
            }
        } else {
            report.duplicates += have - n;
        }
    }
    for (k, &n) in got {
        if !expected.contains_key(k) {
            report.unexpected += n;
            if report.samples.len() < 10 {
                report.samples.push(format!("unexpected: {k}"));
            }
        }
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
