//! Evaluation metrics for purchase probabilities and next-action distributions.
//!
//! Every function checks its input and returns a [`MetricError`] rather than a misleading number:
//! AUC of a single class, for example, is undefined, not 0.5.

use crate::error::MetricError;
use serde::{Deserialize, Serialize};

/// Quality of a model on a set of examples. A metric that is undefined on the data (AUC with a
/// single class, top-k without any next action) is `None`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalMetrics {
    /// Examples scored.
    pub examples: usize,
    /// Examples whose session went on to a purchase.
    pub positives: usize,
    /// ROC AUC of the purchase probability.
    pub roc_auc: Option<f64>,
    /// Average precision of the purchase probability.
    pub pr_auc: Option<f64>,
    /// Log loss of the purchase probability (nats).
    pub log_loss: Option<f64>,
    /// Expected calibration error, 10 equal-width bins.
    pub ece: Option<f64>,
    /// Examples with a next action (the session's last event has none).
    pub next_action_cases: usize,
    /// Next action is the most likely one.
    pub next_action_top1: Option<f64>,
    /// Next action is among the 3 most likely.
    pub next_action_top3: Option<f64>,
    /// Mean negative log probability of the next action (nats); absent in artifacts made
    /// before it was recorded.
    #[serde(default)]
    pub next_action_log_loss: Option<f64>,
    /// Examples followed by a purchase within [`crate::dataset::SOON_EVENTS`] events.
    #[serde(default)]
    pub soon_positives: usize,
    /// ROC AUC of the same purchase probability against "a purchase within the next
    /// [`crate::dataset::SOON_EVENTS`] events"; absent in artifacts made before it was recorded.
    #[serde(default)]
    pub soon_roc_auc: Option<f64>,
    /// Average precision against that label.
    #[serde(default)]
    pub soon_pr_auc: Option<f64>,
    /// The session label on the examples at given positions of their session (after the 1st,
    /// 3rd and 5th event): how early the model knows.
    #[serde(default)]
    pub by_position: Vec<PositionMetrics>,
}

/// Purchase metrics on the examples at one position of their session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PositionMetrics {
    /// Position in the session, from 1 (the example after the session's first event).
    pub position: usize,
    /// Examples at that position (sessions that reach it before any purchase).
    pub examples: usize,
    /// Of those, sessions that go on to purchase.
    pub positives: usize,
    /// ROC AUC of the session label at that position.
    pub roc_auc: Option<f64>,
}

/// Positions reported in [`EvalMetrics::by_position`].
pub const REPORTED_POSITIONS: [usize; 3] = [1, 3, 5];

/// Sizes of the data behind a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetCounts {
    /// Input events.
    pub events: usize,
    /// Sessions.
    pub sessions: usize,
    /// Examples: one per event (those from a session's first purchase on serve the next action
    /// and item only).
    pub examples: usize,
    /// Training examples.
    pub train_examples: usize,
    /// Validation examples.
    pub validation_examples: usize,
    /// Test examples.
    pub test_examples: usize,
    /// Share of positive training examples among those scored for purchase.
    pub train_positive_rate: f64,
}

/// Probabilities are clipped to `[EPS, 1 - EPS]` in [`log_loss`] so a confident mistake costs
/// about 34.5 nats instead of infinity (scikit-learn's convention).
pub const LOG_LOSS_EPS: f64 = 1e-15;

/// Number of equal-width bins [`expected_calibration_error`] is usually called with.
pub const DEFAULT_ECE_BINS: usize = 10;

fn check(scores: &[f64], labels: &[bool]) -> Result<(), MetricError> {
    if scores.len() != labels.len() {
        return Err(MetricError::LengthMismatch {
            predictions: scores.len(),
            labels: labels.len(),
        });
    }
    if scores.is_empty() {
        return Err(MetricError::Empty);
    }
    if let Some(i) = scores.iter().position(|s| !s.is_finite()) {
        return Err(MetricError::NonFinite(i));
    }
    Ok(())
}

/// Indices of `scores` sorted by score, highest first (ties keep input order).
fn order_desc(scores: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    order
}

/// Area under the ROC curve: the probability that a random positive scores above a random
/// negative, with ties counted as one half (average ranks, Mann-Whitney U).
///
/// Perfect ranking gives 1, reversed ranking 0, all-equal scores 0.5.
pub fn roc_auc(scores: &[f64], labels: &[bool]) -> Result<f64, MetricError> {
    check(scores, labels)?;
    let positives = labels.iter().filter(|&&l| l).count();
    let negatives = labels.len() - positives;
    if positives == 0 || negatives == 0 {
        return Err(MetricError::SingleClass);
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    // Sum of the (1-based, tie-averaged) ranks of the positives.
    let mut positive_rank_sum = 0.0;
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && scores[order[end]] == scores[order[start]] {
            end += 1;
        }
        let average_rank = (start + 1 + end) as f64 / 2.0;
        let group_positives = order[start..end].iter().filter(|&&i| labels[i]).count();
        positive_rank_sum += average_rank * group_positives as f64;
        start = end;
    }
    let p = positives as f64;
    let u = positive_rank_sum - p * (p + 1.0) / 2.0;
    Ok(u / (p * negatives as f64))
}

/// Area under the precision-recall curve as average precision:
/// `sum_n (R_n - R_{n-1}) * P_n` over the distinct score thresholds, highest first.
/// Equal scores form one threshold, so the result does not depend on input order.
///
/// Needs at least one positive; a perfect ranking gives 1.
pub fn pr_auc(scores: &[f64], labels: &[bool]) -> Result<f64, MetricError> {
    check(scores, labels)?;
    let positives = labels.iter().filter(|&&l| l).count();
    if positives == 0 {
        return Err(MetricError::SingleClass);
    }
    let order = order_desc(scores);
    let (mut tp, mut seen) = (0usize, 0usize);
    let mut previous_recall = 0.0;
    let mut ap = 0.0;
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && scores[order[end]] == scores[order[start]] {
            end += 1;
        }
        tp += order[start..end].iter().filter(|&&i| labels[i]).count();
        seen = end;
        let recall = tp as f64 / positives as f64;
        let precision = tp as f64 / seen as f64;
        ap += (recall - previous_recall) * precision;
        previous_recall = recall;
        start = end;
    }
    debug_assert_eq!(seen, order.len());
    Ok(ap)
}

/// Mean binary cross-entropy in nats, probabilities clipped to
/// `[LOG_LOSS_EPS, 1 - LOG_LOSS_EPS]`.
pub fn log_loss(probabilities: &[f64], labels: &[bool]) -> Result<f64, MetricError> {
    check(probabilities, labels)?;
    let total: f64 = probabilities
        .iter()
        .zip(labels)
        .map(|(&p, &y)| {
            let p = p.clamp(LOG_LOSS_EPS, 1.0 - LOG_LOSS_EPS);
            if y { -p.ln() } else { -(1.0 - p).ln() }
        })
        .sum();
    Ok(total / probabilities.len() as f64)
}

/// Expected calibration error with `bins` equal-width bins over `[0, 1]`:
/// `sum_b (n_b / N) * |mean(label)_b - mean(probability)_b|`.
///
/// Probabilities outside `[0, 1]` are clamped; 1.0 falls in the last bin.
pub fn expected_calibration_error(
    probabilities: &[f64],
    labels: &[bool],
    bins: usize,
) -> Result<f64, MetricError> {
    check(probabilities, labels)?;
    if bins == 0 {
        return Err(MetricError::ZeroParameter);
    }
    // (count, sum of probabilities, sum of labels) per bin.
    let mut acc = vec![(0usize, 0.0f64, 0.0f64); bins];
    for (&p, &y) in probabilities.iter().zip(labels) {
        let p = p.clamp(0.0, 1.0);
        let bin = ((p * bins as f64) as usize).min(bins - 1);
        acc[bin].0 += 1;
        acc[bin].1 += p;
        acc[bin].2 += f64::from(u8::from(y));
    }
    let n = probabilities.len() as f64;
    Ok(acc
        .iter()
        .filter(|(count, _, _)| *count > 0)
        .map(|&(count, p_sum, y_sum)| (count as f64 / n) * ((y_sum - p_sum) / count as f64).abs())
        .sum())
}

/// Fraction of cases whose target class is among the `k` highest scores of its distribution.
///
/// Ties are broken by class index (lower first), the same order [`crate::BaselineModel`] lists
/// next actions in, so a tie never counts as a hit for free. A target index outside the
/// distribution counts as a miss.
pub fn top_k_accuracy<D: AsRef<[f64]>>(
    distributions: &[D],
    targets: &[usize],
    k: usize,
) -> Result<f64, MetricError> {
    if distributions.len() != targets.len() {
        return Err(MetricError::LengthMismatch {
            predictions: distributions.len(),
            labels: targets.len(),
        });
    }
    if distributions.is_empty() {
        return Err(MetricError::Empty);
    }
    if k == 0 {
        return Err(MetricError::ZeroParameter);
    }
    let mut hits = 0usize;
    for (i, (dist, &target)) in distributions.iter().zip(targets).enumerate() {
        let dist = dist.as_ref();
        if dist.iter().any(|p| !p.is_finite()) {
            return Err(MetricError::NonFinite(i));
        }
        let Some(&target_score) = dist.get(target) else {
            continue;
        };
        let rank = dist
            .iter()
            .enumerate()
            .filter(|&(j, &p)| p > target_score || (p == target_score && j < target))
            .count();
        if rank < k {
            hits += 1;
        }
    }
    Ok(hits as f64 / distributions.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn auc_of_perfect_reversed_and_tied_rankings() {
        let labels = [false, false, true, true];
        assert!(close(roc_auc(&[0.1, 0.2, 0.8, 0.9], &labels).unwrap(), 1.0));
        assert!(close(roc_auc(&[0.9, 0.8, 0.2, 0.1], &labels).unwrap(), 0.0));
        assert!(close(roc_auc(&[0.5; 4], &labels).unwrap(), 0.5));
    }

    #[test]
    fn auc_of_a_known_ranking() {
        // Scores ascending: n p n p -> pairs (pos>neg): p@2 beats 1 neg, p@4 beats 2 negs = 3 of 4.
        let scores = [0.1, 0.2, 0.3, 0.4];
        let labels = [false, true, false, true];
        assert!(close(roc_auc(&scores, &labels).unwrap(), 0.75));
        // One tie between a positive and a negative counts half: (1 + 0.5) / 2.
        let scores = [0.1, 0.5, 0.5];
        let labels = [false, true, false];
        assert!(close(roc_auc(&scores, &labels).unwrap(), 0.75));
    }

    #[test]
    fn auc_rejects_bad_input() {
        assert_eq!(roc_auc(&[], &[]), Err(MetricError::Empty));
        assert_eq!(
            roc_auc(&[0.1, 0.2], &[true, true]),
            Err(MetricError::SingleClass)
        );
        assert_eq!(
            roc_auc(&[0.1], &[true, false]),
            Err(MetricError::LengthMismatch {
                predictions: 1,
                labels: 2
            })
        );
        assert_eq!(
            roc_auc(&[0.1, f64::NAN], &[true, false]),
            Err(MetricError::NonFinite(1))
        );
    }

    #[test]
    fn average_precision_by_hand() {
        // Descending: p n p n -> thresholds: R=.5,P=1 ; R=.5,P=.5 ; R=1,P=2/3 ; R=1,P=.5.
        // AP = .5*1 + 0 + .5*(2/3) + 0 = 5/6.
        let scores = [0.9, 0.8, 0.7, 0.6];
        let labels = [true, false, true, false];
        assert!(close(pr_auc(&scores, &labels).unwrap(), 5.0 / 6.0));
        assert!(close(
            pr_auc(&[0.9, 0.8, 0.1], &[true, true, false]).unwrap(),
            1.0
        ));
        // All tied: a single threshold, precision = base rate.
        assert!(close(
            pr_auc(&[0.3; 4], &[true, false, false, false]).unwrap(),
            0.25
        ));
        assert_eq!(pr_auc(&[0.1], &[false]), Err(MetricError::SingleClass));
    }

    #[test]
    fn log_loss_by_hand_and_clipped() {
        let ll = log_loss(&[0.8, 0.4], &[true, false]).unwrap();
        assert!(close(ll, (-(0.8f64).ln() - (0.6f64).ln()) / 2.0));
        let worst = log_loss(&[0.0], &[true]).unwrap();
        assert!(worst.is_finite());
        assert!(close(worst, -LOG_LOSS_EPS.ln()));
    }

    #[test]
    fn ece_by_hand() {
        // Bin [0.2,0.3): p=.2,.2 labels 0,1 -> |0.5-0.2| * 2/4; bin [0.9,1]: p=.9,1.0 labels 1,1
        // -> |1-0.95| * 2/4. ECE = 0.15 + 0.025.
        let p = [0.2, 0.2, 0.9, 1.0];
        let y = [false, true, true, true];
        let ece = expected_calibration_error(&p, &y, DEFAULT_ECE_BINS).unwrap();
        assert!(close(ece, 0.175), "{ece}");
        assert_eq!(
            expected_calibration_error(&p, &y, 0),
            Err(MetricError::ZeroParameter)
        );
    }

    #[test]
    fn top_k_by_hand_with_ties_broken_by_index() {
        let dists = [
            vec![0.1, 0.6, 0.3],
            vec![0.5, 0.5, 0.0],
            vec![0.2, 0.3, 0.5],
        ];
        // Target ranks: 0 (class 1 highest), 1 (tie with class 0, loses on index), 2.
        let targets = [1, 1, 0];
        assert!(close(
            top_k_accuracy(&dists, &targets, 1).unwrap(),
            1.0 / 3.0
        ));
        assert!(close(
            top_k_accuracy(&dists, &targets, 2).unwrap(),
            2.0 / 3.0
        ));
        assert!(close(top_k_accuracy(&dists, &targets, 3).unwrap(), 1.0));
        assert_eq!(
            top_k_accuracy(&dists, &targets, 0),
            Err(MetricError::ZeroParameter)
        );
        // Out-of-range target is a miss.
        assert!(close(top_k_accuracy(&dists[..1], &[7], 3).unwrap(), 0.0));
    }

    /// Reference AUC: count every positive/negative pair.
    fn pairwise_auc(scores: &[f64], labels: &[bool]) -> f64 {
        let (mut wins, mut pairs) = (0.0, 0.0);
        for (i, &si) in scores.iter().enumerate() {
            for (j, &sj) in scores.iter().enumerate() {
                if labels[i] && !labels[j] {
                    pairs += 1.0;
                    if si > sj {
                        wins += 1.0;
                    } else if si == sj {
                        wins += 0.5;
                    }
                }
            }
        }
        wins / pairs
    }

    proptest! {
        #[test]
        fn auc_matches_pairwise_reference(
            data in proptest::collection::vec((0u8..6, any::<bool>()), 2..40)
        ) {
            // Few distinct scores so ties are common.
            let scores: Vec<f64> = data.iter().map(|(s, _)| f64::from(*s) / 5.0).collect();
            let labels: Vec<bool> = data.iter().map(|(_, l)| *l).collect();
            let has_both = labels.iter().any(|&l| l) && labels.iter().any(|&l| !l);
            match roc_auc(&scores, &labels) {
                Ok(auc) => {
                    prop_assert!(has_both);
                    prop_assert!((auc - pairwise_auc(&scores, &labels)).abs() < 1e-9);
                }
                Err(e) => {
                    prop_assert!(!has_both);
                    prop_assert_eq!(e, MetricError::SingleClass);
                }
            }
        }

        #[test]
        fn metrics_stay_in_range(
            data in proptest::collection::vec((0.0f64..=1.0, any::<bool>()), 1..40)
        ) {
            let p: Vec<f64> = data.iter().map(|(s, _)| *s).collect();
            let y: Vec<bool> = data.iter().map(|(_, l)| *l).collect();
            if let Ok(ap) = pr_auc(&p, &y) {
                prop_assert!((0.0..=1.0 + 1e-12).contains(&ap));
            }
            let ece = expected_calibration_error(&p, &y, DEFAULT_ECE_BINS).unwrap();
            prop_assert!((0.0..=1.0).contains(&ece));
            prop_assert!(log_loss(&p, &y).unwrap() >= 0.0);
        }
    }
}
