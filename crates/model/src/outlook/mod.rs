//! Session outlook: when a session closes, the probability that its user comes back within a
//! horizon (return propensity, for retention marketing) and a behavioural segment (for targeting
//! and for analysts' reports).
//!
//! Both read the same features of the closed session, computed from its [`SessionSummary`] alone
//! ([`session_features`]), so the sessionizer scores exactly what training saw: its own summaries,
//! built offline by the same `clickpath_core::Sessionizer`. The return model is this crate's
//! logistic regression; the segments are k-means centroids of the standardised features, each with a
//! one-line description derived from its centroid. Training: [`train_outlook`]; artifact:
//! [`artifact`].

pub mod artifact;
mod train;

use crate::kmeans;
use std::collections::BTreeMap;
use std::sync::Arc;

use clickpath_schema::{EventType, FeatureValues, SessionOutlook, SessionSummary};
use serde::{Deserialize, Serialize};

use crate::logistic::LogisticModel;

pub use artifact::{OutlookMeta, load_outlook, save_outlook};
pub use train::{
    OutlookMetrics, OutlookTrainConfig, OutlookTrainReport, SegmentReport, closed_sessions,
    train_outlook,
};

/// The outlook features of a closed session, by name, in input order (see [`session_features`]).
pub const FEATURES: [&str; 9] = [
    "events",
    "minutes",
    "funnel_stage",
    "purchased",
    "order_value",
    "product_view_share",
    "cart_adds",
    "searches",
    "prior_sessions",
];

/// How a segment description names a feature well above (first) or below (second) the average.
const PHRASES: [(&str, &str); FEATURES.len()] = [
    ("many events", "few events"),
    ("long sessions", "short sessions"),
    ("deep in the funnel", "shallow in the funnel"),
    ("buyers", "non-buyers"),
    ("high order value", "low order value"),
    ("mostly product views", "few product views"),
    ("many cart adds", "few cart adds"),
    ("many searches", "few searches"),
    ("frequent visitors", "new visitors"),
];

/// A feature enters a segment's description when its centroid is at least this many standard
/// deviations from the mean.
const DESCRIBE_MIN_Z: f64 = 0.5;

/// The outlook features of `s`, in [`FEATURES`] order. Counts are `ln(1 + x)`; shares are of the
/// session's path (consecutive repeats compressed, as published); `prior_sessions` is the user's
/// sessions before this one (0 from a writer older than schema version 3, which did not count them).
pub fn session_features(s: &SessionSummary) -> [f64; FEATURES.len()] {
    let ln1p = |x: f64| x.max(0.0).ln_1p();
    let count = |t: EventType| s.path.iter().filter(|p| **p == t).count() as f64;
    let path_len = s.path.len().max(1) as f64;
    let minutes = (s.end_time - s.start_time).max(0) as f64 / 60_000.0;
    [
        ln1p(f64::from(s.event_count)),
        ln1p(minutes),
        s.furthest_stage as u8 as f64,
        f64::from(u8::from(s.purchased)),
        ln1p(if s.order_value.is_finite() {
            s.order_value
        } else {
            0.0
        }),
        count(EventType::ProductView) / path_len,
        ln1p(count(EventType::AddToCart)),
        ln1p(count(EventType::Search)),
        ln1p(s.user_sessions.saturating_sub(1) as f64),
    ]
}

/// Behavioural segments: k-means centroids in the standardised feature space.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Segments {
    /// Training mean of each feature.
    pub means: Vec<f64>,
    /// Training standard deviation of each feature (1 for a constant one).
    pub stds: Vec<f64>,
    /// Centroids, standardised.
    pub centroids: Vec<Vec<f64>>,
    /// One line per segment, derived from its centroid ([`describe`]).
    pub descriptions: Vec<String>,
}

impl Segments {
    /// The standardised features.
    pub fn standardise(&self, x: &[f64]) -> Vec<f64> {
        x.iter()
            .zip(self.means.iter().zip(&self.stds))
            .map(|(v, (m, s))| (v - m) / s)
            .collect()
    }

    /// The segment of a session with features `x`.
    pub fn assign(&self, x: &[f64]) -> usize {
        kmeans::nearest(&self.centroids, &self.standardise(x))
    }
}

/// A segment's one-line description: the features whose centroid is at least half a standard
/// deviation from the mean, strongest first (at most three), in words.
pub fn describe(centroid: &[f64]) -> String {
    let mut strong: Vec<(usize, f64)> = centroid
        .iter()
        .copied()
        .enumerate()
        .filter(|(_, z)| z.abs() >= DESCRIBE_MIN_Z)
        .collect();
    strong.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()).then(a.0.cmp(&b.0)));
    let words: Vec<&str> = strong
        .iter()
        .take(3)
        .map(|&(i, z)| {
            let (high, low) = PHRASES[i];
            if z > 0.0 { high } else { low }
        })
        .collect();
    if words.is_empty() {
        "close to the average session".into()
    } else {
        words.join(", ")
    }
}

/// The outlook model: return propensity and segments, with the version and horizon they were
/// trained for.
#[derive(Debug, Clone)]
pub struct OutlookModel {
    /// `outlook-` and 8 hex digits of the model file's SHA-256.
    pub version: String,
    /// The return horizon (hours) the label was defined with.
    pub horizon_hours: u32,
    /// Return propensity on [`FEATURES`].
    pub returns: LogisticModel,
    /// The segments.
    pub segments: Segments,
    names: Arc<clickpath_schema::FeatureNames>,
}

impl OutlookModel {
    /// A model from its parts (names the features as [`FEATURES`]).
    pub fn new(
        version: String,
        horizon_hours: u32,
        returns: LogisticModel,
        segments: Segments,
    ) -> Self {
        OutlookModel {
            version,
            horizon_hours,
            returns,
            segments,
            names: feature_names(),
        }
    }

    /// The return probability of a session with features `x`.
    pub fn return_probability(&self, x: &[f64]) -> f64 {
        self.returns.predict(&values(&self.names, x))
    }

    /// The outlook of a closed session, as published on the sessions topic.
    pub fn assess(&self, s: &SessionSummary) -> SessionOutlook {
        let x = session_features(s);
        let segment = self.segments.assign(&x);
        SessionOutlook {
            model_version: self.version.clone(),
            return_probability: self.return_probability(&x),
            return_horizon_hours: i32::try_from(self.horizon_hours).unwrap_or(i32::MAX),
            segment: i32::try_from(segment).unwrap_or(i32::MAX),
            segment_description: self
                .segments
                .descriptions
                .get(segment)
                .cloned()
                .unwrap_or_default(),
        }
    }
}

/// [`FEATURES`] as a shared name list.
fn feature_names() -> Arc<clickpath_schema::FeatureNames> {
    let map: BTreeMap<String, f64> = FEATURES.iter().map(|n| (n.to_string(), 0.0)).collect();
    FeatureValues::from(map).names().clone()
}

/// `x` (in [`FEATURES`] order) as feature values for the logistic regression.
fn values(names: &Arc<clickpath_schema::FeatureNames>, x: &[f64]) -> FeatureValues {
    // The shared names are sorted: look each up by its position in FEATURES.
    let mut sorted = vec![0.0; FEATURES.len()];
    for (name, v) in FEATURES.iter().zip(x) {
        if let Some(i) = names.position(name) {
            sorted[i] = *v;
        }
    }
    FeatureValues::from_parts(names.clone(), sorted).expect("one value per feature name")
}
