//! Optional report inputs: model scores (ROC and calibration) and fraud alerts (timeline).
//!
//! Both are JSON lines. Scores: `{"score": 0.73, "label": true}` per prediction, the score
//! being a purchase probability and the label whether the unit purchased. Alerts: the
//! `FraudAlert` records of the alert topic, as JSON.

use anyhow::Context as _;
use clickpath_schema::{FraudAlert, Prediction};
use serde::{Deserialize, Serialize};
use std::io::BufRead;
use std::path::Path;

/// One prediction and what happened.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Scored {
    /// Predicted purchase probability.
    pub score: f64,
    /// Whether the purchase happened.
    pub label: bool,
}

/// Inputs for the optional sections; a section is left out when its input is `None`.
#[derive(Debug, Clone, Default)]
pub struct Extras {
    /// Model scores with outcomes.
    pub scores: Option<Vec<Scored>>,
    /// Fraud alerts.
    pub alerts: Option<Vec<FraudAlert>>,
    /// The scorer's per-prediction decision factors, aggregated ([`aggregate_attributions`]).
    pub attributions: Option<Vec<Attribution>>,
    /// The session outlook model's segments and return propensity over the report's sessions.
    pub outlook: Option<OutlookSection>,
}

/// The outlook section: the model, how it did when trained, and its segments over these sessions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutlookSection {
    /// Model version.
    pub version: String,
    /// Return horizon (hours).
    pub horizon_hours: u32,
    /// Return ROC-AUC on the model's own test split.
    pub test_roc_auc: Option<f64>,
    /// Adjusted Rand index of its segments against a refit (1: retraining reproduces them).
    pub stability_ari: Option<f64>,
    /// Closed sessions of the report's events.
    pub sessions: usize,
    /// One row per segment.
    pub segments: Vec<SegmentRow>,
}

/// One segment over the report's sessions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentRow {
    /// Segment number.
    pub segment: usize,
    /// Its description (from its centroid).
    pub description: String,
    /// Sessions assigned to it.
    pub sessions: usize,
    /// Their share of all sessions.
    pub share: f64,
    /// Their mean return probability.
    pub mean_return_probability: f64,
}

/// Assesses every closed session of `events` (built by the sessionizer with the rules the model was
/// trained with) and sums them per segment.
pub fn outlook_section(
    events: &[clickpath_schema::ClickEvent],
    model: &clickpath_model::outlook::OutlookModel,
    meta: &clickpath_model::outlook::OutlookMeta,
) -> OutlookSection {
    let sessions = clickpath_model::outlook::closed_sessions(events, &meta.config.session);
    let k = model.segments.centroids.len();
    let mut sums = vec![(0usize, 0.0f64); k];
    for s in &sessions {
        let o = model.assess(s);
        if let Some(slot) = usize::try_from(o.segment)
            .ok()
            .and_then(|i| sums.get_mut(i))
        {
            slot.0 += 1;
            slot.1 += o.return_probability;
        }
    }
    let total = sessions.len().max(1) as f64;
    OutlookSection {
        version: meta.version.clone(),
        horizon_hours: model.horizon_hours,
        test_roc_auc: meta.metrics.return_roc_auc,
        stability_ari: meta.metrics.stability_ari,
        sessions: sessions.len(),
        segments: sums
            .into_iter()
            .enumerate()
            .map(|(i, (n, p))| SegmentRow {
                segment: i,
                description: model.segments.descriptions[i].clone(),
                sessions: n,
                share: n as f64 / total,
                mean_return_probability: p / n.max(1) as f64,
            })
            .collect(),
    }
}

/// One input's decision factors over many predictions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attribution {
    /// Factor name (a feature, `item`, `category`, or `event_type=TYPE`).
    pub name: String,
    /// Predictions listing it among their top factors.
    pub count: u64,
    /// Mean signed contribution to the purchase log-odds where listed.
    pub mean: f64,
    /// Mean absolute contribution where listed.
    pub mean_abs: f64,
}

/// Aggregates the decision factors of `predictions` per name, largest total influence
/// (`count x mean_abs`) first, the `top` first kept.
pub fn aggregate_attributions(predictions: &[Prediction], top: usize) -> Vec<Attribution> {
    let mut acc: std::collections::HashMap<&str, (u64, f64, f64)> = Default::default();
    for p in predictions {
        for f in &p.factors {
            if !f.contribution.is_finite() {
                continue;
            }
            let e = acc.entry(f.name.as_str()).or_default();
            e.0 += 1;
            e.1 += f.contribution;
            e.2 += f.contribution.abs();
        }
    }
    let mut out: Vec<Attribution> = acc
        .into_iter()
        .map(|(name, (n, sum, abs))| Attribution {
            name: name.to_string(),
            count: n,
            mean: sum / n as f64,
            mean_abs: abs / n as f64,
        })
        .collect();
    out.sort_by(|a, b| {
        (b.count as f64 * b.mean_abs)
            .total_cmp(&(a.count as f64 * a.mean_abs))
            .then_with(|| a.name.cmp(&b.name))
    });
    out.truncate(top);
    out
}

/// Reads JSON lines of `T`, naming the line of the first bad one.
pub fn read_json_lines<T: for<'de> Deserialize<'de>>(path: &Path) -> anyhow::Result<Vec<T>> {
    let file = std::fs::File::open(path).with_context(|| path.display().to_string())?;
    let mut out = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| path.display().to_string())?;
        if line.trim().is_empty() {
            continue;
        }
        out.push(
            serde_json::from_str(&line)
                .with_context(|| format!("{}: line {}", path.display(), i + 1))?,
        );
    }
    Ok(out)
}

/// ROC curve points `(false positive rate, true positive rate)`, from the highest threshold
/// down; tied scores move together. Empty if either class is missing.
pub fn roc_points(scores: &[Scored]) -> Vec<(f64, f64)> {
    let pos = scores.iter().filter(|s| s.label).count() as f64;
    let neg = scores.len() as f64 - pos;
    if pos == 0.0 || neg == 0.0 {
        return Vec::new();
    }
    let mut sorted: Vec<Scored> = scores
        .iter()
        .copied()
        .filter(|s| s.score.is_finite())
        .collect();
    sorted.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut pts = vec![(0.0, 0.0)];
    let (mut tp, mut fp) = (0.0, 0.0);
    for (i, s) in sorted.iter().enumerate() {
        if s.label {
            tp += 1.0;
        } else {
            fp += 1.0;
        }
        if sorted.get(i + 1).is_none_or(|n| n.score != s.score) {
            pts.push((fp / neg, tp / pos));
        }
    }
    pts
}

/// Area under [`roc_points`] (trapezoids).
pub fn auc(points: &[(f64, f64)]) -> f64 {
    points
        .windows(2)
        .map(|w| (w[1].0 - w[0].0) * (w[1].1 + w[0].1) / 2.0)
        .sum()
}

/// Reliability bins: `(mean score, observed rate, count)` for each non-empty one of `bins`
/// equal-width bins over [0, 1].
pub fn calibration_bins(scores: &[Scored], bins: usize) -> Vec<(f64, f64, u64)> {
    let mut acc = vec![(0.0, 0.0, 0u64); bins.max(1)];
    for s in scores.iter().filter(|s| s.score.is_finite()) {
        let i = ((s.score.clamp(0.0, 1.0) * acc.len() as f64) as usize).min(acc.len() - 1);
        acc[i].0 += s.score;
        acc[i].1 += f64::from(u8::from(s.label));
        acc[i].2 += 1;
    }
    acc.into_iter()
        .filter(|b| b.2 > 0)
        .map(|(s, l, n)| (s / n as f64, l / n as f64, n))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(score: f64, label: bool) -> Scored {
        Scored { score, label }
    }

    #[test]
    fn roc_of_a_perfect_and_a_tied_ranking() {
        let perfect = [s(0.9, true), s(0.8, true), s(0.2, false), s(0.1, false)];
        let p = roc_points(&perfect);
        assert_eq!(
            p,
            vec![(0.0, 0.0), (0.0, 0.5), (0.0, 1.0), (0.5, 1.0), (1.0, 1.0)]
        );
        assert!((auc(&p) - 1.0).abs() < 1e-12);
        let tied = [s(0.5, true), s(0.5, false)];
        assert!((auc(&roc_points(&tied)) - 0.5).abs() < 1e-12);
        assert!(roc_points(&[s(0.3, true)]).is_empty());
    }

    #[test]
    fn calibration_bins_average_scores_and_labels() {
        let b = calibration_bins(
            &[s(0.05, false), s(0.15, true), s(0.95, true), s(1.0, true)],
            10,
        );
        assert_eq!(b.len(), 3);
        assert_eq!(b[2], (0.975, 1.0, 2));
    }
}

#[cfg(test)]
mod attribution_tests {
    use super::*;
    use clickpath_schema::Factor;

    fn prediction(factors: &[(&str, f64)]) -> Prediction {
        Prediction {
            event_id: "e".into(),
            user_id: "u".into(),
            event_time: 0,
            model_version: "gru-x".into(),
            purchase_probability: 0.5,
            next_actions: vec![],
            predicted_path: vec![],
            factors: factors
                .iter()
                .map(|(n, c)| Factor {
                    name: (*n).into(),
                    contribution: *c,
                })
                .collect(),
            scoring_latency_us: 0,
            recommended_items: Vec::new(),
            recommended_categories: Vec::new(),
        }
    }

    #[test]
    fn attributions_average_per_name_and_rank_by_total_influence() {
        let ps = vec![
            prediction(&[("cart_value", 1.0), ("item", -0.5)]),
            prediction(&[("cart_value", 3.0), ("item", 0.5), ("bad", f64::NAN)]),
            prediction(&[("event_type=SEARCH", -0.2)]),
            prediction(&[]),
        ];
        let a = aggregate_attributions(&ps, 10);
        assert_eq!(a.len(), 3, "{a:?}");
        assert_eq!(a[0].name, "cart_value");
        assert_eq!((a[0].count, a[0].mean, a[0].mean_abs), (2, 2.0, 2.0));
        assert_eq!(a[1].name, "item");
        assert_eq!((a[1].count, a[1].mean, a[1].mean_abs), (2, 0.0, 0.5));
        assert_eq!(aggregate_attributions(&ps, 1).len(), 1);
    }
}
