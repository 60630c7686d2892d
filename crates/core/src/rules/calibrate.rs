//! Online calibration of the statistical rules' thresholds to a target alert rate.
//!
//! A rule that compares a statistic (a price's robust z-score, a user's mean model surprise, a
//! user's mean Half-Space Trees score) with a fixed threshold alerts as often as the stream
//! happens to exceed it, which depends on the shop far more than on fraud. Each such rule here
//! keeps a decayed histogram of its statistic over every evaluation and asks for the value that
//! only a share `rate` of evaluations exceed, where `rate` turns the target of
//! `calibration_per_10k_users_hour` alerts per 10,000 active users per hour into a share of this
//! hour's evaluations. The rule's threshold is the larger of that value and its configured one:
//! calibration makes a rule quieter on a stream noisier than its defaults assumed, never louder.
//! Until the histogram has seen `1 / rate` evaluations (the tail is not measurable yet) the
//! configured threshold applies alone.

use serde::{Deserialize, Serialize};

/// Bins of each histogram (fixed memory: 8 bytes each).
const BINS: usize = 256;

/// Evaluations between two scans of the histogram for the same rate (a scan is 256 bins; the
/// detector asks for a threshold on nearly every event).
const RESCAN_EVERY: u64 = 256;

/// A decayed histogram of one statistic over `[lo, hi)` (values outside are clamped into the
/// end bins), with the evaluations of the current hour.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Calibrator {
    lo: f64,
    bin_width: f64,
    bins: Vec<f64>,
    total: f64,
    /// Weight of the next observation; grows so that older ones decay (rescaled when large).
    weight: f64,
    growth: f64,
    seen: u64,
    hour: i64,
    this_hour: u64,
    /// The last answer of `exceeded_by`: (rate, seen then, threshold).
    cached: Option<(f64, u64, Option<f64>)>,
}

impl Calibrator {
    /// A histogram of `[lo, hi)` whose observations lose half their weight every `half_life`
    /// observations.
    pub(super) fn new(lo: f64, hi: f64, half_life: f64) -> Self {
        let half_life = if half_life.is_finite() && half_life >= 1.0 {
            half_life
        } else {
            1.0
        };
        Calibrator {
            lo,
            bin_width: ((hi - lo) / BINS as f64).max(f64::MIN_POSITIVE),
            bins: vec![0.0; BINS],
            total: 0.0,
            weight: 1.0,
            growth: 2f64.powf(1.0 / half_life),
            seen: 0,
            hour: i64::MIN,
            this_hour: 0,
            cached: None,
        }
    }

    /// Folds in one evaluation of the statistic at event time `now`.
    pub(super) fn observe(&mut self, x: f64, now: i64) {
        if !x.is_finite() {
            return;
        }
        let hour = now.div_euclid(3_600_000);
        if hour > self.hour {
            self.hour = hour;
            self.this_hour = 0;
        }
        self.this_hour += 1;
        self.seen += 1;
        let i = (((x - self.lo) / self.bin_width).floor().max(0.0) as usize).min(BINS - 1);
        self.bins[i] += self.weight;
        self.total += self.weight;
        self.weight *= self.growth;
        if self.weight > 1e100 {
            let w = self.weight;
            for b in &mut self.bins {
                *b /= w;
            }
            self.total /= w;
            self.weight = 1.0;
        }
    }

    /// The smallest bin edge that at most a share `rate` of the (decayed) evaluations reach or
    /// exceed; `None` while fewer than `1 / rate` evaluations have been seen.
    pub(super) fn exceeded_by(&self, rate: f64) -> Option<f64> {
        if rate.is_nan()
            || rate <= 0.0
            || (self.seen as f64) < 1.0 / rate.min(1.0)
            || self.total <= 0.0
        {
            return None;
        }
        let allowed = rate * self.total;
        let mut tail = 0.0;
        for i in (0..BINS).rev() {
            if tail + self.bins[i] > allowed {
                return Some(self.lo + (i + 1) as f64 * self.bin_width);
            }
            tail += self.bins[i];
        }
        Some(self.lo)
    }

    /// Whether a decoded histogram has the shape this code indexes (a corrupt value could carry
    /// any number of bins, and `observe` would index past them).
    pub(super) fn is_well_formed(&self) -> bool {
        self.bins.len() == BINS
            && self.bin_width.is_finite()
            && self.bin_width > 0.0
            && self.lo.is_finite()
            && self.weight.is_finite()
            && self.growth.is_finite()
    }

    /// The same histogram with `n` bins: a corrupt value, for the tests of restoring one.
    #[cfg(test)]
    pub(super) fn with_bins(mut self, n: usize) -> Self {
        self.bins.resize(n, 0.0);
        self
    }

    /// Evaluations folded in so far (decay aside).
    pub(super) fn seen(&self) -> u64 {
        self.seen
    }

    /// The threshold to apply now: the configured `floor`, raised to what only the target share
    /// of evaluations exceed. `target_per_10k` alerts per 10,000 of the hour's `active_users`, over
    /// this hour's evaluations so far; 0 (or no users yet) leaves the floor.
    pub(super) fn threshold(&mut self, floor: f64, target_per_10k: f64, active_users: u64) -> f64 {
        self.calibrated(floor, target_per_10k, active_users)
            .unwrap_or(floor)
    }

    /// [`Calibrator::threshold`] once the tail is measurable; `None` before (or when calibration
    /// is off), for a rule that should stay silent until it knows the stream.
    pub(super) fn calibrated(
        &mut self,
        floor: f64,
        target_per_10k: f64,
        active_users: u64,
    ) -> Option<f64> {
        if target_per_10k.is_nan()
            || target_per_10k <= 0.0
            || active_users == 0
            || self.this_hour == 0
        {
            return None;
        }
        let rate = target_per_10k / 10_000.0 * active_users as f64 / self.this_hour as f64;
        // The histogram moves little between nearby evaluations: reuse the last scan while the
        // rate is within 10 % of it and fewer than RESCAN_EVERY evaluations were added.
        let threshold = match self.cached {
            Some((r, at, t)) if self.seen - at < RESCAN_EVERY && (rate / r - 1.0).abs() < 0.1 => t,
            _ => {
                let t = self.exceeded_by(rate);
                self.cached = Some((rate, self.seen, t));
                t
            }
        };
        threshold.map(|t| t.max(floor))
    }
}

/// The calibrated statistics of the detector.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Calibration {
    /// Absolute robust z-scores of new item prices in their category.
    pub price: Calibrator,
    /// Users' mean model surprise (nats) over full windows.
    pub surprise: Calibrator,
    /// Users' mean Half-Space Trees score over full windows.
    pub anomaly: Calibrator,
}

impl Calibration {
    /// Whether every histogram is well formed ([`Calibrator::is_well_formed`]).
    pub(super) fn is_well_formed(&self) -> bool {
        [&self.price, &self.surprise, &self.anomaly]
            .iter()
            .all(|c| c.is_well_formed())
    }

    /// Histograms decaying with a half-life of `half_life` evaluations.
    pub(super) fn new(half_life: f64) -> Self {
        Calibration {
            price: Calibrator::new(0.0, 32.0, half_life),
            surprise: Calibrator::new(0.0, 16.0, half_life),
            anomaly: Calibrator::new(0.0, 1.0, half_life),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_threshold_is_the_upper_quantile_once_the_tail_is_measurable() {
        let mut c = Calibrator::new(0.0, 1.0, 1e9);
        // 10,000 evaluations spread evenly over [0, 1).
        for i in 0..10_000 {
            c.observe(i as f64 / 10_000.0, 0);
        }
        // 1 % exceed about 0.99 (to the bin width of 1/256).
        let t = c.exceeded_by(0.01).unwrap();
        assert!((t - 0.99).abs() <= 1.0 / 256.0 + 1e-9, "{t}");
        // Not measurable: 1 in 100,000 needs 100,000 evaluations.
        assert_eq!(c.exceeded_by(1e-5), None);
        assert_eq!(c.exceeded_by(0.0), None);
    }

    #[test]
    fn calibration_only_raises_the_configured_floor() {
        let mut c = Calibrator::new(0.0, 1.0, 1e9);
        for i in 0..10_000 {
            c.observe(0.5 + (i % 100) as f64 / 400.0, 0);
        }
        // 10,000 evaluations by 1,000 users this hour, 10 alerts per 10k users: a share of 1e-4
        // of evaluations may alert; the stream reaches 0.75, so a floor of 0.6 rises to about it.
        let t = c.threshold(0.6, 10.0, 1_000);
        assert!((0.74..=0.76).contains(&t), "{t}");
        // A floor above the stream's values stays.
        assert_eq!(c.threshold(0.9, 10.0, 1_000), 0.9);
        // Calibration off, or no users: the floor, and nothing calibrated.
        assert_eq!(c.threshold(0.6, 0.0, 1_000), 0.6);
        assert_eq!(c.threshold(0.6, 10.0, 0), 0.6);
        assert_eq!(c.calibrated(0.6, 0.0, 1_000), None);
        // A share of 1e-5 is not measurable from 10,000 evaluations yet.
        assert_eq!(c.calibrated(0.6, 1.0, 1_000), None);
        assert_eq!(c.threshold(0.6, 1.0, 1_000), 0.6);
    }

    #[test]
    fn old_values_decay_and_the_hour_count_resets() {
        let mut c = Calibrator::new(0.0, 1.0, 100.0);
        for _ in 0..10_000 {
            c.observe(0.9, 0);
        }
        for _ in 0..2_000 {
            c.observe(0.1, 3_600_000);
        }
        // Twenty half-lives later the old 0.9s weigh nothing: the 1 % quantile is the new level.
        let t = c.exceeded_by(0.01).unwrap();
        assert!(t < 0.2, "{t}");
        assert_eq!(c.this_hour, 2_000);
        // Non-finite values are ignored.
        c.observe(f64::NAN, 3_600_000);
        assert_eq!(c.seen, 12_000);
    }
}
