//! Scorer: turns each feature vector into a prediction (purchase probability, next actions, factors).
//!
//! This is the baseline scorer (Markov chain + logistic regression); the Burn sequence models replace the
//! model behind the same stage later. Per-user state is just the previous event type, evicted when idle.

use clickpath_model::baseline::BaselineModel;
use clickpath_runtime::config::ScorerConfig;
use clickpath_runtime::{Context, Stage, StageError};
use clickpath_schema::{EventType, FeatureVector, Prediction};
use std::collections::HashMap;
use std::time::Instant;

/// Users idle for this long (event time) forget their previous event.
const IDLE_EVICT_MS: i64 = 24 * 3_600_000;

/// The scorer stage.
pub struct Scorer {
    model: BaselineModel,
    top_k: usize,
    factors: usize,
    output_topic: String,
    last: HashMap<String, (EventType, i64)>,
    watermark_ms: i64,
}

impl Scorer {
    /// A scorer using `model`, writing predictions to `output_topic`.
    pub fn new(model: BaselineModel, cfg: &ScorerConfig, output_topic: &str) -> Self {
        Scorer {
            model,
            top_k: cfg.top_k,
            factors: cfg.factors,
            output_topic: output_topic.to_string(),
            last: HashMap::new(),
            watermark_ms: i64::MIN,
        }
    }

    /// Scores one feature vector (pure: used by the stage and by offline tools).
    pub fn score(&mut self, fv: &FeatureVector) -> Prediction {
        let started = Instant::now();
        // The Markov chain conditions on the event just seen: it predicts what comes after it.
        let out = self.model.predict(Some(fv.event_type), fv, self.top_k);
        self.last
            .insert(fv.user_id.clone(), (fv.event_type, fv.event_time));
        let mut factors = out.factors;
        factors.truncate(self.factors);
        Prediction {
            event_id: fv.event_id.clone(),
            user_id: fv.user_id.clone(),
            event_time: fv.event_time,
            model_version: self.model.version.clone(),
            purchase_probability: out.purchase_probability,
            next_actions: out.next_actions,
            predicted_path: out.predicted_path,
            factors,
            scoring_latency_us: started.elapsed().as_micros() as i64,
        }
    }
}

impl Stage for Scorer {
    type Input = FeatureVector;

    fn name(&self) -> &'static str {
        "scorer"
    }

    fn process(&mut self, fv: FeatureVector, ctx: &mut Context<'_>) -> Result<(), StageError> {
        self.watermark_ms = self.watermark_ms.max(fv.event_time);
        let prediction = self.score(&fv);
        ctx.emit(&self.output_topic, &prediction.user_id, &prediction)
    }

    fn tick(&mut self, _ctx: &mut Context<'_>) -> Result<(), StageError> {
        let horizon = self.watermark_ms.saturating_sub(IDLE_EVICT_MS);
        self.last.retain(|_, (_, t)| *t >= horizon);
        Ok(())
    }

    fn state_entries(&self) -> usize {
        self.last.len()
    }
}
