//! `clickpath`: run the stages, generate and replay clickstreams, train models, run the demo.

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use clickpath_cli::demo::{DemoOptions, run_demo};
use clickpath_cli::generate::{generate_to_dir, generate_to_kafka, read_events_jsonl};
use clickpath_cli::pipeline::{join_stages, spawn_stages};
use clickpath_cli::produce::EventProducer;
use clickpath_generator::{Generator, GeneratorConfig};
use clickpath_runtime::{ClickpathConfig, RunnerEnv};
use clickpath_schema::codec::Codec;
use clickpath_stages::StageName;
use std::io::IsTerminal;
use std::path::PathBuf;

/// mimalloc instead of glibc malloc: the stages allocate and free every decoded record's strings,
/// and malloc/free were a fifth of the stage chain's time (BENCHMARKS.md, "Allocator").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "clickpath",
    version,
    about = "Understand how shoppers move from first look to purchase, live on Kafka."
)]
struct Cli {
    /// Configuration file (TOML), layered over the embedded defaults; CLICKPATH__SECTION__KEY variables win.
    #[arg(long, global = true, env = "CLICKPATH_CONFIG")]
    config: Option<PathBuf>,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Generator plus every stage on an embedded bus (or --brokers), with live progress and a summary.
    Demo {
        /// Use this Kafka cluster instead of the embedded one.
        #[arg(long)]
        brokers: Option<String>,
        /// Sessions to generate.
        #[arg(long, default_value_t = 3000)]
        sessions: usize,
        /// Records per second (0 = as fast as possible).
        #[arg(long, default_value_t = 0.0)]
        rate: f64,
        /// Generator seed.
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
    /// Run one stage (or all of them) until SIGTERM/SIGINT.
    Run {
        /// cleaning, sessionizer, windower, scorer, detector, analytics, or all.
        stage: String,
    },
    /// Topic administration.
    Topics {
        #[command(subcommand)]
        action: TopicsAction,
    },
    /// Generate clickstream events with ground truth, into files or the raw topic.
    Generate {
        /// Write events.jsonl, malformed.jsonl and ground truth into this directory.
        #[arg(long, conflicts_with = "kafka")]
        out: Option<PathBuf>,
        /// Produce into the raw topic instead.
        #[arg(long)]
        kafka: bool,
        /// Sessions to generate (overrides the generator config).
        #[arg(long)]
        sessions: Option<usize>,
        /// Seed (overrides the generator config).
        #[arg(long)]
        seed: Option<u64>,
        /// Records per second when producing (0 = as fast as possible).
        #[arg(long, default_value_t = 0.0)]
        rate: f64,
        /// Generator configuration (TOML; see GeneratorConfig).
        #[arg(long)]
        generator_config: Option<PathBuf>,
    },
    /// Replay a public data set file (or generator output) into the raw topic.
    Replay {
        /// rees46, retailrocket, otto, diginetica, or jsonl (clickpath's own event lines).
        #[arg(long)]
        format: String,
        /// The file.
        file: PathBuf,
        /// Records per second (0 = as fast as possible).
        #[arg(long, default_value_t = 0.0)]
        rate: f64,
    },
    /// Fit a model from events in a file and write a versioned artifact directory.
    Train {
        /// Model kind: `baseline` (Markov chain + logistic regression), or a Burn sequence
        /// model: `gru`, `lstm` or `transformer`.
        #[arg(long, default_value = "gru")]
        model: String,
        /// Events file (JSON lines from `generate --out`, or a public data set with --format).
        #[arg(long, required_unless_present = "topic", conflicts_with = "topic")]
        input: Option<PathBuf>,
        /// Format of --input: jsonl, rees46, retailrocket, otto or diginetica.
        #[arg(long, default_value = "jsonl")]
        format: String,
        /// Replay click events from this topic instead (for example the clean topic); no consumer
        /// group, nothing committed.
        #[arg(long)]
        topic: Option<String>,
        /// With --topic: first record time (ms since the epoch or RFC 3339 UTC).
        #[arg(long, requires = "topic")]
        since: Option<String>,
        /// With --topic: end record time (exclusive).
        #[arg(long, requires = "topic")]
        until: Option<String>,
        /// Artifact directory to write.
        #[arg(long)]
        out: PathBuf,
        /// Training configuration for sequence models (TOML; see SequenceTrainConfig).
        #[arg(long)]
        train_config: Option<PathBuf>,
        /// Most epochs (overrides the training configuration).
        #[arg(long)]
        epochs: Option<usize>,
        /// Hidden size (overrides the training configuration).
        #[arg(long)]
        hidden: Option<usize>,
        /// cpu (Burn flex) or cuda (needs a build with --features cuda).
        #[arg(long, default_value = "cpu")]
        device: String,
    },
    /// Time the sequence model's online step per batch size (CPU, or CUDA with --features cuda).
    BenchScorer {
        /// cpu or cuda.
        #[arg(long, default_value = "cpu")]
        device: String,
        /// gru, lstm or transformer.
        #[arg(long, default_value = "gru")]
        model: String,
        /// Hidden size.
        #[arg(long, default_value_t = 64)]
        hidden: usize,
        /// Batch sizes, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1,16,64,256,1024")]
        batch: Vec<usize>,
        /// Seconds per batch size.
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
        /// Also write the rows as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Compare models on the test split of events: sequence models, the baselines and, with the
    /// generator's truth file, the oracle.
    Evaluate(clickpath_cli::evaluate::EvaluateArgs),
    /// Measure the detector on labelled generator scenarios: precision, recall, latency per type.
    EvaluateDetector {
        /// Ordinary sessions to generate.
        #[arg(long, default_value_t = 20_000)]
        sessions: u64,
        /// Generator seed.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Injected instances of each scenario type.
        #[arg(long, default_value_t = 25)]
        per_type: u32,
        /// Also score every event with the configured model and feed the predictions to the
        /// detector (the model-surprise rule).
        #[arg(long)]
        model_surprise: bool,
    },
    /// Path analytics of events from a file or a topic (funnel, paths, time to convert, decision factors),
    /// or of the analytics topic's funnel aggregates, as one HTML page.
    Report(clickpath_cli::report::ReportArgs),
    /// End-to-end load test on a real broker: pass-through baseline, pipeline at maximum and fixed rates.
    Bench(clickpath_cli::bench::BenchArgs),
    /// Measure how fast the sessionizer restores its state from the changelog (needs a broker).
    BenchRestore {
        /// Users whose state is written and restored.
        #[arg(long, default_value_t = 200_000)]
        users: usize,
        /// Write the state as JSON (the format of earlier versions) instead of binary.
        #[arg(long)]
        json_state: bool,
    },
    /// Fault injection on a real broker: hostile input, SIGKILLs, broker restart, rebalance (RELIABILITY.md).
    #[command(subcommand)]
    Chaos(clickpath_cli::chaos::ChaosCommand),
    /// Check configuration files and report every problem at once.
    Validate {
        /// Files to check (default: the --config file, or the embedded defaults).
        files: Vec<PathBuf>,
    },
}

#[derive(Subcommand)]
enum TopicsAction {
    /// Create every configured topic that does not exist yet.
    Create,
}

/// What must outlive logging: the OTLP exporter, flushed when dropped.
#[cfg(feature = "otlp")]
type TelemetryGuard = Option<clickpath_runtime::telemetry::OtlpGuard>;
#[cfg(not(feature = "otlp"))]
type TelemetryGuard = Option<std::convert::Infallible>;

fn init_logging(format: LogFormat, default_level: &str) -> TelemetryGuard {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = match format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt.json().boxed(),
    };
    let registry = tracing_subscriber::registry().with(filter).with(fmt);
    let otlp = clickpath_runtime::telemetry::OtlpSettings::from_env();
    #[cfg(feature = "otlp")]
    {
        match otlp.map(|s| clickpath_runtime::telemetry::otlp_layer(&s)) {
            Some(Ok((layer, guard))) => {
                registry.with(layer).init();
                Some(guard)
            }
            Some(Err(e)) => {
                registry.init();
                tracing::error!(error = %e, "Cannot set up the OTLP exporter; spans are not exported.");
                None
            }
            None => {
                registry.init();
                None
            }
        }
    }
    #[cfg(not(feature = "otlp"))]
    {
        registry.init();
        if let Some(s) = otlp {
            tracing::warn!(
                endpoint = %s.traces_endpoint,
                "OTEL_EXPORTER_OTLP_ENDPOINT is set, but this build has no OTLP export (build with --features otlp)."
            );
        }
        None
    }
}

fn main() {
    let cli = Cli::parse();
    let quiet = matches!(cli.command, Command::Demo { .. } | Command::Bench(_));
    let result = {
        // Dropped before the exit below (process::exit skips destructors): flushes exported spans.
        let _telemetry = init_logging(cli.log_format, if quiet { "warn" } else { "info" });
        run(cli)
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn load_config(path: Option<&PathBuf>) -> anyhow::Result<ClickpathConfig> {
    Ok(ClickpathConfig::load(path.map(|p| p.as_path()))?)
}

fn env_for(cfg: ClickpathConfig) -> RunnerEnv {
    RunnerEnv::new(cfg, Codec::embedded())
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::EvaluateDetector {
            sessions,
            seed,
            per_type,
            model_surprise,
        } => {
            let cfg = load_config(cli.config.as_ref())?;
            let model_surprise = if model_surprise {
                Some(clickpath_cli::evaluate_detector::SurpriseSetup {
                    model: clickpath_stages::topology::load_scorer_model(&env_for(cfg.clone()))?,
                    windower: cfg.windower.clone(),
                    scorer: cfg.scorer.clone(),
                })
            } else {
                None
            };
            let opts = clickpath_cli::evaluate_detector::EvalOptions {
                sessions,
                seed,
                per_type,
                rules: cfg.detector,
                validation: cfg.cleaning.validation,
                dedupe_window_ms: cfg.cleaning.dedupe_window_ms,
                dedupe_max_ids: cfg.cleaning.dedupe_max_ids,
                model_surprise,
            };
            let report = clickpath_cli::evaluate_detector::evaluate(&opts)?;
            print!("{}", clickpath_cli::evaluate_detector::render(&report));
            Ok(())
        }
        Command::Chaos(cmd) => {
            clickpath_cli::chaos::run_command(cmd, &load_config(cli.config.as_ref())?)
        }
        Command::Report(args) => {
            let cfg = load_config(cli.config.as_ref())?;
            print!("{}", clickpath_cli::report::run(&args, &cfg)?);
            Ok(())
        }
        Command::Validate { files } => {
            let files: Vec<Option<PathBuf>> = if files.is_empty() {
                vec![cli.config.clone()]
            } else {
                files.into_iter().map(Some).collect()
            };
            let mut failed = 0;
            for f in &files {
                let name = f
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| "(defaults)".into());
                match ClickpathConfig::load(f.as_deref()) {
                    Ok(_) => println!("{name}: ok"),
                    Err(e) => {
                        failed += 1;
                        println!("{name}: {e}");
                    }
                }
            }
            if failed > 0 {
                anyhow::bail!("{failed} of {} configuration(s) invalid", files.len());
            }
            Ok(())
        }
        Command::Demo {
            brokers,
            sessions,
            rate,
            seed,
        } => {
            let cfg = load_config(cli.config.as_ref())?;
            let progress = std::io::stderr().is_terminal();
            let report = run_demo(
                cfg,
                &DemoOptions {
                    brokers,
                    sessions,
                    rate,
                    seed,
                    progress,
                },
            )?;
            print!("{}", report.render());
            Ok(())
        }
        Command::Run { stage } => {
            let cfg = load_config(cli.config.as_ref())?;
            let names: Vec<StageName> = if stage == "all" {
                StageName::ALL.to_vec()
            } else {
                vec![StageName::parse(&stage).with_context(|| {
                    format!("unknown stage {stage:?}; expected cleaning, sessionizer, windower, scorer, detector, analytics or all")
                })?]
            };
            let env = env_for(cfg);
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()?;
            rt.block_on(async {
                env.shutdown.trigger_on_signals();
                clickpath_runtime::http::serve_env(&env).await
            })?;
            let running = spawn_stages(&names, &env, false)?;
            join_stages(running)?;
            Ok(())
        }
        Command::Bench(args) => {
            let cfg = load_config(cli.config.as_ref())?;
            let report =
                clickpath_cli::bench::run_bench(cfg, &args, std::io::stderr().is_terminal())?;
            print!("{}", report.render());
            Ok(())
        }
        Command::BenchRestore { users, json_state } => {
            let mut cfg = load_config(cli.config.as_ref())?;
            let run_id = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_millis();
            cfg.topics = cfg.topics.with_prefix(&format!("bench-{run_id}."));
            cfg.kafka.group_prefix = format!("clickpath-bench-{run_id}");
            let r = clickpath_cli::bench_restore::bench_restore(&cfg, users, json_state)?;
            println!(
                "restored {} users ({} records, {:.1} MiB, {:.0} bytes/user) in {:.2} s = {:.0} users/s",
                r.users,
                r.records,
                r.bytes as f64 / (1 << 20) as f64,
                r.bytes as f64 / r.users.max(1) as f64,
                r.seconds,
                r.users_per_second()
            );
            Ok(())
        }
        Command::Topics {
            action: TopicsAction::Create,
        } => {
            let cfg = load_config(cli.config.as_ref())?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let created =
                rt.block_on(clickpath_runtime::kafka::create_topics(&cfg, &cfg.topics))?;
            for (role, name) in cfg.topics.all() {
                let state = if created.iter().any(|c| c == name) {
                    "created"
                } else {
                    "exists"
                };
                println!("{role:<13} {name:<32} {state}");
            }
            // Stateful stages' compacted changelogs (the stages also make them at start).
            let changelog = clickpath_runtime::changelog::changelog_topic(&cfg, "sessionizer");
            clickpath_runtime::changelog::ensure_changelog_topic(
                &cfg,
                &changelog,
                &cfg.topics.clean,
            )?;
            println!("{:<13} {changelog:<32} ready", "changelog");
            Ok(())
        }
        Command::Generate {
            out,
            kafka,
            sessions,
            seed,
            rate,
            generator_config,
        } => {
            let mut gcfg: GeneratorConfig = match generator_config {
                Some(p) => toml::from_str(
                    &std::fs::read_to_string(&p).with_context(|| p.display().to_string())?,
                )
                .with_context(|| format!("{}: invalid generator config", p.display()))?,
                None => GeneratorConfig::default(),
            };
            if let Some(s) = sessions {
                gcfg.sessions = s as u64;
            }
            if let Some(s) = seed {
                gcfg.seed = s;
            }
            if let Some(dir) = out {
                let stats = generate_to_dir(gcfg, &dir)?;
                println!(
                    "wrote {} events and {} malformed records to {}",
                    stats.events,
                    stats.malformed,
                    dir.display()
                );
                Ok(())
            } else if kafka {
                let cfg = load_config(cli.config.as_ref())?;
                let mut producer =
                    EventProducer::new(&cfg, Codec::embedded(), &cfg.topics.raw, rate)?;
                let bar = indicatif::ProgressBar::new_spinner();
                let stats = generate_to_kafka(Generator::new(gcfg)?, &mut producer, |s| {
                    bar.set_message(format!("{} events, {} malformed", s.events, s.malformed));
                    bar.tick();
                })?;
                bar.finish();
                println!(
                    "sent {} events and {} malformed records to {}",
                    stats.events, stats.malformed, cfg.topics.raw
                );
                Ok(())
            } else {
                anyhow::bail!("say where to: --out DIR or --kafka")
            }
        }
        Command::Replay { format, file, rate } => {
            let cfg = load_config(cli.config.as_ref())?;
            let mut producer = EventProducer::new(&cfg, Codec::embedded(), &cfg.topics.raw, rate)?;
            if format == "jsonl" {
                let events = read_events_jsonl(&file)?;
                for ev in &events {
                    producer.send_event(ev)?;
                }
                producer.flush()?;
                println!("sent {} events to {}", events.len(), cfg.topics.raw);
            } else {
                let fmt: clickpath_adapters::Format = format
                    .parse()
                    .map_err(|e| anyhow::anyhow!("--format {format}: {e}"))?;
                let stats = clickpath_cli::replay::replay(fmt, &file, &mut producer)?;
                println!(
                    "sent {} events to {} ({} bad rows skipped)",
                    stats.sent, cfg.topics.raw, stats.bad_rows
                );
            }
            Ok(())
        }
        Command::Train {
            model,
            input,
            format,
            topic,
            since,
            until,
            out,
            train_config,
            epochs,
            hidden,
            device,
        } => {
            let events = match (&input, &topic) {
                (Some(path), _) => clickpath_cli::evaluate::read_events(path, &format)?,
                (None, Some(topic)) => {
                    let cfg = load_config(cli.config.as_ref())?;
                    clickpath_cli::train::read_topic_events(
                        &cfg,
                        topic,
                        since.as_deref(),
                        until.as_deref(),
                    )?
                }
                (None, None) => {
                    anyhow::bail!("say where the events are: --input FILE or --topic NAME")
                }
            };
            if events.is_empty() {
                anyhow::bail!("no events to train on");
            }
            if model == "baseline" {
                let text =
                    clickpath_cli::train::train_baseline_to(&events, &Default::default(), &out)?;
                println!(
                    "trained on {} events; artifact in {}\n{text}",
                    events.len(),
                    out.display()
                );
                return Ok(());
            }
            let mut cfg: clickpath_model::sequence::SequenceTrainConfig = match &train_config {
                Some(p) => toml::from_str(
                    &std::fs::read_to_string(p).with_context(|| format!("{}", p.display()))?,
                )
                .with_context(|| format!("training configuration {}", p.display()))?,
                None => Default::default(),
            };
            cfg.net.architecture = clickpath_cli::train::parse_architecture(&model)?;
            if let Some(e) = epochs {
                cfg.max_epochs = e;
            }
            if let Some(h) = hidden {
                cfg.net.hidden = h;
            }
            let device = match device.as_str() {
                "cpu" => clickpath_cli::train::Device::Cpu,
                "cuda" => clickpath_cli::train::Device::Cuda,
                other => anyhow::bail!("--device {other}: choose cpu or cuda"),
            };
            let text = clickpath_cli::train::train_sequence_to(
                &events,
                &cfg,
                device,
                &out,
                std::io::stderr().is_terminal(),
            )?;
            println!(
                "trained on {} events; artifact in {}\n{text}",
                events.len(),
                out.display()
            );
            Ok(())
        }
        Command::BenchScorer {
            device,
            model,
            hidden,
            batch,
            seconds,
            json,
        } => {
            let arch = clickpath_cli::train::parse_architecture(&model)?;
            let rows = clickpath_cli::bench_scorer::run(&device, arch, hidden, &batch, seconds)?;
            if let Some(path) = json {
                std::fs::write(&path, serde_json::to_vec_pretty(&rows)?)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            print!("{}", clickpath_cli::bench_scorer::table(&rows));
            Ok(())
        }
        Command::Evaluate(args) => {
            print!("{}", clickpath_cli::evaluate::run(&args)?);
            Ok(())
        }
    }
}
