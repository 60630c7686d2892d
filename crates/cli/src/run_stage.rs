//! `clickpath run <stage>|all`: one stage (or every stage) until SIGTERM/SIGINT, with the HTTP
//! endpoints (`/healthz`, `/metrics`, the query API) beside it.

use crate::app::{GlobalArgs, env_for};
use crate::pipeline::{join_stages, spawn_pipeline, spawn_stages};
use clap::builder::PossibleValue;
use clickpath_stages::StageName;
use std::sync::LazyLock;

/// Arguments of `clickpath run`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// The stage to run, or `all`.
    #[arg(value_enum)]
    pub stage: StageChoice,
}

/// A stage name or `all`; the choices come from [`StageName::ALL`], the one list of stages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StageChoice {
    /// Every stage in this process.
    All,
    /// One stage.
    One(StageName),
}

static CHOICES: LazyLock<Vec<StageChoice>> = LazyLock::new(|| {
    StageName::ALL
        .into_iter()
        .map(StageChoice::One)
        .chain([StageChoice::All])
        .collect()
});

impl clap::ValueEnum for StageChoice {
    fn value_variants<'a>() -> &'a [Self] {
        &CHOICES
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(match self {
            StageChoice::All => PossibleValue::new("all").help(
                "every stage in this process, chained or one consumer each ([topology] mode)",
            ),
            StageChoice::One(name) => PossibleValue::new(name.as_str()),
        })
    }
}

impl StageChoice {
    /// The stages chosen.
    pub fn stages(self) -> Vec<StageName> {
        match self {
            StageChoice::All => StageName::ALL.to_vec(),
            StageChoice::One(name) => vec![name],
        }
    }
}

/// `clickpath run`: serves HTTP, runs the chosen stages and waits for them to stop.
pub fn run(args: &RunArgs, global: &GlobalArgs) -> anyhow::Result<()> {
    let cfg = global.load_config()?;
    clickpath_runtime::kafka::check_reachable(&cfg.bus).map_err(anyhow::Error::msg)?;
    let env = env_for(&cfg);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    rt.block_on(async {
        env.shutdown.trigger_on_signals();
        clickpath_runtime::http::serve_env(&env).await
    })?;
    let running = match args.stage {
        StageChoice::All => spawn_pipeline(&cfg, &env, false)?,
        StageChoice::One(name) => spawn_stages(&[name], &cfg, &env, false)?,
    };
    join_stages(running)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::ValueEnum as _;

    #[test]
    fn every_stage_and_all_are_choices() {
        for name in StageName::ALL {
            assert_eq!(
                StageChoice::from_str(name.as_str(), false).unwrap(),
                StageChoice::One(name)
            );
        }
        assert_eq!(
            StageChoice::from_str("all", false).unwrap().stages().len(),
            StageName::ALL.len()
        );
        assert!(StageChoice::from_str("clean", false).is_err());
    }
}
