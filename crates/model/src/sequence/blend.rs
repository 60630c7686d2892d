//! The purchase blend: the network's purchase logit stacked with a logistic regression on the same
//! step's normalised numeric inputs (the windower's features).
//!
//! Why: on the session label the windower's running counts carry most of what there is to know, and
//! a network trained jointly on next action and next item, early-stopped on the sum of those losses,
//! can rank purchases a little worse than a plain logistic regression on those counts (docs/models.md).
//! Stacking keeps both: the regression is fitted on the training split, then three weights (network
//! logit, regression logit, intercept) on the validation split, which the network never trained on
//! (though its best epoch, and the regression's early stop, were chosen on it: the validation figures in
//! [`BlendValidation`] are in-sample for the stack; the test split's are the honest ones).
//! The result is folded into one linear form, `bias + network * l + sum(w_i * x_i)`, so every path that
//! scores a step (offline evaluation, the online scorer, occlusion factors) applies the same formula.

use std::collections::BTreeMap;

use clickpath_schema::FeatureValues;
use serde::{Deserialize, Serialize};

use crate::error::ModelError;
use crate::logistic::{LogisticConfig, LogisticModel, Z_CLIP, sigmoid};
use crate::metrics::roc_auc;

/// Name of the network-logit input of the stacking regression.
const NETWORK_INPUT: &str = "network";
/// Name of the regression-logit input of the stacking regression.
const LINEAR_INPUT: &str = "linear";

/// The blended purchase logit (see the module docs): `bias + network * clip(l) + linear * clip(L)`, with
/// `L = linear_bias + sum(numeric_i * clip(x_i))`. The clips are the regressions' own (each input's
/// standardised value is clipped to +-10 deviations), so the folded form scores exactly as the two fitted
/// regressions would, even for an absurd input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PurchaseBlend {
    /// Weight of each normalised numeric input in the regression logit, in the normaliser's order.
    pub numeric: Vec<f64>,
    /// Per input, the range the regression clips it to (training mean +- 10 deviations).
    pub numeric_range: Vec<[f64; 2]>,
    /// Intercept of the regression logit.
    pub linear_bias: f64,
    /// Weight of the (clipped) regression logit.
    pub linear: f64,
    /// Range the stacking clips the regression logit to.
    pub linear_range: [f64; 2],
    /// Weight of the (clipped) network logit.
    pub network: f64,
    /// Range the stacking clips the network logit to.
    pub network_range: [f64; 2],
    /// Intercept.
    pub bias: f64,
    /// How the parts and the blend ranked the validation split when it was fitted.
    pub validation: BlendValidation,
}

/// `x` within `range`; a non-finite `x` is the range's middle (the regression's mean).
fn clip(x: f64, [low, high]: [f64; 2]) -> f64 {
    if x.is_finite() {
        x.clamp(low, high)
    } else {
        (low + high) / 2.0
    }
}

/// The validation split's purchase ROC-AUC of each part and of the blend, for the record (in-sample for
/// the stack, which was fitted there).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BlendValidation {
    /// Examples scored for purchase.
    pub examples: usize,
    /// Of them positive.
    pub positives: usize,
    /// The network alone.
    pub network_auc: Option<f64>,
    /// The logistic regression alone.
    pub linear_auc: Option<f64>,
    /// The blend.
    pub blend_auc: Option<f64>,
}

/// Steps scored for purchase: the network's logit, the step's normalised numeric inputs, the label.
#[derive(Debug, Default)]
pub struct BlendRows<'a> {
    /// The network's purchase logit per step (empty for the training rows, which do not need it).
    pub network: Vec<f64>,
    /// Normalised numeric inputs per step.
    pub numeric: Vec<&'a [f32]>,
    /// Whether the session purchased after the step.
    pub labels: Vec<bool>,
}

impl PurchaseBlend {
    /// The regression's purchase logit of a step's normalised numeric inputs.
    pub fn linear_logit(&self, numeric: &[f32]) -> f64 {
        self.linear_bias
            + self
                .numeric
                .iter()
                .zip(&self.numeric_range)
                .zip(numeric)
                .map(|((w, r), x)| w * clip(f64::from(*x), *r))
                .sum::<f64>()
    }

    /// The blended purchase logit of a step whose network logit is `network_logit`.
    pub fn logit(&self, network_logit: f64, numeric: &[f32]) -> f64 {
        self.bias
            + self.network * clip(network_logit, self.network_range)
            + self.linear * clip(self.linear_logit(numeric), self.linear_range)
    }

    /// Checks the blend fits a model with `features` numeric inputs (on load).
    pub fn check(&self, features: usize) -> Result<(), String> {
        if self.numeric.len() != features || self.numeric_range.len() != features {
            return Err(format!(
                "the purchase blend has {} numeric weights and {} ranges but the model reads {features} features",
                self.numeric.len(),
                self.numeric_range.len()
            ));
        }
        let finite = [
            self.network,
            self.bias,
            self.linear,
            self.linear_bias,
            self.linear_range[0],
            self.linear_range[1],
            self.network_range[0],
            self.network_range[1],
        ]
        .into_iter()
        .chain(self.numeric.iter().copied())
        .chain(self.numeric_range.iter().flatten().copied())
        .all(f64::is_finite);
        if !finite {
            return Err("the purchase blend has a non-finite weight".into());
        }
        Ok(())
    }

    /// Fits the blend: the regression on `train` (early-stopped on `validation`), the stacking weights on
    /// `validation`. `names` are the numeric inputs' names, in the normaliser's order. `Ok(None)` when a
    /// split has a single class (nothing to fit: the network is used alone).
    pub fn fit(
        names: &[String],
        train: &BlendRows<'_>,
        validation: &BlendRows<'_>,
    ) -> Result<Option<Self>, ModelError> {
        let one_class = |rows: &BlendRows<'_>| {
            let positives = rows.labels.iter().filter(|y| **y).count();
            positives == 0 || positives == rows.labels.len()
        };
        if one_class(train) || one_class(validation) {
            return Ok(None);
        }
        // One shared (sorted) name list; each row's values in its order.
        let shared = FeatureValues::from(
            names
                .iter()
                .map(|n| (n.clone(), 0.0))
                .collect::<BTreeMap<String, f64>>(),
        )
        .names()
        .clone();
        let order: Vec<usize> = names
            .iter()
            .map(|n| shared.position(n).unwrap_or(0))
            .collect();
        let values = |rows: &BlendRows<'_>| -> Vec<FeatureValues> {
            rows.numeric
                .iter()
                .map(|xs| {
                    let mut sorted = vec![0.0; order.len()];
                    for (&at, x) in order.iter().zip(xs.iter()) {
                        sorted[at] = f64::from(*x);
                    }
                    FeatureValues::from_parts(shared.clone(), sorted)
                        .expect("one value per feature")
                })
                .collect()
        };
        let (train_values, validation_values) = (values(train), values(validation));
        let (linear, _) = LogisticModel::fit(
            names,
            &labeled(&train_values, &train.labels),
            &labeled(&validation_values, &validation.labels),
            &LogisticConfig::default(),
        )?;
        let linear_logits: Vec<f64> = validation_values.iter().map(|v| linear.logit(v)).collect();

        let stacked_values: Vec<FeatureValues> = linear_logits
            .iter()
            .zip(&validation.network)
            .map(|(l, n)| {
                FeatureValues::from([
                    (LINEAR_INPUT.to_string(), *l),
                    (NETWORK_INPUT.to_string(), *n),
                ])
            })
            .collect();
        let stack_names = [LINEAR_INPUT.to_string(), NETWORK_INPUT.to_string()];
        // No validation split is left for early stopping: three weights on thousands of examples
        // run every epoch.
        let (stack, _) = LogisticModel::fit(
            &stack_names,
            &labeled(&stacked_values, &validation.labels),
            &[],
            &LogisticConfig::default(),
        )?;
        let blend = fold(names, &linear, &stack)?;
        let blended: Vec<f64> = validation
            .network
            .iter()
            .zip(&validation.numeric)
            .map(|(n, xs)| sigmoid(blend.logit(*n, xs)))
            .collect();
        let labels = &validation.labels;
        Ok(Some(PurchaseBlend {
            validation: BlendValidation {
                examples: labels.len(),
                positives: labels.iter().filter(|y| **y).count(),
                network_auc: roc_auc(&validation.network, labels).ok(),
                linear_auc: roc_auc(&linear_logits, labels).ok(),
                blend_auc: roc_auc(&blended, labels).ok(),
            },
            ..blend
        }))
    }
}

fn labeled<'v>(values: &'v [FeatureValues], labels: &[bool]) -> Vec<(&'v FeatureValues, bool)> {
    values.iter().zip(labels.iter().copied()).collect()
}

/// Folds the two fitted regressions into [`PurchaseBlend`]'s form.
///
/// Each regression reads `z_k = clamp((v_k - mean_k) / std_k, +-Z_CLIP)`, which is
/// `(clamp(v_k, mean_k +- Z_CLIP * std_k) - mean_k) / std_k`: a weight `w_k / std_k` on the clipped
/// value, and `-w_k * mean_k / std_k` into the intercept.
fn fold(
    names: &[String],
    linear: &LogisticModel,
    stack: &LogisticModel,
) -> Result<PurchaseBlend, ModelError> {
    let range = |mean: f64, std: f64| [mean - Z_CLIP * std, mean + Z_CLIP * std];
    let s = stack.params();
    let input = |name: &str| -> Result<(f64, [f64; 2], f64), ModelError> {
        let i = s
            .feature_names
            .iter()
            .position(|n| n == name)
            .ok_or_else(|| ModelError::InvalidConfig(format!("blend input {name} missing")))?;
        let k = s.weights[i] / s.stds[i];
        Ok((k, range(s.means[i], s.stds[i]), -k * s.means[i]))
    };
    let (linear_weight, linear_range, linear_offset) = input(LINEAR_INPUT)?;
    let (network, network_range, network_offset) = input(NETWORK_INPUT)?;
    let l = linear.params();
    let mut numeric = vec![0.0; names.len()];
    let mut numeric_range = vec![[f64::MIN, f64::MAX]; names.len()];
    let mut linear_bias = l.bias;
    for (j, name) in l.feature_names.iter().enumerate() {
        let w = l.weights[j] / l.stds[j];
        linear_bias -= w * l.means[j];
        if let Some(i) = names.iter().position(|n| n == name) {
            numeric[i] = w;
            numeric_range[i] = range(l.means[j], l.stds[j]);
        }
    }
    Ok(PurchaseBlend {
        numeric,
        numeric_range,
        linear_bias,
        linear: linear_weight,
        linear_range,
        network,
        network_range,
        bias: s.bias + linear_offset + network_offset,
        validation: BlendValidation::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Validation and training rows where the label follows `x0` and, more weakly, a network logit
    /// that is partly noise: the blend must rank at least as well as either part.
    fn rows(n: usize, seed: u64) -> (Vec<[f32; 2]>, Vec<f64>, Vec<bool>) {
        let mut state = seed;
        let mut next = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 11) as f64) / ((1u64 << 53) as f64)
        };
        let mut xs = Vec::new();
        let mut net = Vec::new();
        let mut ys = Vec::new();
        for _ in 0..n {
            let x0 = next() * 2.0 - 1.0;
            let hidden = next() * 2.0 - 1.0;
            let y = next() < sigmoid(2.5 * x0 + 2.0 * hidden - 1.0);
            xs.push([x0 as f32, (next() - 0.5) as f32]);
            net.push(2.0 * hidden + 0.5 * (next() - 0.5));
            ys.push(y);
        }
        (xs, net, ys)
    }

    fn blend_rows<'a>(xs: &'a [[f32; 2]], net: &[f64], ys: &[bool]) -> BlendRows<'a> {
        BlendRows {
            network: net.to_vec(),
            numeric: xs.iter().map(|x| x.as_slice()).collect(),
            labels: ys.to_vec(),
        }
    }

    #[test]
    fn the_blend_ranks_better_than_either_part_when_each_knows_something() {
        let names = vec!["a".to_string(), "b".to_string()];
        let (tx, tn, ty) = rows(4_000, 1);
        let (vx, vn, vy) = rows(4_000, 2);
        let blend = PurchaseBlend::fit(
            &names,
            &blend_rows(&tx, &tn, &ty),
            &blend_rows(&vx, &vn, &vy),
        )
        .unwrap()
        .expect("both classes present");
        blend.check(2).unwrap();
        let v = &blend.validation;
        let (network, linear, both) = (
            v.network_auc.unwrap(),
            v.linear_auc.unwrap(),
            v.blend_auc.unwrap(),
        );
        assert!(
            both > network + 0.02 && both > linear + 0.02,
            "{network} {linear} {both}"
        );
        // The informative input and the network both get positive weight; the noise input little.
        assert!(
            blend.network > 0.5 && blend.linear * blend.numeric[0] > 1.0,
            "{blend:?}"
        );
        assert!(blend.numeric[1].abs() < 0.5 * blend.numeric[0], "{blend:?}");
    }

    #[test]
    fn the_folded_form_equals_the_stack_of_the_two_regressions() {
        use crate::logistic::LogisticParams;
        // The normaliser's order (b, a) differs from the regression's sorted order (a, b).
        let names = vec!["b".to_string(), "a".to_string()];
        let linear = LogisticModel::try_from(LogisticParams {
            feature_names: vec!["a".into(), "b".into()],
            means: vec![0.3, -1.2],
            stds: vec![2.0, 0.5],
            weights: vec![1.5, -0.7],
            bias: -0.4,
        })
        .unwrap();
        let stack = LogisticModel::try_from(LogisticParams {
            feature_names: vec![LINEAR_INPUT.into(), NETWORK_INPUT.into()],
            means: vec![-2.0, 0.8],
            stds: vec![1.3, 0.9],
            weights: vec![0.9, 0.6],
            bias: -1.1,
        })
        .unwrap();
        let blend = fold(&names, &linear, &stack).unwrap();
        // In range, and absurd values the regressions clip (and a NaN they read as the mean).
        for (b, a, n) in [
            (0.0, 0.0, 0.0),
            (1.0, -2.0, 3.0),
            (-0.5, 0.25, -1.5),
            (1e4, -3e3, 250.0),
            (f64::NAN, 7.0, -1e6),
        ] {
            let values = FeatureValues::from([("a".to_string(), a), ("b".to_string(), b)]);
            let stacked = FeatureValues::from([
                (LINEAR_INPUT.to_string(), linear.logit(&values)),
                (NETWORK_INPUT.to_string(), n),
            ]);
            let want = stack.logit(&stacked);
            let got = blend.logit(n, &[b as f32, a as f32]);
            assert!(
                (want - got).abs() < 1e-4,
                "({b}, {a}, {n}): {want} vs {got}"
            );
        }
    }

    #[test]
    fn a_single_class_gives_no_blend_and_a_bad_blend_is_refused() {
        let names = vec!["a".to_string(), "b".to_string()];
        let (tx, tn, ty) = rows(500, 5);
        let none = vec![false; ty.len()];
        let fitted = PurchaseBlend::fit(
            &names,
            &blend_rows(&tx, &tn, &ty),
            &blend_rows(&tx, &tn, &none),
        )
        .unwrap();
        assert!(fitted.is_none());
        let mut blend = PurchaseBlend::fit(
            &names,
            &blend_rows(&tx, &tn, &ty),
            &blend_rows(&tx, &tn, &ty),
        )
        .unwrap()
        .unwrap();
        assert!(blend.check(3).unwrap_err().contains("3 features"));
        blend.network = f64::NAN;
        assert!(blend.check(2).unwrap_err().contains("non-finite"));
    }
}
