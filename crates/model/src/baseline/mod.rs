//! The baseline model the scorer runs: a Markov chain for the next action and a logistic
//! regression for the purchase probability, versioned by a hash of their parameters.

pub mod artifact;
pub mod logistic;
pub mod markov;
pub mod train;

use clickpath_schema::{ActionProbability, EventType, Factor, FeatureVector, Prediction};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::logistic::LogisticModel;
use crate::markov::MarkovChain;

/// Model kind written to artifacts and version strings.
pub const BASELINE_KIND: &str = "baseline";

/// How much a prediction says beyond the purchase probability.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PredictOptions {
    /// Next actions to list. Default 3.
    pub top_k: usize,
    /// Steps of the greedy predicted path. Default 3.
    pub path_steps: usize,
    /// Explanatory factors to list. Default 3.
    pub factors: usize,
}

impl Default for PredictOptions {
    fn default() -> Self {
        PredictOptions {
            top_k: 3,
            path_steps: 3,
            factors: 3,
        }
    }
}

/// What the model says about one event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelOutput {
    /// Probability that the current session ends with a purchase.
    pub purchase_probability: f64,
    /// Most likely next actions, highest first (ties by [`EventType::index`]).
    pub next_actions: Vec<ActionProbability>,
    /// Greedy most likely next steps.
    pub predicted_path: Vec<EventType>,
    /// Largest contributions to the purchase log-odds, largest magnitude first.
    pub factors: Vec<Factor>,
}

impl ModelOutput {
    /// The scorer's output record for the event `features` describes.
    pub fn into_prediction(
        self,
        features: &FeatureVector,
        model_version: &str,
        scoring_latency_us: i64,
    ) -> Prediction {
        Prediction {
            event_id: features.event_id.clone(),
            user_id: features.user_id.clone(),
            event_time: features.event_time,
            model_version: model_version.to_string(),
            purchase_probability: self.purchase_probability,
            next_actions: self.next_actions,
            predicted_path: self.predicted_path,
            factors: self.factors,
            scoring_latency_us,
            recommended_items: Vec::new(),
            recommended_categories: Vec::new(),
        }
    }
}

/// Markov next-action model plus logistic purchase model.
#[derive(Debug, Clone, PartialEq)]
pub struct BaselineModel {
    /// Next-action model.
    pub markov: MarkovChain,
    /// Purchase model.
    pub logistic: LogisticModel,
    /// `baseline-<8 hex>`: a hash of the parameters (see [`BaselineModel::compute_version`]).
    pub version: String,
}

/// The parameters as written to `model.json`; also what the version hashes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelParams {
    /// Always [`BASELINE_KIND`].
    pub kind: String,
    /// Purchase model parameters.
    pub logistic: LogisticModel,
    /// Next-action transition counts and smoothing.
    pub markov: MarkovChain,
}

impl BaselineModel {
    /// Combines two fitted models and stamps the version.
    pub fn new(markov: MarkovChain, logistic: LogisticModel) -> Self {
        let version = Self::compute_version(&markov, &logistic);
        BaselineModel {
            markov,
            logistic,
            version,
        }
    }

    /// The serialised parameters, exactly as `model.json` holds them.
    pub fn params_json(markov: &MarkovChain, logistic: &LogisticModel) -> String {
        let params = ModelParams {
            kind: BASELINE_KIND.to_string(),
            logistic: logistic.clone(),
            markov: markov.clone(),
        };
        // Serialising plain structs of numbers, strings and maps cannot fail.
        serde_json::to_string_pretty(&params).unwrap_or_default()
    }

    /// `baseline-` + the first 8 hex digits of the SHA-256 of [`BaselineModel::params_json`]:
    /// equal parameters give equal versions, and any change to a weight changes it.
    pub fn compute_version(markov: &MarkovChain, logistic: &LogisticModel) -> String {
        version_of_bytes(Self::params_json(markov, logistic).as_bytes())
    }

    /// Scores one event with [`PredictOptions::default`] except `top_k`.
    ///
    /// `prev_type` is the type of the session's latest event (normally `features.event_type`),
    /// `None` before the session's first event.
    pub fn predict(
        &self,
        prev_type: Option<EventType>,
        features: &FeatureVector,
        top_k: usize,
    ) -> ModelOutput {
        self.predict_with(
            prev_type,
            features,
            &PredictOptions {
                top_k,
                ..PredictOptions::default()
            },
        )
    }

    /// Scores one event.
    pub fn predict_with(
        &self,
        prev_type: Option<EventType>,
        features: &FeatureVector,
        options: &PredictOptions,
    ) -> ModelOutput {
        let distribution = self.markov.next_distribution(prev_type);
        let mut order: [usize; EventType::COUNT] = std::array::from_fn(|i| i);
        // Stable sort keeps the lower index first among equal probabilities.
        order.sort_by(|&a, &b| distribution[b].total_cmp(&distribution[a]));
        let next_actions = order
            .iter()
            .take(options.top_k)
            .map(|&i| ActionProbability {
                event_type: EventType::ALL[i],
                probability: distribution[i],
            })
            .collect();
        ModelOutput {
            purchase_probability: self.logistic.predict(&features.values),
            next_actions,
            predicted_path: self.markov.most_likely_path(prev_type, options.path_steps),
            factors: self.logistic.explain(&features.values, options.factors),
        }
    }
}

/// `baseline-` + 8 hex digits of the SHA-256 of `bytes`.
pub(crate) fn version_of_bytes(bytes: &[u8]) -> String {
    content_version(BASELINE_KIND, bytes)
}

/// `<kind>-` and 8 hex digits of the SHA-256 of `bytes`: the version of an artifact of one file.
pub(crate) fn content_version(kind: &str, bytes: &[u8]) -> String {
    format!("{kind}-{}", hex(&Sha256::digest(bytes)[..4]))
}

/// Lower-case hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}
