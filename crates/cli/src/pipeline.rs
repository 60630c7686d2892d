//! Running several stages in one process (the demo, `clickpath run all`, tests): chained in one
//! consumer, or one consumer per stage, as `[topology] mode` says.

use clickpath_runtime::metrics::Metrics;
use clickpath_runtime::{RunSummary, RunnerEnv};
use clickpath_stages::chain::CHAIN;
use clickpath_stages::config::TopologyMode;
use clickpath_stages::{ClickpathConfig, StageName, run_chain, run_named};
use std::sync::Arc;
use std::thread::JoinHandle;

/// A stage loop (one stage, or the chain of all) running on its own thread.
pub struct RunningStage {
    /// The stage's name (`chain` for the chained topology).
    pub name: &'static str,
    /// Its thread; yields the loop's summary or error.
    pub handle: JoinHandle<anyhow::Result<RunSummary>>,
}

/// Starts the whole pipeline in `env` as `cfg.topology.mode` says: the chain, or every stage on its
/// own thread. It stops when `env.shutdown` is triggered.
pub fn spawn_pipeline(
    cfg: &ClickpathConfig,
    env: &RunnerEnv,
    flush_on_shutdown: bool,
) -> anyhow::Result<Vec<RunningStage>> {
    match cfg.topology.mode {
        TopologyMode::PerStage => spawn_stages(&StageName::ALL, cfg, env, flush_on_shutdown),
        TopologyMode::Chained => {
            let (cfg, env) = (cfg.clone(), env.clone());
            spawn(CHAIN, env, move |env| {
                run_chain(&cfg, env, flush_on_shutdown)
            })
            .map(|r| vec![r])
        }
    }
}

/// Starts each stage of `names`, configured by `cfg`, on its own thread in `env` (per-stage mode,
/// whatever `cfg.topology` says). They stop when `env.shutdown` is triggered.
pub fn spawn_stages(
    names: &[StageName],
    cfg: &ClickpathConfig,
    env: &RunnerEnv,
    flush_on_shutdown: bool,
) -> anyhow::Result<Vec<RunningStage>> {
    let cfg = Arc::new(cfg.clone());
    names
        .iter()
        .map(|&name| {
            let cfg = Arc::clone(&cfg);
            spawn(name.as_str(), env.clone(), move |env| {
                run_named(name, &cfg, env, flush_on_shutdown)
            })
        })
        .collect()
}

fn spawn(
    name: &'static str,
    env: RunnerEnv,
    run: impl FnOnce(&RunnerEnv) -> anyhow::Result<RunSummary> + Send + 'static,
) -> anyhow::Result<RunningStage> {
    let handle = std::thread::Builder::new()
        .name(format!("stage-{name}"))
        .spawn(move || {
            let r = run(&env);
            if let Err(e) = &r {
                tracing::error!(stage = name, error = %e, "Stage failed.");
                // One failed stage stops the process: a partial pipeline would silently stall.
                env.shutdown.trigger();
            }
            r
        })?;
    Ok(RunningStage { name, handle })
}

/// Waits for every stage; returns the summaries, or the first error.
pub fn join_stages(running: Vec<RunningStage>) -> anyhow::Result<Vec<(&'static str, RunSummary)>> {
    let mut out = Vec::new();
    let mut first_err = None;
    for r in running {
        match r.handle.join() {
            Ok(Ok(s)) => out.push((r.name, s)),
            Ok(Err(e)) => {
                first_err.get_or_insert(e);
            }
            Err(_) => {
                first_err.get_or_insert(anyhow::anyhow!("stage {} panicked", r.name));
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// Every stage name that counts records in this process's metrics: each stage's, and the chain's.
fn counting_stages() -> impl Iterator<Item = &'static str> {
    StageName::ALL
        .into_iter()
        .map(StageName::as_str)
        .chain([CHAIN])
}

/// Records the pipeline produced to `topic`, in either topology.
pub fn written(metrics: &Metrics, topic: &str) -> u64 {
    counting_stages()
        .map(|s| metrics.records_out_total(s, topic))
        .sum()
}

/// Records of `topic` that `stage` took: read from the topic in per-stage mode, handed over in
/// the chain (where the raw topic is read by the chain itself, counted for `cleaning`).
pub fn taken(metrics: &Metrics, stage: StageName, topic: &str) -> u64 {
    let chained = if stage == StageName::Cleaning {
        metrics.records_in_total(CHAIN, topic)
    } else {
        0
    };
    metrics.records_in_total(stage.as_str(), topic) + chained
}
