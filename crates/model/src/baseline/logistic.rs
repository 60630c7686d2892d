//! Logistic regression for "this session ends with a purchase", on named feature values.
//!
//! Feature names are fixed at fit time and kept sorted, so scoring a `BTreeMap` (also sorted) is
//! one merge pass with no allocation. Values are standardised with the training mean and standard
//! deviation; a missing or non-finite value becomes the mean (z = 0), and z-scores are clipped to
//! `±Z_CLIP` both in training and scoring so one absurd value cannot saturate a prediction.

use clickpath_schema::{Factor, FeatureValues};
use serde::{Deserialize, Serialize};

use crate::error::ModelError;

/// Bound on standardised values (in training and scoring alike).
pub const Z_CLIP: f64 = 10.0;

/// Hyper-parameters of [`LogisticModel::fit`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogisticConfig {
    /// Adam step size. Default 0.05.
    pub learning_rate: f64,
    /// L2 penalty `l2 / 2 * |w|^2` on the weights (not the bias), added to the mean log loss.
    /// Default 1e-4.
    pub l2: f64,
    /// Most passes over the training data. Default 100.
    pub epochs: usize,
    /// Mini-batch size. Default 512.
    pub batch_size: usize,
    /// Stop after this many epochs without a better validation loss and keep the best weights;
    /// 0 never stops early. Ignored without validation data. Default 8.
    pub patience: usize,
    /// Seed of the per-epoch shuffle (training is deterministic for a given seed). Default 42.
    pub seed: u64,
}

impl Default for LogisticConfig {
    fn default() -> Self {
        LogisticConfig {
            learning_rate: 0.05,
            l2: 1e-4,
            epochs: 100,
            batch_size: 512,
            patience: 8,
            seed: 42,
        }
    }
}

impl LogisticConfig {
    fn validate(&self) -> Result<(), ModelError> {
        let bad = |msg: String| Err(ModelError::InvalidConfig(msg));
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return bad(format!(
                "logistic.learning_rate must be > 0, got {}",
                self.learning_rate
            ));
        }
        if !(self.l2.is_finite() && self.l2 >= 0.0) {
            return bad(format!("logistic.l2 must be >= 0, got {}", self.l2));
        }
        if self.epochs == 0 {
            return bad("logistic.epochs must be > 0".into());
        }
        if self.batch_size == 0 {
            return bad("logistic.batch_size must be > 0".into());
        }
        Ok(())
    }
}

/// How a fit went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FitHistory {
    /// Epochs actually run (fewer than configured when stopped early).
    pub epochs_run: usize,
    /// Epoch (1-based) whose weights were kept.
    pub best_epoch: usize,
    /// Mean training loss (log loss + L2 term) of the kept weights.
    pub train_loss: f64,
    /// Validation log loss of the kept weights, when there was validation data.
    pub validation_loss: Option<f64>,
}

/// One labelled example for [`LogisticModel::fit`]: feature values and whether it is positive.
pub type LabeledValues<'a> = (&'a FeatureValues, bool);

/// Serialised parameters of a [`LogisticModel`] (parallel arrays, one entry per feature).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogisticParams {
    /// Feature names, strictly ascending.
    pub feature_names: Vec<String>,
    /// Training mean of each feature.
    pub means: Vec<f64>,
    /// Training standard deviation of each feature (> 0; 1 for a constant feature).
    pub stds: Vec<f64>,
    /// Weight of each standardised feature.
    pub weights: Vec<f64>,
    /// Intercept.
    pub bias: f64,
}

impl LogisticParams {
    /// Checks the invariants scoring relies on; the error names the first problem.
    pub fn validate(&self) -> Result<(), String> {
        let n = self.feature_names.len();
        for (what, len) in [
            ("means", self.means.len()),
            ("stds", self.stds.len()),
            ("weights", self.weights.len()),
        ] {
            if len != n {
                return Err(format!(
                    "{what} has {len} entries but there are {n} features"
                ));
            }
        }
        if let Some(w) = self.feature_names.windows(2).find(|w| w[0] >= w[1]) {
            return Err(format!(
                "feature names must be sorted and unique ({:?} then {:?})",
                w[0], w[1]
            ));
        }
        for (what, values) in [
            ("means", &self.means),
            ("stds", &self.stds),
            ("weights", &self.weights),
        ] {
            if let Some(i) = values.iter().position(|v| !v.is_finite()) {
                return Err(format!(
                    "{what} of feature {:?} is not finite",
                    self.feature_names[i]
                ));
            }
        }
        if let Some(i) = self.stds.iter().position(|&s| s <= 0.0) {
            return Err(format!(
                "stds of feature {:?} must be > 0",
                self.feature_names[i]
            ));
        }
        if !self.bias.is_finite() {
            return Err("bias is not finite".into());
        }
        Ok(())
    }
}

/// A fitted logistic regression over standardised, named features.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "LogisticParams", into = "LogisticParams")]
pub struct LogisticModel {
    params: LogisticParams,
    /// `1 / std`, so scoring multiplies instead of divides.
    inv_stds: Vec<f64>,
}

impl TryFrom<LogisticParams> for LogisticModel {
    type Error = String;

    fn try_from(params: LogisticParams) -> Result<Self, String> {
        params.validate()?;
        let inv_stds = params.stds.iter().map(|s| 1.0 / s).collect();
        Ok(LogisticModel { params, inv_stds })
    }
}

impl From<LogisticModel> for LogisticParams {
    fn from(model: LogisticModel) -> Self {
        model.params
    }
}

/// Numerically stable logistic function.
pub fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// Log loss of one example from its logit, stable for large |logit|.
fn loss_from_logit(logit: f64, label: bool) -> f64 {
    let softplus = logit.max(0.0) + (-logit.abs()).exp().ln_1p();
    if label { softplus - logit } else { softplus }
}

fn standardise(x: f64, mean: f64, inv_std: f64) -> f64 {
    if x.is_finite() {
        ((x - mean) * inv_std).clamp(-Z_CLIP, Z_CLIP)
    } else {
        0.0
    }
}

/// Deterministic SplitMix64: enough randomness for shuffling mini-batches without a dependency.
/// A small deterministic random stream (SplitMix64), for shuffles and seeding.
pub(crate) struct SplitMix64(pub(crate) u64);

impl SplitMix64 {
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub(crate) fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = (self.next_u64() % (i as u64 + 1)) as usize;
            items.swap(i, j);
        }
    }
}

/// Standardised design matrix, row-major.
struct Design {
    rows: Vec<f64>,
    labels: Vec<bool>,
    width: usize,
}

impl Design {
    fn new(examples: &[LabeledValues<'_>], model: &LogisticModel) -> Self {
        let width = model.params.feature_names.len();
        let mut rows = Vec::with_capacity(examples.len() * width);
        for (values, _) in examples {
            model.for_each_z(values, |_, z| rows.push(z));
        }
        Design {
            rows,
            labels: examples.iter().map(|(_, y)| *y).collect(),
            width,
        }
    }

    fn row(&self, i: usize) -> &[f64] {
        &self.rows[i * self.width..(i + 1) * self.width]
    }

    fn logit(&self, i: usize, weights: &[f64], bias: f64) -> f64 {
        bias + self
            .row(i)
            .iter()
            .zip(weights)
            .map(|(z, w)| z * w)
            .sum::<f64>()
    }

    fn mean_log_loss(&self, weights: &[f64], bias: f64) -> f64 {
        let n = self.labels.len();
        (0..n)
            .map(|i| loss_from_logit(self.logit(i, weights, bias), self.labels[i]))
            .sum::<f64>()
            / n as f64
    }
}

/// Adam optimiser state for the weights followed by the bias.
struct Adam {
    m: Vec<f64>,
    v: Vec<f64>,
    t: i32,
}

impl Adam {
    const BETA1: f64 = 0.9;
    const BETA2: f64 = 0.999;
    const EPS: f64 = 1e-8;

    fn step(&mut self, params: &mut [f64], grads: &[f64], learning_rate: f64) {
        self.t += 1;
        let c1 = 1.0 - Self::BETA1.powi(self.t);
        let c2 = 1.0 - Self::BETA2.powi(self.t);
        for (((p, g), m), v) in params
            .iter_mut()
            .zip(grads)
            .zip(&mut self.m)
            .zip(&mut self.v)
        {
            *m = Self::BETA1 * *m + (1.0 - Self::BETA1) * g;
            *v = Self::BETA2 * *v + (1.0 - Self::BETA2) * g * g;
            *p -= learning_rate * (*m / c1) / ((*v / c2).sqrt() + Self::EPS);
        }
    }
}

/// Mean and population standard deviation of the finite values of each feature.
fn feature_moments(names: &[String], examples: &[LabeledValues<'_>]) -> (Vec<f64>, Vec<f64>) {
    let n = names.len();
    let (mut count, mut sum, mut sum_sq) = (vec![0usize; n], vec![0.0; n], vec![0.0; n]);
    for (values, _) in examples {
        for (i, name) in names.iter().enumerate() {
            if let Some(&x) = values.get(name).filter(|x| x.is_finite()) {
                count[i] += 1;
                sum[i] += x;
            }
        }
    }
    let means: Vec<f64> = (0..n)
        .map(|i| {
            if count[i] > 0 {
                sum[i] / count[i] as f64
            } else {
                0.0
            }
        })
        .collect();
    // Second pass for the variance: numerically safer than E[x^2] - E[x]^2.
    for (values, _) in examples {
        for (i, name) in names.iter().enumerate() {
            if let Some(&x) = values.get(name).filter(|x| x.is_finite()) {
                sum_sq[i] += (x - means[i]).powi(2);
            }
        }
    }
    let stds = (0..n)
        .map(|i| {
            let std = if count[i] > 0 {
                (sum_sq[i] / count[i] as f64).sqrt()
            } else {
                0.0
            };
            // A constant (or absent) feature carries no information: std 1 keeps z = 0 finite.
            if std.is_finite() && std > 1e-12 {
                std
            } else {
                1.0
            }
        })
        .collect();
    (means, stds)
}

impl LogisticModel {
    /// Fits on `train`, using `validation` (may be empty) for early stopping.
    ///
    /// `feature_names` fixes the model's inputs (sorted and de-duplicated here); keys of the
    /// examples that are not among them are ignored. Fails on an empty training set, a training
    /// set with a single class, or an invalid configuration.
    pub fn fit(
        feature_names: &[String],
        train: &[LabeledValues<'_>],
        validation: &[LabeledValues<'_>],
        cfg: &LogisticConfig,
    ) -> Result<(Self, FitHistory), ModelError> {
        cfg.validate()?;
        if train.is_empty() {
            return Err(ModelError::InsufficientData(
                "the training split has no examples".into(),
            ));
        }
        let positives = train.iter().filter(|(_, y)| *y).count();
        if positives == 0 || positives == train.len() {
            return Err(ModelError::InsufficientData(format!(
                "the training split has {positives} positive of {} examples; both classes are needed",
                train.len()
            )));
        }
        let mut names = feature_names.to_vec();
        names.sort();
        names.dedup();
        let (means, stds) = feature_moments(&names, train);
        let width = names.len();
        // Start at the base rate so early epochs learn features rather than the intercept.
        let base_rate = positives as f64 / train.len() as f64;
        let mut model = LogisticModel::try_from(LogisticParams {
            feature_names: names,
            means,
            stds,
            weights: vec![0.0; width],
            bias: (base_rate / (1.0 - base_rate)).ln(),
        })
        .map_err(ModelError::InvalidConfig)?;

        let train_design = Design::new(train, &model);
        let validation_design = Design::new(validation, &model);
        let has_validation = !validation.is_empty();

        // Parameters: weights then bias, so one Adam covers both.
        let mut params: Vec<f64> = model.params.weights.clone();
        params.push(model.params.bias);
        let mut grads = vec![0.0; width + 1];
        let mut adam = Adam {
            m: vec![0.0; width + 1],
            v: vec![0.0; width + 1],
            t: 0,
        };
        let mut rng = SplitMix64(cfg.seed);
        let mut order: Vec<usize> = (0..train.len()).collect();
        let mut best = (f64::INFINITY, params.clone(), 0usize);
        let mut since_best = 0;
        let mut epochs_run = 0;

        for epoch in 1..=cfg.epochs {
            epochs_run = epoch;
            rng.shuffle(&mut order);
            for batch in order.chunks(cfg.batch_size) {
                grads.iter_mut().for_each(|g| *g = 0.0);
                let (weights, bias) = params.split_at(width);
                for &i in batch {
                    let err = sigmoid(train_design.logit(i, weights, bias[0]))
                        - f64::from(u8::from(train_design.labels[i]));
                    for (g, z) in grads.iter_mut().zip(train_design.row(i)) {
                        *g += err * z;
                    }
                    grads[width] += err;
                }
                let scale = 1.0 / batch.len() as f64;
                for (g, w) in grads.iter_mut().zip(weights) {
                    *g = *g * scale + cfg.l2 * w;
                }
                grads[width] *= scale;
                adam.step(&mut params, &grads, cfg.learning_rate);
            }
            if has_validation {
                let (weights, bias) = params.split_at(width);
                let loss = validation_design.mean_log_loss(weights, bias[0]);
                if loss < best.0 - 1e-12 {
                    best = (loss, params.clone(), epoch);
                    since_best = 0;
                } else {
                    since_best += 1;
                    if cfg.patience > 0 && since_best >= cfg.patience {
                        break;
                    }
                }
            }
        }
        let (validation_loss, kept, best_epoch) = if has_validation {
            (Some(best.0), best.1, best.2)
        } else {
            (None, params, epochs_run)
        };
        let (weights, bias) = kept.split_at(width);
        if weights.iter().chain(bias).any(|v| !v.is_finite()) {
            return Err(ModelError::InvalidConfig(
                "training diverged (non-finite weights); lower logistic.learning_rate".into(),
            ));
        }
        let l2_term = 0.5 * cfg.l2 * weights.iter().map(|w| w * w).sum::<f64>();
        let history = FitHistory {
            epochs_run,
            best_epoch,
            train_loss: train_design.mean_log_loss(weights, bias[0]) + l2_term,
            validation_loss,
        };
        model.params.weights = weights.to_vec();
        model.params.bias = bias[0];
        Ok((model, history))
    }

    /// Calls `f(index, z)` for every model feature in order, with its standardised value from
    /// `values` (0 when missing or non-finite). One merge pass over two sorted sequences.
    fn for_each_z(&self, values: &FeatureValues, mut f: impl FnMut(usize, f64)) {
        let mut entries = values.iter().peekable();
        for (i, name) in self.params.feature_names.iter().enumerate() {
            let mut x = f64::NAN;
            while let Some((key, value)) = entries.peek() {
                match (*key).cmp(name.as_str()) {
                    std::cmp::Ordering::Less => {
                        entries.next();
                    }
                    std::cmp::Ordering::Equal => {
                        x = **value;
                        entries.next();
                        break;
                    }
                    std::cmp::Ordering::Greater => break,
                }
            }
            f(i, standardise(x, self.params.means[i], self.inv_stds[i]));
        }
    }

    /// Purchase log-odds for `values`.
    pub fn logit(&self, values: &FeatureValues) -> f64 {
        let mut logit = self.params.bias;
        self.for_each_z(values, |i, z| logit += self.params.weights[i] * z);
        logit
    }

    /// Purchase probability for `values`; always finite and in `[0, 1]`.
    pub fn predict(&self, values: &FeatureValues) -> f64 {
        sigmoid(self.logit(values))
    }

    /// The `k` features whose signed contributions `w_i * z_i` to the log-odds are largest in
    /// magnitude, largest first (ties by name). Features at their mean contribute 0 and are left
    /// out, so fewer than `k` may come back.
    pub fn explain(&self, values: &FeatureValues, k: usize) -> Vec<Factor> {
        // Insertion into a k-sized buffer: k is small and this avoids sorting every feature.
        let mut top: Vec<(usize, f64)> = Vec::with_capacity(k + 1);
        if k > 0 {
            self.for_each_z(values, |i, z| {
                let c = self.params.weights[i] * z;
                if c == 0.0 {
                    return;
                }
                let pos = top
                    .iter()
                    .position(|&(_, t)| c.abs() > t.abs())
                    .unwrap_or(top.len());
                if pos < k {
                    top.insert(pos, (i, c));
                    top.truncate(k);
                }
            });
        }
        top.into_iter()
            .map(|(i, contribution)| Factor {
                name: self.params.feature_names[i].clone(),
                contribution,
            })
            .collect()
    }

    /// The features the model reads, sorted.
    pub fn feature_names(&self) -> &[String] {
        &self.params.feature_names
    }

    /// The fitted parameters.
    pub fn params(&self) -> &LogisticParams {
        &self.params
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn values(pairs: &[(&str, f64)]) -> FeatureValues {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    /// Label = x > 0.5 with some noise-free overlap-free separation; `noise` is an unrelated feature.
    fn separable(n: usize) -> Vec<(FeatureValues, bool)> {
        (0..n)
            .map(|i| {
                let x = (i as f64 * 0.618_033_988_7).fract();
                let noise = (i as f64 * 0.414_213_562_4).fract();
                (values(&[("x", x), ("noise", noise)]), x > 0.5)
            })
            .collect()
    }

    fn as_refs(data: &[(FeatureValues, bool)]) -> Vec<LabeledValues<'_>> {
        data.iter().map(|(v, y)| (v, *y)).collect()
    }

    #[test]
    fn learns_a_separating_feature() {
        let data = separable(400);
        let (train, valid) = data.split_at(300);
        let cfg = LogisticConfig {
            epochs: 60,
            batch_size: 64,
            ..LogisticConfig::default()
        };
        let (model, history) = LogisticModel::fit(
            &names(&["x", "noise"]),
            &as_refs(train),
            &as_refs(valid),
            &cfg,
        )
        .unwrap();
        assert_eq!(model.feature_names(), names(&["noise", "x"]).as_slice());
        assert!(model.predict(&values(&[("x", 0.95)])) > 0.9);
        assert!(model.predict(&values(&[("x", 0.05)])) < 0.1);
        let w = &model.params().weights;
        assert!(w[1] > 3.0 * w[0].abs(), "weights {w:?}");
        assert!(history.validation_loss.unwrap() < 0.3, "{history:?}");
        assert!(history.best_epoch <= history.epochs_run);

        let factors = model.explain(&values(&[("x", 0.95), ("noise", 0.5)]), 1);
        assert_eq!(factors.len(), 1);
        assert_eq!(factors[0].name, "x");
        assert!(factors[0].contribution > 0.0);
    }

    #[test]
    fn missing_and_non_finite_values_read_as_the_mean() {
        let data = separable(200);
        let (model, _) = LogisticModel::fit(
            &names(&["x", "noise"]),
            &as_refs(&data),
            &[],
            &LogisticConfig {
                epochs: 5,
                ..LogisticConfig::default()
            },
        )
        .unwrap();
        let at_mean = sigmoid(model.params().bias);
        let p_missing = model.predict(&FeatureValues::default());
        let p_nan = model.predict(&values(&[("x", f64::NAN), ("noise", f64::INFINITY)]));
        assert_eq!(p_missing, at_mean);
        assert_eq!(p_nan, at_mean);
        assert!(model.explain(&FeatureValues::default(), 3).is_empty());
        // Extra keys before, between and after the model's features are ignored.
        let v = values(&[
            ("a", 1.0),
            ("noise", 0.3),
            ("p", 7.0),
            ("x", 0.7),
            ("zz", 1.0),
        ]);
        let w = values(&[("noise", 0.3), ("x", 0.7)]);
        assert_eq!(model.predict(&v), model.predict(&w));
    }

    #[test]
    fn rejects_degenerate_training_data_and_config() {
        let data: Vec<_> = separable(20).into_iter().map(|(v, _)| (v, true)).collect();
        let err = LogisticModel::fit(&names(&["x"]), &as_refs(&data), &[], &Default::default());
        assert!(matches!(err, Err(ModelError::InsufficientData(_))));
        let err = LogisticModel::fit(&names(&["x"]), &[], &[], &Default::default());
        assert!(matches!(err, Err(ModelError::InsufficientData(_))));
        let cfg = LogisticConfig {
            learning_rate: -1.0,
            ..Default::default()
        };
        let data = separable(20);
        let err = LogisticModel::fit(&names(&["x"]), &as_refs(&data), &[], &cfg);
        assert!(matches!(err, Err(ModelError::InvalidConfig(_))));
    }

    #[test]
    fn params_validation_names_the_problem() {
        let good = LogisticParams {
            feature_names: names(&["a", "b"]),
            means: vec![0.0, 1.0],
            stds: vec![1.0, 2.0],
            weights: vec![0.5, -0.5],
            bias: 0.1,
        };
        assert!(LogisticModel::try_from(good.clone()).is_ok());
        let mut bad = good.clone();
        bad.weights[1] = f64::NAN;
        assert!(LogisticModel::try_from(bad).unwrap_err().contains("\"b\""));
        let mut bad = good.clone();
        bad.feature_names.reverse();
        assert!(LogisticModel::try_from(bad).unwrap_err().contains("sorted"));
        let mut bad = good;
        bad.stds.pop();
        assert!(LogisticModel::try_from(bad).unwrap_err().contains("stds"));
    }

    proptest! {
        #[test]
        fn predict_is_a_probability_and_explain_sums_to_the_logit(
            x in proptest::num::f64::ANY,
            noise in -1e6f64..1e6,
        ) {
            let model = LogisticModel::try_from(LogisticParams {
                feature_names: names(&["noise", "x"]),
                means: vec![0.5, 0.5],
                stds: vec![0.3, 0.3],
                weights: vec![0.2, 4.0],
                bias: -1.0,
            }).unwrap();
            let v = values(&[("x", x), ("noise", noise)]);
            let p = model.predict(&v);
            prop_assert!((0.0..=1.0).contains(&p));
            let explained: f64 = model.explain(&v, 2).iter().map(|f| f.contribution).sum();
            prop_assert!((model.params().bias + explained - model.logit(&v)).abs() < 1e-9);
        }
    }
}
