//! Which stage reads which topic, and running a stage by name.

use crate::{
    cleaning::Cleaning, detector::Detector, scorer::Scorer, sessionizer::Sessionizer,
    windower::Windower,
};
use clickpath_model::artifact::ModelArtifact;
use clickpath_model::baseline::BaselineModel;
use clickpath_runtime::{RunSummary, RunnerEnv, run_stage};
use std::path::Path;

/// The stages of the pipeline, in topological order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StageName {
    /// Validate, normalise, de-duplicate.
    Cleaning,
    /// Event-time sessions.
    Sessionizer,
    /// Sliding-window features.
    Windower,
    /// Predictions.
    Scorer,
    /// Fraud and bot alerts.
    Detector,
}

impl StageName {
    /// Every stage.
    pub const ALL: [StageName; 5] = [
        StageName::Cleaning,
        StageName::Sessionizer,
        StageName::Windower,
        StageName::Scorer,
        StageName::Detector,
    ];

    /// The stage's name (consumer group suffix, metric label).
    pub fn as_str(self) -> &'static str {
        match self {
            StageName::Cleaning => "cleaning",
            StageName::Sessionizer => "sessionizer",
            StageName::Windower => "windower",
            StageName::Scorer => "scorer",
            StageName::Detector => "detector",
        }
    }

    /// Parses a stage name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|n| n.as_str() == s)
    }

    /// The topic this stage consumes.
    pub fn input_topic(self, env: &RunnerEnv) -> String {
        let t = &env.config.topics;
        match self {
            StageName::Cleaning => t.raw.clone(),
            StageName::Sessionizer | StageName::Windower | StageName::Detector => t.clean.clone(),
            StageName::Scorer => t.features.clone(),
        }
    }
}

/// Loads the scorer's model: the artifact in `scorer.model_dir`, or the built-in baseline.
pub fn load_scorer_model(env: &RunnerEnv) -> anyhow::Result<BaselineModel> {
    let dir = env.config.scorer.model_dir.trim();
    let spec = &env.config.windower;
    if dir.is_empty() {
        builtin_model(spec)
    } else {
        Ok(ModelArtifact::load(Path::new(dir), spec)
            .map_err(|e| anyhow::anyhow!("scorer.model_dir {dir}: {e}"))?
            .model)
    }
}

/// The baseline artifact shipped in `models/baseline` (trained on generated data; see its `meta.json`).
pub fn builtin_model(
    spec: &clickpath_core::features::FeatureSpec,
) -> anyhow::Result<BaselineModel> {
    BUILTIN
        .map(|(meta, model)| {
            ModelArtifact::from_bytes(Path::new("models/baseline"), meta, model, spec)
                .map(|a| a.model)
                .map_err(|e| anyhow::anyhow!("built-in model does not fit windower settings ({e}); train one with `clickpath train` and set scorer.model_dir"))
        })
        .unwrap_or_else(|| anyhow::bail!("this build has no built-in model; set scorer.model_dir"))
}

const BUILTIN: Option<(&[u8], &[u8])> = Some((
    include_bytes!("../../../models/baseline/meta.json"),
    include_bytes!("../../../models/baseline/model.json"),
));

/// Runs stage `name` until shutdown (blocking). `flush_on_shutdown` closes open sessions at the end.
pub fn run_named(
    name: StageName,
    env: &RunnerEnv,
    flush_on_shutdown: bool,
) -> anyhow::Result<RunSummary> {
    let cfg = &env.config;
    let input = name.input_topic(env);
    match name {
        StageName::Cleaning => {
            run_stage(Cleaning::new(&cfg.cleaning, &cfg.topics.clean), &input, env)
        }
        StageName::Sessionizer => run_stage(
            Sessionizer::new(
                &cfg.sessionizer,
                &cfg.topics.sessions,
                &cfg.topics.late_events,
                flush_on_shutdown,
            ),
            &input,
            env,
        ),
        StageName::Windower => run_stage(
            Windower::new(&cfg.windower, &cfg.topics.features),
            &input,
            env,
        ),
        StageName::Scorer => {
            let model = load_scorer_model(env)?;
            run_stage(
                Scorer::new(model, &cfg.scorer, &cfg.topics.predictions),
                &input,
                env,
            )
        }
        StageName::Detector => run_stage(
            Detector::new(&cfg.detector, &cfg.topics.alerts),
            &input,
            env,
        ),
    }
}
