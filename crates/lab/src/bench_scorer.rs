//! `clickpath-lab bench-scorer`: the sequence model's online step (one event per user, batched
//! across users) per batch size, on the CPU or a CUDA GPU: event-steps per second and per-batch
//! latency percentiles; with `--items N`, an item head over `N` items and the `--top` best of them
//! for every event, as the scorer recommends them. The GPU script (`scripts/gpu-bench.sh`) runs it with
//! `--device cuda`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clickpath_cli::train::{Device, SequenceKind};
use clickpath_model::sequence::{
    Architecture, CpuBackend, NetConfig, OnlineModel, SequenceModel, Step, UserMemory,
};
use hdrhistogram::Histogram;
use serde::Serialize;

/// Arguments of `clickpath-lab bench-scorer`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchScorerArgs {
    /// Where to run the model (cuda needs a build with --features cuda).
    #[arg(long, value_enum, default_value_t = Device::Cpu)]
    pub device: Device,
    /// Architecture.
    #[arg(long, value_enum, default_value_t = SequenceKind::Gru)]
    pub model: SequenceKind,
    /// Hidden size.
    #[arg(long, default_value_t = 64)]
    pub hidden: usize,
    /// Batch sizes, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64,256,1024")]
    pub batch: Vec<usize>,
    /// Seconds per batch size.
    #[arg(long, default_value_t = 3.0)]
    pub seconds: f64,
    /// Items of an item head (0: none): each step also ranks all of them for every event.
    #[arg(long, default_value_t = 0)]
    pub items: usize,
    /// With `--items`: how many items each event gets (the scorer's `recommend_items`).
    #[arg(long, default_value_t = 20)]
    pub top: usize,
    /// Also write the rows as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// `clickpath-lab bench-scorer`: measures and prints the table (and the JSON file when asked).
pub fn run_command(args: &BenchScorerArgs) -> anyhow::Result<()> {
    let rows = run(
        args.device,
        args.model.into(),
        args.hidden,
        Recommend {
            items: args.items,
            top: args.top,
        },
        &args.batch,
        args.seconds,
    )?;
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&rows)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    print!("{}", table(&rows));
    Ok(())
}

/// One measured batch size.
#[derive(Debug, Clone, Serialize)]
pub struct ScorerBenchRow {
    /// Backend name.
    pub backend: String,
    /// Architecture.
    pub architecture: String,
    /// Hidden size.
    pub hidden: usize,
    /// Items of the item head (0: none).
    pub items: usize,
    /// Items recommended per event (with an item head).
    pub top: usize,
    /// Users per batch.
    pub batch: usize,
    /// Batches timed.
    pub batches: u64,
    /// Event-steps per second (batch size x batches / time).
    pub steps_per_second: f64,
    /// Median batch latency (µs).
    pub p50_us: u64,
    /// 99th percentile batch latency (µs).
    pub p99_us: u64,
}

fn model(device: Device, cfg: NetConfig) -> anyhow::Result<(Box<dyn OnlineModel>, &'static str)> {
    match device {
        Device::Cpu => Ok((
            Box::new(SequenceModel::<CpuBackend>::untrained(
                cfg,
                Default::default(),
            )),
            "flex (CPU)",
        )),
        Device::Cuda => cuda_model(cfg),
    }
}

#[cfg(feature = "cuda")]
fn cuda_model(cfg: NetConfig) -> anyhow::Result<(Box<dyn OnlineModel>, &'static str)> {
    use clickpath_model::sequence::CudaBackend;
    clickpath_model::sequence::probe_cuda()?;
    Ok((
        Box::new(SequenceModel::<CudaBackend>::untrained(
            cfg,
            Default::default(),
        )),
        "cuda (GPU)",
    ))
}

#[cfg(not(feature = "cuda"))]
fn cuda_model(_: NetConfig) -> anyhow::Result<(Box<dyn OnlineModel>, &'static str)> {
    anyhow::bail!("--device cuda needs a build with --features cuda")
}

/// Next-item recommendations measured with the step: an item head over `items` items (0: none), the `top`
/// best for every event.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recommend {
    /// Vocabulary size of the item head.
    pub items: usize,
    /// Items per event.
    pub top: usize,
}

/// Times `model.step_batch` (and, with `recommend.items > 0`, the top items of every event) for each
/// batch size for about `seconds` each (after a warm-up), with fresh synthetic users whose memories
/// carry over from batch to batch.
pub fn run(
    device: Device,
    arch: Architecture,
    hidden: usize,
    recommend: Recommend,
    batches: &[usize],
    seconds: f64,
) -> anyhow::Result<Vec<ScorerBenchRow>> {
    let features = clickpath_core::FeatureWindower::new(Default::default())
        .feature_names()
        .len();
    let cfg = NetConfig {
        architecture: arch,
        hidden,
        numeric_features: features,
        item_vocab: recommend.items,
        ..NetConfig::default()
    };
    let (model, backend) = model(device, cfg)?;
    let mut rows = Vec::new();
    for &b in batches {
        let steps: Vec<Step> = (0..b)
            .map(|i| Step {
                event_type: (i % 10) as u32,
                category: (i % 500) as u32 + 1,
                item: (i * 7 % 4000) as u32 + 1,
                numeric: (0..features)
                    .map(|f| ((i + f) % 7) as f32 * 0.2 - 0.6)
                    .collect(),
            })
            .collect();
        let mut memories = vec![UserMemory::default(); b];
        let step_once = |memories: &mut Vec<UserMemory>| {
            let mut items: Vec<(&Step, &mut UserMemory)> =
                steps.iter().zip(memories.iter_mut()).collect();
            let outs = model.step_batch(&mut items);
            if recommend.items > 0 {
                let queries: Vec<&[f32]> = outs.iter().map(|o| o.item_query.as_slice()).collect();
                model.top_items(&queries, recommend.top).len()
            } else {
                outs.len()
            }
        };
        for _ in 0..3 {
            step_once(&mut memories);
        }
        let mut hist = Histogram::<u64>::new(3)?;
        let started = Instant::now();
        let budget = Duration::from_secs_f64(seconds);
        let mut n = 0u64;
        while started.elapsed() < budget || n < 5 {
            let t = Instant::now();
            step_once(&mut memories);
            hist.record(t.elapsed().as_micros().max(1) as u64)?;
            n += 1;
        }
        let secs = started.elapsed().as_secs_f64();
        rows.push(ScorerBenchRow {
            backend: backend.into(),
            architecture: arch.as_str().into(),
            hidden,
            items: recommend.items,
            top: recommend.top,
            batch: b,
            batches: n,
            steps_per_second: (n as f64 * b as f64) / secs,
            p50_us: hist.value_at_quantile(0.5),
            p99_us: hist.value_at_quantile(0.99),
        });
    }
    Ok(rows)
}

/// The rows as a Markdown table.
pub fn table(rows: &[ScorerBenchRow]) -> String {
    let mut out = String::from(
        "| backend | model | items (top) | batch | event-steps/s | batch p50 (µs) | batch p99 (µs) |\n|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let items = if r.items > 0 {
            format!("{} ({})", r.items, r.top)
        } else {
            "-".into()
        };
        out.push_str(&format!(
            "| {} | {}-{} | {} | {} | {:.0} | {} | {} |\n",
            r.backend,
            r.architecture,
            r.hidden,
            items,
            r.batch,
            r.steps_per_second,
            r.p50_us,
            r.p99_us
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_the_step_with_and_without_recommendations() {
        for items in [0, 300] {
            let recommend = Recommend { items, top: 5 };
            let rows = run(Device::Cpu, Architecture::Gru, 8, recommend, &[1, 4], 0.01).unwrap();
            assert_eq!(rows.len(), 2);
            assert!(
                rows.iter()
                    .all(|r| r.batches >= 5 && r.steps_per_second > 0.0)
            );
            assert!(rows.iter().all(|r| r.items == items));
            let text = table(&rows);
            let label = if items > 0 { "| 300 (5) |" } else { "| - |" };
            assert!(text.contains(label), "{text}");
        }
    }
}
