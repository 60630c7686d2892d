//! Running several stages in one process (the demo, `clickpath run all`, tests).

use clickpath_runtime::{RunSummary, RunnerEnv};
use clickpath_stages::{ClickpathConfig, StageName, run_named};
use std::sync::Arc;
use std::thread::JoinHandle;

/// A stage loop running on its own thread.
pub struct RunningStage {
    /// Which stage.
    pub name: StageName,
    /// Its thread; yields the loop's summary or error.
    pub handle: JoinHandle<anyhow::Result<RunSummary>>,
}

/// Starts each stage of `names`, configured by `cfg`, on its own thread in `env`. They stop when
/// `env.shutdown` is triggered.
pub fn spawn_stages(
    names: &[StageName],
    cfg: &ClickpathConfig,
    env: &RunnerEnv,
    flush_on_shutdown: bool,
) -> anyhow::Result<Vec<RunningStage>> {
    let mut running = Vec::new();
    let cfg = Arc::new(cfg.clone());
    for &name in names {
        let env = env.clone();
        let cfg = Arc::clone(&cfg);
        let handle = std::thread::Builder::new()
            .name(format!("stage-{}", name.as_str()))
            .spawn(move || {
                let r = run_named(name, &cfg, &env, flush_on_shutdown);
                if let Err(e) = &r {
                    tracing::error!(stage = name.as_str(), error = %e, "Stage failed.");
                    // One failed stage stops the process: a partial pipeline would silently stall.
                    env.shutdown.trigger();
                }
                r
            })?;
        running.push(RunningStage { name, handle });
    }
    Ok(running)
}

/// Waits for every stage; returns the summaries, or the first error.
pub fn join_stages(running: Vec<RunningStage>) -> anyhow::Result<Vec<(StageName, RunSummary)>> {
    let mut out = Vec::new();
    let mut first_err = None;
    for r in running {
        match r.handle.join() {
            Ok(Ok(s)) => out.push((r.name, s)),
            Ok(Err(e)) => {
                first_err.get_or_insert(e);
            }
            Err(_) => {
                first_err.get_or_insert(anyhow::anyhow!("stage {} panicked", r.name.as_str()));
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(out),
    }
}
