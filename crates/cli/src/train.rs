//! `clickpath train`: fit a model (the baseline, or a Burn GRU / LSTM / Transformer) on events
//! from a file and write a versioned artifact directory.

use std::path::Path;

use clickpath_model::sequence::{
    Architecture, CpuTrainBackend, SequenceTrainConfig, TrainProgress, save_sequence,
    train_sequence,
};
use clickpath_model::train::{TrainConfig, train_baseline};
use clickpath_schema::ClickEvent;
use indicatif::{ProgressBar, ProgressStyle};

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

/// Where to run training.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
                "epoch {:>2}: train loss {:.4}, validation loss {:.4}, validation AUC {}, {:.0} seq/s",
                r.epoch,
                r.train_loss,
                r.validation_loss,
                r.validation_auc.map_or("-".into(), |a| format!("{a:.4}")),
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
    Ok(format!(
        "{} on {backend}: best epoch {} of {}, {:.1} s, {:.0} sequences/s, {:.0} events/s\ntest metrics:\n{}",
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
    cfg: &clickpath_runtime::ClickpathConfig,
    topic: &str,
    since: Option<&str>,
    until: Option<&str>,
) -> anyhow::Result<Vec<ClickEvent>> {
    use crate::report::topic::{TopicRange, decode_all, parse_time, read_topic};
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

/// The architecture named by `--model`, or an error listing the choices.
pub fn parse_architecture(model: &str) -> anyhow::Result<Architecture> {
    Architecture::parse(model).ok_or_else(|| {
        anyhow::anyhow!("--model {model}: choose baseline, gru, lstm or transformer")
    })
}
