//! Which stage reads which topic, and running a stage by name.

use crate::ClickpathConfig;
use crate::scorer::{ScoringModel, load_model};
use crate::{
    analytics::Analytics, cleaning::Cleaning, detector::Detector, scorer::Scorer,
    sessionizer::Sessionizer, windower::Windower,
};
use clickpath_model::artifact::ModelArtifact;
use clickpath_model::baseline::BaselineModel;
use clickpath_model::sequence::{DeviceFallback, OnlineDevice, check_device};
use clickpath_runtime::metrics::StageLabel;
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
    /// Funnel aggregates per time bucket and segment.
    Analytics,
}

impl StageName {
    /// Every stage.
    pub const ALL: [StageName; 6] = [
        StageName::Cleaning,
        StageName::Sessionizer,
        StageName::Windower,
        StageName::Scorer,
        StageName::Detector,
        StageName::Analytics,
    ];

    /// The stage's name (consumer group suffix, metric label).
    pub fn as_str(self) -> &'static str {
        match self {
            StageName::Cleaning => "cleaning",
            StageName::Sessionizer => "sessionizer",
            StageName::Windower => "windower",
            StageName::Scorer => "scorer",
            StageName::Detector => "detector",
            StageName::Analytics => "analytics",
        }
    }

    /// Parses a stage name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|n| n.as_str() == s)
    }

    /// The topics this stage consumes, in the order of its input's roles
    /// ([`clickpath_runtime::StageInput::ROLES`]). The detector reads two co-partitioned topics: clean events
    /// and predictions.
    pub fn input_topics(self, env: &RunnerEnv) -> Vec<String> {
        let t = &env.config.topics;
        match self {
            StageName::Cleaning => vec![t.raw.clone()],
            StageName::Sessionizer | StageName::Windower | StageName::Analytics => {
                vec![t.clean.clone()]
            }
            StageName::Scorer => vec![t.features.clone()],
            StageName::Detector => vec![t.clean.clone(), t.predictions.clone()],
        }
    }

    /// The stage's main input topic: the first of [`StageName::input_topics`] (for the detector, the clean
    /// events; it also reads the predictions).
    pub fn input_topic(self, env: &RunnerEnv) -> String {
        self.input_topics(env).swap_remove(0)
    }
}

/// Loads the scorer's model: the artifact in `scorer.model_dir`, or the built-in baseline.
pub fn load_scorer_model(cfg: &ClickpathConfig) -> anyhow::Result<BaselineModel> {
    let spec = &cfg.windower;
    match &cfg.scorer.model_dir {
        None => builtin_model(spec),
        Some(dir) => Ok(ModelArtifact::load(dir, spec)
            .map_err(|e| anyhow::anyhow!("scorer.model_dir {}: {e}", dir.display()))?
            .model),
    }
}

/// The outlook model of `[outlook] model_dir`, loaded and checked; `None` when none is configured.
pub fn load_outlook(
    cfg: &ClickpathConfig,
) -> anyhow::Result<Option<std::sync::Arc<clickpath_model::outlook::OutlookModel>>> {
    let Some(dir) = &cfg.outlook.model_dir else {
        return Ok(None);
    };
    let (model, meta) = clickpath_model::outlook::load_outlook(dir)
        .map_err(|e| anyhow::anyhow!("outlook.model_dir {}: {e}", dir.display()))?;
    // Its features are the sessionizer's summaries: sessions cut by other rules are other inputs.
    anyhow::ensure!(
        meta.config.session == cfg.sessionizer,
        "outlook.model_dir {}: the model was trained on sessions of other [sessionizer] rules than \
         this configuration's ({:?} vs {:?}); retrain it with this configuration \
         (clickpath --config FILE train --model outlook ...)",
        dir.display(),
        meta.config.session,
        cfg.sessionizer
    );
    tracing::info!(
        version = %meta.version,
        horizon_hours = model.horizon_hours,
        segments = model.segments.centroids.len(),
        "Session outlook model loaded."
    );
    Ok(Some(std::sync::Arc::new(model)))
}

/// The scorer as configured: the model in `scorer.model_dir` (a sequence model or a baseline; the
/// built-in baseline when absent), on `scorer.device`, with the optional shadow model.
pub fn build_scorer(cfg: &ClickpathConfig, env: &RunnerEnv) -> anyhow::Result<Scorer> {
    let device = scorer_device(cfg, env)?;
    let mut scorer_cfg = cfg.scorer.clone();
    scorer_cfg.device = device;
    let index = cfg.scorer.item_index.index_config(cfg.scorer.item_index_ef);
    let model = match &cfg.scorer.model_dir {
        None => ScoringModel::Baseline(Box::new(builtin_model(&cfg.windower)?)),
        Some(dir) => load_model(dir, &cfg.windower, device, index.as_ref())
            .map_err(|e| anyhow::anyhow!("scorer.model_dir {}: {e}", dir.display()))?,
    };
    let mut scorer = Scorer::with_model(
        model,
        &scorer_cfg,
        &cfg.topics.predictions,
        Some(env.metrics.clone()),
    )
    .with_feature_spec(cfg.windower.clone());
    if let Some(shadow) = &cfg.scorer.shadow_model_dir {
        let what = || format!("scorer.shadow_model_dir {}", shadow.display());
        match load_model(shadow, &cfg.windower, device, index.as_ref())
            .map_err(|e| anyhow::anyhow!("{}: {e}", what()))?
        {
            ScoringModel::Sequence(s) => scorer = scorer.with_shadow(s),
            ScoringModel::Baseline(_) => {
                anyhow::bail!("{}: a shadow model must be a sequence model", what())
            }
        }
    }
    Ok(scorer)
}

/// The device the scorer runs on: `scorer.device` when it works here; otherwise, as
/// `scorer.device_fallback` says, an error at start-up or the CPU with a warning and
/// `clickpath_model_device_fallback` set to 1.
fn scorer_device(cfg: &ClickpathConfig, env: &RunnerEnv) -> anyhow::Result<OnlineDevice> {
    let wanted = cfg.scorer.device;
    // The built-in baseline runs on the CPU whatever the device says.
    if cfg.scorer.model_dir.is_none() && cfg.scorer.shadow_model_dir.is_none() {
        return Ok(wanted);
    }
    let fallback = env
        .metrics
        .model_device_fallback
        .get_or_create(&StageLabel {
            stage: "scorer".into(),
        });
    match (check_device(wanted), cfg.scorer.device_fallback) {
        (Ok(()), _) => {
            fallback.set(0);
            Ok(wanted)
        }
        (Err(e), DeviceFallback::Fail) => Err(anyhow::anyhow!(
            "scorer.device = {wanted:?}: {e} (set scorer.device_fallback = \"cpu\" to score on \
             the CPU instead)"
        )),
        (Err(e), DeviceFallback::Cpu) => {
            tracing::warn!(error = %e, "scorer.device {wanted:?} is not usable; scoring on the CPU (scorer.device_fallback = \"cpu\").");
            fallback.set(1);
            Ok(OnlineDevice::Cpu)
        }
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

/// Runs every stage chained in one consumer of the raw topic ([`crate::chain`]), configured by
/// `cfg`, in `env` until shutdown (blocking). `flush_on_shutdown` closes open sessions at the end.
pub fn run_chain(
    cfg: &ClickpathConfig,
    env: &RunnerEnv,
    flush_on_shutdown: bool,
) -> anyhow::Result<RunSummary> {
    let chain = crate::chain::Chain::from_config(cfg, env, flush_on_shutdown)?;
    run_stage(chain, &[cfg.topics.raw.as_str()], env)
}

/// Runs stage `name`, configured by `cfg`, in `env` until shutdown (blocking). `flush_on_shutdown`
/// closes open sessions at the end.
pub fn run_named(
    name: StageName,
    cfg: &ClickpathConfig,
    env: &RunnerEnv,
    flush_on_shutdown: bool,
) -> anyhow::Result<RunSummary> {
    let input = name.input_topics(env);
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
            )
            .with_outlook(load_outlook(cfg)?),
            &input,
            env,
        ),
        StageName::Windower => run_stage(
            Windower::new(&cfg.windower, &cfg.topics.features),
            &input,
            env,
        ),
        StageName::Scorer => run_stage(build_scorer(cfg, env)?, &input, env),
        StageName::Detector => run_stage(
            Detector::new(&cfg.detector, &cfg.topics.alerts),
            &input,
            env,
        ),
        StageName::Analytics => run_stage(
            Analytics::from_config(
                &cfg.analytics,
                &cfg.topics.analytics,
                &crate::analytics::instance_name(&cfg.kafka),
                flush_on_shutdown,
            )
            .map_err(anyhow::Error::msg)?,
            &input,
            env,
        ),
    }
}
