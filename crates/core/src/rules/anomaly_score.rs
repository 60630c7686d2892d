//! `ANOMALY_SCORE`: the Half-Space Trees score as an alert of its own, for what no rule names.
//!
//! A single event's score is a poor statistic (every shopper has a few odd events: a first
//! visit, a long pause), so the alert judges the user's mean score over their last
//! [`WINDOW`] events against a threshold calibrated online (`calibrate.rs`): the larger of
//! `anomaly_min_score` and the value only `calibration_per_10k_users_hour` alerts per 10,000
//! active users per hour exceed. It fires only for users with no other open alert: a crawler
//! or card tester already alerted by its rule gets no second, vaguer alert. The reasons name the
//! features whose recent values sit furthest from the population's.

use super::signals::{FEATURE_NAMES, FEATURES};
use super::{Finding, RulesConfig};
use clickpath_schema::{AlertType, Severity};
use serde::{Deserialize, Serialize};

/// Events a user's mean score is taken over.
pub const WINDOW: usize = 16;

/// Smoothing of a user's recent feature values (about the window's length).
const USER_ALPHA: f32 = 2.0 / (WINDOW as f32 + 1.0);
/// Smoothing of the population's feature values.
const POPULATION_ALPHA: f64 = 1e-3;

/// A user's last scores and recent feature values.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct ScoreWindow {
    scores: [f32; WINDOW],
    next: u8,
    len: u8,
    features: [f32; FEATURES],
}

impl ScoreWindow {
    /// Empties the window as `Default` would (it holds no allocation).
    pub(super) fn clear(&mut self) {
        *self = ScoreWindow::default();
    }

    /// Mean of the window once it is full.
    fn full_mean(&self) -> Option<f64> {
        (usize::from(self.len) == WINDOW)
            .then(|| self.scores.iter().map(|&s| f64::from(s)).sum::<f64>() / WINDOW as f64)
    }
}

/// The population's mean feature values.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct PopulationFeatures {
    mean: [f64; FEATURES],
    seen: u64,
}

impl Default for PopulationFeatures {
    fn default() -> Self {
        PopulationFeatures {
            mean: [0.5; FEATURES],
            seen: 0,
        }
    }
}

/// Folds the event's `score` and `features` in; returns the user's mean score over a full window.
pub(super) fn observe(
    state: &mut ScoreWindow,
    population: &mut PopulationFeatures,
    score: f64,
    features: &[f64; FEATURES],
) -> Option<f64> {
    state.scores[usize::from(state.next)] = score as f32;
    state.next = ((usize::from(state.next) + 1) % WINDOW) as u8;
    state.len = (usize::from(state.len) + 1).min(WINDOW) as u8;
    let alpha = if population.seen < 1_000 {
        1.0 / (population.seen + 1) as f64
    } else {
        POPULATION_ALPHA
    };
    population.seen += 1;
    for (i, &x) in features.iter().enumerate() {
        let user = &mut state.features[i];
        *user = if state.len == 1 {
            x as f32
        } else {
            *user + USER_ALPHA * (x as f32 - *user)
        };
        population.mean[i] += alpha * (x - population.mean[i]);
    }
    state.full_mean()
}

/// The finding when `mean` reaches `threshold` (`floor` is the configured minimum it was
/// calibrated up from). `evidence` are the window's event ids.
pub(super) fn finding(
    state: &ScoreWindow,
    population: &PopulationFeatures,
    mean: f64,
    threshold: f64,
    cfg: &RulesConfig,
    evidence: Vec<String>,
    window: (i64, i64),
) -> Option<Finding> {
    if mean < threshold {
        return None;
    }
    let mut drivers: Vec<(usize, f64)> = (0..FEATURES)
        .map(|i| (i, f64::from(state.features[i]) - population.mean[i]))
        .collect();
    drivers.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()));
    let drivers: Vec<String> = drivers
        .iter()
        .take(3)
        .map(|&(i, d)| {
            format!(
                "{} {:.2} (population {:.2})",
                FEATURE_NAMES[i],
                f64::from(state.features[i]),
                population.mean[i]
            ) + if d > 0.0 { " high" } else { " low" }
        })
        .collect();
    Some(Finding {
        alert_type: AlertType::AnomalyScore,
        severity: Severity::Low,
        score: mean,
        reasons: vec![format!(
            "Mean Half-Space Trees anomaly score {mean:.3} over the last {WINDOW} events, at or \
             above {threshold:.3} (this stream's calibrated level; configured minimum {:.2}). \
             Furthest from the population (features in [0, 1]): {}.",
            cfg.anomaly_min_score,
            drivers.join("; ")
        )],
        evidence,
        window_start: window.0,
        window_end: window.1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mean_needs_a_full_window_and_follows_the_last_scores() {
        let (mut s, mut p) = (ScoreWindow::default(), PopulationFeatures::default());
        let f = [0.5; FEATURES];
        for _ in 0..WINDOW - 1 {
            assert_eq!(observe(&mut s, &mut p, 0.9, &f), None);
        }
        assert!((observe(&mut s, &mut p, 0.9, &f).unwrap() - 0.9).abs() < 1e-6);
        for _ in 0..WINDOW {
            observe(&mut s, &mut p, 0.1, &f);
        }
        assert!((s.full_mean().unwrap() - 0.1).abs() < 1e-6);
    }

    #[test]
    fn the_reasons_name_the_features_furthest_from_the_population() {
        let (mut s, mut p) = (ScoreWindow::default(), PopulationFeatures::default());
        let ordinary = [0.5; FEATURES];
        let mut odd = ordinary;
        odd[7] = 1.0; // failed payments
        odd[0] = 0.1; // short gaps
        for _ in 0..5_000 {
            observe(&mut ScoreWindow::default(), &mut p, 0.3, &ordinary);
        }
        let mut mean = None;
        for _ in 0..WINDOW {
            mean = observe(&mut s, &mut p, 0.95, &odd);
        }
        let f = finding(
            &s,
            &p,
            mean.unwrap(),
            0.8,
            &RulesConfig::default(),
            vec![],
            (0, 1),
        )
        .expect("above the threshold");
        let reason = &f.reasons[0];
        let failed = reason.find(FEATURE_NAMES[7]).expect(reason);
        let gap = reason.find(FEATURE_NAMES[0]).expect(reason);
        assert!(failed < gap, "the larger deviation first: {reason}");
        assert!(
            reason.contains("high") && reason.contains("low"),
            "{reason}"
        );
        assert!(finding(&s, &p, 0.79, 0.8, &RulesConfig::default(), vec![], (0, 1)).is_none());
    }
}
