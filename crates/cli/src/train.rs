//! `clickpath train`: fit a model (the baseline, or a Burn GRU / LSTM / Transformer) on events
//! from a file and write a versioned artifact directory.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use crate::app::GlobalArgs;
use anyhow::Context as _;
use clickpath_adapters::Format;
use clickpath_model::outlook::{OutlookMeta, OutlookTrainConfig, save_outlook, train_outlook};
use clickpath_model::sequence::{
    Architecture, CpuTrainBackend, SequenceTrainConfig, TrainProgress, save_sequence,
    train_sequence,
};
use clickpath_model::train::{TrainConfig, train_baseline};
use clickpath_schema::ClickEvent;
use indicatif::{ProgressBar, ProgressStyle};

/// Arguments of `clickpath train`.
#[derive(Debug, Clone, clap::Args)]
pub struct TrainArgs {
    /// Model kind: the baseline (Markov chain + logistic regression), or a Burn sequence model.
    #[arg(long, value_enum, default_value_t = ModelKind::Gru)]
    pub model: ModelKind,
    /// Events file (JSON lines from `generate --out`, or a public data set with --format).
    #[arg(long, required_unless_present = "topic", conflicts_with = "topic")]
    pub input: Option<PathBuf>,
    /// Format of --input.
    #[arg(long, value_enum, default_value_t = Format::Jsonl)]
    pub format: Format,
    /// Replay click events from this topic instead (for example the clean topic); no consumer
    /// group, nothing committed.
    #[arg(long)]
    pub topic: Option<String>,
    /// With --topic: first record time (ms since the epoch, RFC 3339 with an offset, or a UTC date).
    #[arg(long, requires = "topic")]
    pub since: Option<String>,
    /// With --topic: end record time (exclusive).
    #[arg(long, requires = "topic")]
    pub until: Option<String>,
    /// Artifact directory to write.
    #[arg(long)]
    pub out: PathBuf,
    /// Training configuration for sequence models (TOML; see SequenceTrainConfig).
    #[arg(long)]
    pub train_config: Option<PathBuf>,
    /// Most epochs (overrides the training configuration).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Hidden size (overrides the training configuration).
    #[arg(long)]
    pub hidden: Option<usize>,
    /// Where to train (cuda needs a build with --features cuda).
    #[arg(long, value_enum, default_value_t = Device::Cpu)]
    pub device: Device,
    /// `--model outlook`: a user "returns" when their next session starts within this many hours of
    /// a session's end.
    #[arg(long, default_value_t = 168)]
    pub horizon_hours: u32,
    /// `--model outlook`: end of the data's observation window (ms, RFC 3339 with an offset, or a UTC date); sessions whose
    /// horizon reaches past it have no known label. Default: the latest event time.
    #[arg(long)]
    pub data_end: Option<String>,
    /// `--model outlook`: number of behavioural segments.
    #[arg(long, default_value_t = 4)]
    pub segments: usize,
}

/// What `clickpath train --model` fits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ModelKind {
    /// Markov chain + logistic regression over running counts.
    Baseline,
    /// Burn GRU.
    Gru,
    /// Burn LSTM.
    Lstm,
    /// Burn causal Transformer.
    Transformer,
    /// Session outlook: return propensity within --horizon-hours and behavioural segments, published
    /// with each closed session (`[outlook] model_dir`).
    Outlook,
}

/// A Burn sequence architecture, as a command-line choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SequenceKind {
    /// Gated recurrent unit.
    Gru,
    /// Long short-term memory.
    Lstm,
    /// Causal Transformer encoder.
    Transformer,
}

impl From<SequenceKind> for Architecture {
    fn from(k: SequenceKind) -> Self {
        match k {
            SequenceKind::Gru => Architecture::Gru,
            SequenceKind::Lstm => Architecture::Lstm,
            SequenceKind::Transformer => Architecture::Transformer,
        }
    }
}

impl ModelKind {
    /// The sequence architecture, or `None` for the baseline.
    pub fn architecture(self) -> Option<Architecture> {
        match self {
            ModelKind::Baseline | ModelKind::Outlook => None,
            ModelKind::Gru => Some(Architecture::Gru),
            ModelKind::Lstm => Some(Architecture::Lstm),
            ModelKind::Transformer => Some(Architecture::Transformer),
        }
    }
}

/// `clickpath train`: reads the events, fits the model and prints where the artifact went.
pub fn run(args: &TrainArgs, global: &GlobalArgs) -> anyhow::Result<()> {
    let events = match (&args.input, &args.topic) {
        (Some(path), _) => crate::evaluate::read_events(path, args.format)?,
        (None, Some(topic)) => read_topic_events(
            &global.load_config()?,
            topic,
            args.since.as_deref(),
            args.until.as_deref(),
        )?,
        (None, None) => anyhow::bail!("say where the events are: --input FILE or --topic NAME"),
    };
    anyhow::ensure!(!events.is_empty(), "no events to train on");
    let text = match args.model.architecture() {
        None if args.model == ModelKind::Outlook => {
            // The sessionizer's rules as configured: the stage must build the sessions it scores as
            // training did (it refuses an outlook trained with other rules).
            let cfg = OutlookTrainConfig {
                session: global.load_config()?.sessionizer,
                horizon_hours: args.horizon_hours,
                segments: args.segments,
                data_end_ms: args
                    .data_end
                    .as_deref()
                    .map(clickpath_report::topic::parse_time)
                    .transpose()
                    .context("--data-end")?,
                ..OutlookTrainConfig::default()
            };
            train_outlook_to(&events, &cfg, &args.out)?
        }
        None => train_baseline_to(&events, &Default::default(), &args.out)?,
        Some(architecture) => {
            let mut cfg: SequenceTrainConfig = match &args.train_config {
                Some(p) => toml::from_str(
                    &std::fs::read_to_string(p).with_context(|| p.display().to_string())?,
                )
                .with_context(|| format!("training configuration {}", p.display()))?,
                None => Default::default(),
            };
            cfg.net.architecture = architecture;
            if let Some(e) = args.epochs {
                cfg.max_epochs = e;
            }
            if let Some(h) = args.hidden {
                cfg.net.hidden = h;
            }
            let progress = std::io::stderr().is_terminal();
            train_sequence_to(&events, &cfg, args.device, &args.out, progress)?
        }
    };
    println!(
        "trained on {} events; artifact in {}\n{text}",
        events.len(),
        args.out.display()
    );
    Ok(())
}

/// Trains the baseline on `events` and writes the artifact to `out`; returns the report's text.
pub fn train_baseline_to(
    events: &[ClickEvent],
    cfg: &TrainConfig,
    out: &Path,
) -> anyhow::Result<String> {
    let report = train_baseline(events, cfg)?;
    report.artifact.save(out)?;
    Ok(serde_json::to_string_pretty(report.metrics())?)
}

/// Trains the session outlook on `events` and writes the artifact to `out`; returns a summary.
pub fn train_outlook_to(
    events: &[ClickEvent],
    cfg: &OutlookTrainConfig,
    out: &Path,
) -> anyhow::Result<String> {
    let mut report = train_outlook(events, cfg)?;
    let meta = save_outlook(&mut report, out)?;
    Ok(outlook_summary(&meta))
}

/// The outlook's test figures as text: return AUC, segments with their size, return rate and
/// description, and stability across a refit.
pub fn outlook_summary(meta: &OutlookMeta) -> String {
    let m = &meta.metrics;
    let f = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.4}"));
    let [train, validation, test] = m.split_sessions;
    let mut text = format!(
        "{}: {} sessions, {} without a known {}-hour return label (left out); train / validation / test {train} / {validation} / {test}\n\
         return within {} h on the test split: {} of {test} returned; ROC-AUC {}, PR-AUC {}, log loss {}\n\
         segments (test split; stability across a refit, adjusted Rand index {}):\n",
        meta.version,
        m.sessions,
        m.censored,
        meta.config.horizon_hours,
        meta.config.horizon_hours,
        m.test_returns,
        f(m.return_roc_auc),
        f(m.return_pr_auc),
        f(m.return_log_loss),
        f(m.stability_ari),
    );
    for s in &m.segments {
        text.push_str(&format!(
            "  {}: {:>5.1} % of sessions, {:>5.1} % return; {}\n",
            s.segment,
            100.0 * s.share,
            100.0 * s.return_rate,
            s.description
        ));
    }
    text
}

/// Where to train or score: a command-line choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Device {
    /// Burn's `flex` CPU backend.
    Cpu,
    /// burn-cuda on the first NVIDIA GPU (needs the `cuda` feature).
    Cuda,
}

/// Trains a sequence model on `events` and writes the artifact to `out`, with a progress bar on
/// stderr when `progress` is set; returns a summary (test metrics and training speed).
pub fn train_sequence_to(
    events: &[ClickEvent],
    cfg: &SequenceTrainConfig,
    device: Device,
    out: &Path,
    progress: bool,
) -> anyhow::Result<String> {
    let bar = if progress {
        ProgressBar::new(0)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} batches {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let mut on_progress = |p: TrainProgress| match p {
        TrainProgress::Batch { epoch, done, total } => {
            bar.set_prefix(format!("epoch {epoch}"));
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        }
        TrainProgress::Epoch(r) => {
            bar.println(format!(
                "epoch {:>2}: train loss {:.4}, validation loss {:.4}, validation AUC {}, Recall@20 {}, category Recall@5 {}, {:.0} seq/s",
                r.epoch,
                r.train_loss,
                r.validation_loss,
                r.validation_auc.map_or("-".into(), |a| format!("{a:.4}")),
                r.validation_recall.map_or("-".into(), |a| format!("{a:.4}")),
                r.validation_category_recall.map_or("-".into(), |a| format!("{a:.4}")),
                r.sequences_per_second
            ));
        }
    };
    let (meta, backend) = match device {
        Device::Cpu => {
            let dev = Default::default();
            let report = train_sequence::<CpuTrainBackend>(events, cfg, &dev, &mut on_progress)?;
            (save_sequence(&report, cfg, "flex", out)?, "flex (CPU)")
        }
        Device::Cuda => train_cuda(events, cfg, out, &mut on_progress)?,
    };
    bar.finish_and_clear();
    let best = meta
        .training
        .history
        .get(meta.training.best_epoch.saturating_sub(1));
    let recommendation = |what: &str, r: Option<&clickpath_model::recommend::RecMetrics>| {
        r.map_or_else(
            || format!("no {what} head"),
            |r| {
                format!(
                    "next {what}: Recall@{k} {:.4}, MRR@{k} {:.4} over {} test cases",
                    r.recall,
                    r.mrr,
                    r.cases,
                    k = r.k
                )
            },
        )
    };
    let items = format!(
        "{}\n{}",
        recommendation("item", meta.next_item.as_ref()),
        recommendation("category", meta.next_category.as_ref())
    );
    let auc = |m: &clickpath_model::train::EvalMetrics| {
        m.roc_auc.map_or("-".into(), |a| format!("{a:.4}"))
    };
    let blend = meta.network_only_metrics.as_ref().map_or_else(
        || "purchase: the network alone (no blend fitted)".to_string(),
        |alone| {
            format!(
                "purchase: network blended with a logistic regression, test ROC-AUC {} (network alone {})",
                auc(&meta.metrics),
                auc(alone)
            )
        },
    );
    Ok(format!(
        "{} on {backend}: best epoch {} of {}, {:.1} s, {:.0} sequences/s, {:.0} events/s\n{items}\n{blend}\ntest metrics:\n{}",
        meta.version,
        meta.training.best_epoch,
        meta.training.history.len(),
        meta.training.seconds,
        best.map_or(0.0, |e| e.sequences_per_second),
        best.map_or(0.0, |e| e.steps_per_second),
        serde_json::to_string_pretty(&meta.metrics)?
    ))
}

#[cfg(feature = "cuda")]
fn train_cuda(
    events: &[ClickEvent],
    cfg: &SequenceTrainConfig,
    out: &Path,
    on_progress: &mut dyn FnMut(TrainProgress),
) -> anyhow::Result<(clickpath_model::sequence::SequenceMeta, &'static str)> {
    use clickpath_model::sequence::CudaTrainBackend;
    clickpath_model::sequence::probe_cuda()?;
    let dev = Default::default();
    let report = train_sequence::<CudaTrainBackend>(events, cfg, &dev, on_progress)?;
    Ok((save_sequence(&report, cfg, "cuda", out)?, "cuda (GPU)"))
}

#[cfg(not(feature = "cuda"))]
fn train_cuda(
    _: &[ClickEvent],
    _: &SequenceTrainConfig,
    _: &Path,
    _: &mut dyn FnMut(TrainProgress),
) -> anyhow::Result<(clickpath_model::sequence::SequenceMeta, &'static str)> {
    anyhow::bail!(
        "--device cuda: this clickpath was built without the `cuda` feature (cargo build --features cuda)"
    )
}

/// Click events replayed from `topic` between `since` and `until` (record timestamps; ms or
/// RFC 3339 UTC), without a consumer group.
pub fn read_topic_events(
    cfg: &clickpath_stages::ClickpathConfig,
    topic: &str,
    since: Option<&str>,
    until: Option<&str>,
) -> anyhow::Result<Vec<ClickEvent>> {
    use clickpath_report::topic::{TopicRange, decode_all, parse_time, read_topic};
    let range = TopicRange {
        since_ms: since.map(parse_time).transpose()?,
        until_ms: until.map(parse_time).transpose()?,
        max_records: None,
    };
    let read = read_topic(cfg, topic, range, std::time::Duration::from_secs(30))?;
    let codec = clickpath_schema::codec::Codec::embedded();
    let decoded = decode_all::<ClickEvent>(&codec, read);
    if decoded.undecodable > 0 {
        eprintln!(
            "{topic}: {} records are not click events (skipped)",
            decoded.undecodable
        );
    }
    Ok(decoded.records)
}
