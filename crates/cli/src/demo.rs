//! `clickpath demo`: generator plus every stage, on an embedded bus (librdkafka's in-process mock
//! cluster, nothing to install) or on a given broker, with live progress and a closing summary.

use crate::app::GlobalArgs;
use crate::collect::{Collected, Collector};
use crate::demo_quality::ModelQuality;
use crate::generate::{GenerateStats, generate_to_kafka};
use crate::pipeline::{join_stages, spawn_pipeline, taken, written};
use crate::produce::EventProducer;
use clickpath_generator::{Generated, Generator, GeneratorConfig};
use clickpath_schema::codec::Codec;
use clickpath_schema::{AlertType, ClickEvent, FunnelStage};
use clickpath_stages::ClickpathConfig;
use clickpath_stages::StageName;
use indicatif::{ProgressBar, ProgressStyle};
use rdkafka::mocking::MockCluster;
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// Arguments of `clickpath demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Use this Kafka cluster instead of the embedded one.
    #[arg(long)]
    pub brokers: Option<String>,
    /// Sessions to generate.
    #[arg(long, default_value_t = 3000)]
    pub sessions: usize,
    /// Records per second (0 = as fast as possible).
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Generator seed. Not 42, the seed of the stream the shipped models were trained on, so the
    /// quality figures of the summary are out of sample.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// The scorer's model artifact (overrides `scorer.model_dir`). Without it, and without
    /// `scorer.model_dir` in the configuration, the demo scores with the shipped GRU
    /// (`models/gru-example`, with next-item recommendations) when run from the repository, and the
    /// built-in baseline elsewhere.
    #[arg(long)]
    pub model: Option<std::path::PathBuf>,
}

/// The GRU the repository ships, relative to its root (where `make demo` runs).
pub const SHIPPED_MODEL: &str = "models/gru-example";

/// The session outlook the repository ships (return within 12 hours, 4 segments, trained on the default
/// generated stream), used by the demo when found.
pub const SHIPPED_OUTLOOK: &str = "models/outlook-example";

/// `clickpath demo`: runs it with a progress bar on a terminal and prints the summary.
pub fn run(args: &DemoArgs, global: &GlobalArgs) -> anyhow::Result<()> {
    let mut cfg = global.load_config()?;
    if let Some(dir) = &args.model {
        cfg.scorer.model_dir = Some(dir.clone());
    } else if cfg.scorer.model_dir.is_none() {
        let shipped = std::path::Path::new(SHIPPED_MODEL);
        if shipped.join("meta.json").is_file() {
            cfg.scorer.model_dir = Some(shipped.to_path_buf());
        } else {
            eprintln!(
                "{SHIPPED_MODEL} not found (run the demo from the repository root, or pass --model DIR): \
                 scoring with the built-in baseline, which recommends no items."
            );
        }
    }
    if cfg.outlook.model_dir.is_none() {
        let shipped = std::path::Path::new(SHIPPED_OUTLOOK);
        if shipped.join("meta.json").is_file() {
            cfg.outlook.model_dir = Some(shipped.to_path_buf());
        }
    }
    let opts = DemoOptions {
        brokers: args.brokers.clone(),
        sessions: args.sessions,
        rate: args.rate,
        seed: args.seed,
        progress: std::io::stderr().is_terminal(),
    };
    print!("{}", run_demo(cfg, &opts)?.render());
    Ok(())
}

/// Options of one demo run.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// A real broker to use instead of the embedded one.
    pub brokers: Option<String>,
    /// Sessions to generate.
    pub sessions: usize,
    /// Records per second (0 = as fast as possible).
    pub rate: f64,
    /// Generator seed.
    pub seed: u64,
    /// Show a progress bar (off when not a terminal or in tests).
    pub progress: bool,
}

/// What the demo measured.
#[derive(Debug, Clone)]
pub struct DemoReport {
    /// Records generated.
    pub generated: GenerateStats,
    /// Everything read back from the output topics.
    pub collected: Collected,
    /// How good the predictions were on the generated stream.
    pub quality: ModelQuality,
    /// Wall time from the first record sent until the pipeline drained.
    pub elapsed: Duration,
}

/// Runs the demo and returns its report (the caller prints it).
pub fn run_demo(base: ClickpathConfig, opts: &DemoOptions) -> anyhow::Result<DemoReport> {
    let mut cfg = base;
    // Fresh topics and groups per run, so a real broker's old data never mixes in; the process id and a
    // counter keep two demos started in the same millisecond (parallel tests) apart.
    static RUNS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let run_id = format!(
        "{}-{}-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis(),
        std::process::id(),
        RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    cfg.topics = cfg.topics.with_prefix(&format!("demo-{run_id}."));
    cfg.kafka.group_prefix = format!("clickpath-demo-{run_id}");
    cfg.http.bind = "127.0.0.1:0".into();
    let _mock; // keeps the embedded cluster alive for the whole run
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    match &opts.brokers {
        Some(b) => {
            cfg.kafka.brokers = b.clone();
            rt.block_on(clickpath_runtime::kafka::create_topics(&cfg, &cfg.topics))?;
        }
        None => {
            let mock = MockCluster::new(1)?;
            for (_, topic) in cfg.topics.all() {
                mock.create_topic(topic, cfg.topics.partitions, 1)?;
            }
            // The mock cluster has no admin API: make the stages' changelogs here (a stateless
            // stage leaves its topic empty).
            let stages = StageName::ALL.map(StageName::as_str);
            for stage in stages.into_iter().chain([clickpath_stages::chain::CHAIN]) {
                let changelog = clickpath_runtime::changelog::changelog_topic(&cfg, stage);
                mock.create_topic(&changelog, cfg.topics.partitions, 1)?;
            }
            cfg.kafka.brokers = mock.bootstrap_servers();
            _mock = mock;
        }
    }

    let env = cfg.runner_env(Codec::embedded());
    let addr = rt.block_on(clickpath_runtime::http::serve_env(&env))?;
    tracing::info!("Metrics at http://{addr}/metrics");
    let stages = spawn_pipeline(&cfg, &env, true)?;

    let generator_cfg = GeneratorConfig {
        seed: opts.seed,
        sessions: opts.sessions as u64,
        ..GeneratorConfig::default()
    };
    let generator = Generator::new(generator_cfg.clone())?;
    let bar = if opts.progress {
        ProgressBar::new_spinner()
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(ProgressStyle::with_template("{spinner} {elapsed} {msg}")?);
    bar.enable_steady_tick(Duration::from_millis(200));
    let started = Instant::now();
    let mut producer = EventProducer::new(&cfg, env.codec.clone(), &cfg.topics.raw, opts.rate)?;
    let t = cfg.topics.clone();
    let metrics = env.metrics.clone();
    let status = |produced: u64| {
        let secs = started.elapsed().as_secs_f64().max(1e-3);
        format!(
            "sent {produced} ({:.0}/s) | clean {} | sessions {} | predictions {} | alerts {} | dead letters {}",
            produced as f64 / secs,
            taken(&metrics, StageName::Sessionizer, &t.clean),
            written(&metrics, &t.sessions),
            written(&metrics, &t.predictions),
            written(&metrics, &t.alerts),
            written(&metrics, &t.dead_letters),
        )
    };
    let generated = generate_to_kafka(generator, &mut producer, |s| {
        bar.set_message(status(s.events + s.malformed))
    })?;
    let produced = producer.sent();

    // Wait until every stage has taken everything its upstream wrote (in the chain, everything is
    // done once the raw records are: their outputs commit together).
    let caught_up = || {
        let m = &env.metrics;
        let clean = written(m, &t.clean);
        taken(m, StageName::Cleaning, &t.raw) >= produced
            && [
                StageName::Sessionizer,
                StageName::Windower,
                StageName::Detector,
                StageName::Analytics,
            ]
            .into_iter()
            .all(|s| taken(m, s, &t.clean) >= clean)
            && taken(m, StageName::Scorer, &t.features) >= written(m, &t.features)
            && taken(m, StageName::Detector, &t.predictions) >= written(m, &t.predictions)
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while !caught_up() && Instant::now() < deadline && !env.shutdown.is_triggered() {
        bar.set_message(status(produced));
        std::thread::sleep(Duration::from_millis(100));
    }
    if !caught_up() {
        tracing::warn!("The pipeline did not catch up within 120 s; stopping anyway.");
    }
    env.shutdown.trigger();
    let summaries = join_stages(stages)?;
    let elapsed = started.elapsed();
    bar.finish_with_message(status(produced));

    let mut collector = Collector::new(&cfg, env.codec.clone())?;
    let want_sessions = written(&env.metrics, &t.sessions) as usize;
    let want_predictions = written(&env.metrics, &t.predictions) as usize;
    let want_alerts = written(&env.metrics, &t.alerts) as usize;
    let want_dead: u64 = summaries.iter().map(|(_, s)| s.dead_letters).sum();
    collector.poll_until(Duration::from_secs(60), |c| {
        c.sessions.len() >= want_sessions
            && c.predictions.len() >= want_predictions
            && c.alerts.len() >= want_alerts
            && c.dead_letters.len() as u64 >= want_dead
    });
    // The generator is deterministic: the same configuration gives the stream again, to score the
    // predictions against without holding it during the run.
    let events: Vec<ClickEvent> = Generator::new(generator_cfg)?
        .filter_map(|g| match g {
            Generated::Event(e) => Some(e),
            Generated::Malformed(_) => None,
        })
        .collect();
    let c = &collector.collected;
    let quality = ModelQuality::measure(&events, &c.sessions, &c.predictions);
    Ok(DemoReport {
        generated,
        quality,
        collected: collector.collected,
        elapsed,
    })
}

impl DemoReport {
    /// Which model scored, how many predictions recommend items, and one example.
    fn render_model(&self) -> String {
        let predictions = &self.collected.predictions;
        let mut versions: BTreeMap<&str, usize> = BTreeMap::new();
        for p in predictions {
            *versions.entry(p.model_version.as_str()).or_default() += 1;
        }
        let versions: Vec<String> = versions.iter().map(|(v, n)| format!("{v} ({n})")).collect();
        let mut out = format!("  scorer model: {}\n", versions.join(", "));
        let with_items = predictions
            .iter()
            .filter(|p| !p.recommended_items.is_empty())
            .count();
        out.push_str(&format!(
            "  next-item recommendations: {with_items} of {} predictions",
            predictions.len()
        ));
        if let Some(p) = predictions
            .iter()
            .rev()
            .find(|p| !p.recommended_items.is_empty())
        {
            let items: Vec<&str> = p
                .recommended_items
                .iter()
                .take(5)
                .map(|r| r.item_id.as_str())
                .collect();
            out.push_str(&format!(
                "; e.g. after {} of {}: {}",
                p.event_id,
                p.user_id,
                items.join(", ")
            ));
        }
        out.push('\n');
        out.push_str(&self.quality.render());
        out.push_str(&self.render_outlook());
        out
    }

    /// Sessions per outlook segment, when the sessionizer had an outlook model.
    fn render_outlook(&self) -> String {
        let mut segments: BTreeMap<i32, (usize, f64, &str)> = BTreeMap::new();
        let mut version = None;
        for s in &self.collected.sessions {
            if let Some(o) = &s.outlook {
                version = Some(o.model_version.as_str());
                let e =
                    segments
                        .entry(o.segment)
                        .or_insert((0, 0.0, o.segment_description.as_str()));
                e.0 += 1;
                e.1 += o.return_probability;
            }
        }
        let Some(version) = version else {
            return String::new();
        };
        let total: usize = segments.values().map(|v| v.0).sum();
        let mut out = format!(
            "  session outlook ({version}): segments of {total} sessions (the return probabilities are as \
             good as the model's test ROC-AUC: the shipped example's is 0.48, since the generator's returns \
             are random; docs/models.md)\n"
        );
        for (k, (n, p, description)) in segments {
            out.push_str(&format!(
                "    {k}: {:>5.1} %, mean return probability {:.2}; {description}\n",
                100.0 * n as f64 / total.max(1) as f64,
                p / n.max(1) as f64
            ));
        }
        out
    }

    /// The closing summary: funnel, alerts by type, throughput.
    pub fn render(&self) -> String {
        let c = &self.collected;
        let mut out = String::new();
        let sent = self.generated.events + self.generated.malformed;
        let secs = self.elapsed.as_secs_f64().max(1e-3);
        out.push_str(&format!(
            "clickpath demo: {sent} records ({} malformed injected) in {secs:.1} s = {:.0} records/s end to end\n",
            self.generated.malformed,
            sent as f64 / secs
        ));
        out.push_str(&format!(
            "  sessions {} | predictions {} | alerts {} | dead letters {}\n",
            c.sessions.len(),
            c.predictions.len(),
            c.alerts.len(),
            c.dead_letters.len()
        ));
        out.push_str(&self.render_model());
        let total = c.sessions.len().max(1) as f64;
        out.push_str("  funnel (share of sessions reaching each stage):\n");
        for stage in [
            FunnelStage::Browse,
            FunnelStage::ProductView,
            FunnelStage::Cart,
            FunnelStage::Checkout,
            FunnelStage::Purchase,
        ] {
            let n = c
                .sessions
                .iter()
                .filter(|s| s.furthest_stage >= stage)
                .count();
            out.push_str(&format!(
                "    {:<13} {:>7} {:>6.1} %\n",
                format!("{stage:?}"),
                n,
                100.0 * n as f64 / total
            ));
        }
        let mut by_type: BTreeMap<AlertType, usize> = BTreeMap::new();
        for a in &c.alerts {
            *by_type.entry(a.alert_type).or_default() += 1;
        }
        out.push_str("  alerts by type:");
        if by_type.is_empty() {
            out.push_str(" none");
        }
        for (t, n) in by_type {
            out.push_str(&format!(" {t:?}={n}"));
        }
        out.push('\n');
        let mut dl: BTreeMap<&str, usize> = BTreeMap::new();
        for d in &c.dead_letters {
            *dl.entry(d.error_kind.as_str()).or_default() += 1;
        }
        out.push_str("  dead letters by kind:");
        for (k, n) in dl {
            out.push_str(&format!(" {k}={n}"));
        }
        out.push('\n');
        out
    }
}
