//! Streaming statistics for anomaly detection: robust running baselines and an online isolation
//! forest (Half-Space Trees).
//!
//! - [`RobustEwma`]: an exponentially weighted location and scale whose updates are winsorised,
//!   so one outlier cannot drag the baseline towards itself (a Huber-type M-estimator). Its
//!   [`RobustEwma::z`] is the robust z-score the detector's baselines and the price rule use.
//! - [`HalfSpaceTrees`]: Tan, Ting and Liu (2011), "Fast anomaly detection for streaming data",
//!   as implemented by River's `anomaly.HalfSpaceTrees`: random axis-aligned half-space trees
//!   over features scaled to `[0, 1]`, with mass profiles counted over tumbling windows.
//!
//! Both use fixed memory: a few floats, and `trees * (2^(height+1) - 1) * 2` counters.

use serde::{Deserialize, Serialize};

mod hst;

pub use hst::{HalfSpaceTrees, HstConfig, HstState};

/// Ratio of the standard deviation to the mean absolute deviation of a normal distribution
/// (`sqrt(pi / 2)`): turns the tracked mean absolute deviation into a sigma.
const MAD_TO_SIGMA: f64 = 1.253_314_137_315_500_3;

/// Winsorising bound of updates, in robust sigmas: a value further out moves the baseline only as
/// far as a value at this bound would.
const CLIP_SIGMAS: f64 = 3.0;

/// A robust exponentially weighted baseline (location and scale) of one numeric signal.
///
/// The first `1 / alpha` values are averaged with equal weights (so the start is not biased
/// towards the first value); after that each value has weight `alpha`. From `warmup` values on,
/// updates are clipped to `location +- 3 sigma`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RobustEwma {
    alpha: f64,
    warmup: u32,
    n: u32,
    mean: f64,
    /// Exponentially weighted mean absolute deviation from `mean`.
    mad: f64,
}

impl RobustEwma {
    /// A baseline with smoothing `alpha` (in `(0, 1]`, clamped) that clips updates after `warmup`
    /// values.
    pub fn new(alpha: f64, warmup: u32) -> Self {
        RobustEwma {
            alpha: if alpha.is_finite() {
                alpha.clamp(1e-6, 1.0)
            } else {
                1.0
            },
            warmup,
            n: 0,
            mean: 0.0,
            mad: 0.0,
        }
    }

    /// Number of values folded in (saturating).
    pub fn count(&self) -> u32 {
        self.n
    }

    /// The current location.
    pub fn mean(&self) -> f64 {
        self.mean
    }

    /// The current robust sigma (mean absolute deviation times `sqrt(pi / 2)`).
    pub fn sigma(&self) -> f64 {
        self.mad * MAD_TO_SIGMA
    }

    /// Robust z-score of `x` against the baseline before it is updated; `None` until `warmup`
    /// values were seen or while the scale is zero. `min_sigma` floors the scale, so a signal
    /// that has been constant so far does not turn every small change into an infinite score.
    pub fn z(&self, x: f64, min_sigma: f64) -> Option<f64> {
        if self.n < self.warmup.max(1) || !x.is_finite() {
            return None;
        }
        let sigma = self.sigma().max(min_sigma);
        (sigma > 0.0).then(|| (x - self.mean) / sigma)
    }

    /// Folds `x` in (non-finite values are ignored).
    pub fn update(&mut self, x: f64) {
        if !x.is_finite() {
            return;
        }
        let x = if self.n >= self.warmup.max(1) && self.mad > 0.0 {
            let bound = CLIP_SIGMAS * self.sigma();
            x.clamp(self.mean - bound, self.mean + bound)
        } else {
            x
        };
        self.n = self.n.saturating_add(1);
        let w = self.alpha.max(1.0 / f64::from(self.n));
        let dev = (x - self.mean).abs();
        if self.n == 1 {
            self.mean = x;
            self.mad = 0.0;
        } else {
            self.mean += w * (x - self.mean);
            self.mad += w * (dev - self.mad);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn robust_ewma_tracks_location_and_scale() {
        let mut b = RobustEwma::new(0.01, 20);
        // A deterministic +-1 alternation: mean 10, mean absolute deviation 1.
        for i in 0..2_000 {
            b.update(if i % 2 == 0 { 9.0 } else { 11.0 });
        }
        assert!((b.mean() - 10.0).abs() < 0.05, "mean {}", b.mean());
        assert!(
            (b.sigma() - MAD_TO_SIGMA).abs() < 0.05,
            "sigma {}",
            b.sigma()
        );
        let z = b.z(20.0, 0.0).expect("warm");
        assert!((z - 10.0 / MAD_TO_SIGMA).abs() < 0.5, "z {z}");
    }

    #[test]
    fn outliers_barely_move_a_warm_baseline() {
        let mut b = RobustEwma::new(0.05, 20);
        for i in 0..200 {
            b.update(if i % 2 == 0 { 9.0 } else { 11.0 });
        }
        let before = b.mean();
        for _ in 0..5 {
            b.update(1e9);
        }
        // Unclipped, five updates would move the mean by about 2.3e8; clipped, each moves it by
        // at most alpha * 3 sigma (sigma grows a little with each one).
        assert!(b.mean() - before < 1.5, "{}", b.mean());
        assert!(b.z(1e9, 0.0).is_some_and(|z| z > 1e6));
    }

    #[test]
    fn z_needs_warmup_and_a_scale() {
        let mut b = RobustEwma::new(0.1, 3);
        b.update(5.0);
        b.update(5.0);
        assert_eq!(b.z(6.0, 0.0), None);
        b.update(5.0);
        assert_eq!(b.z(6.0, 0.0), None, "zero scale and no floor");
        assert_eq!(b.z(6.0, 0.5), Some(2.0));
        b.update(f64::NAN);
        assert_eq!(b.count(), 3);
    }
}
