//! When sessions start: a per-user Poisson process modulated by a diurnal curve.
//!
//! The rate at hour `h` (UTC) is `base * (1 + 0.6 cos(2 pi (h - 20) / 24))`: a peak at 20:00, a
//! trough at 08:00 of 0.4 times the base, mean over the day equal to the base. Arrivals are drawn
//! by thinning a homogeneous process at the peak rate, which is exact for this curve.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use std::f64::consts::PI;

const DAY_MS: f64 = 86_400_000.0;
const AMPLITUDE: f64 = 0.6;
const PEAK_HOUR: f64 = 20.0;

/// Relative session rate at event time `t_ms` (mean 1 over a day).
pub fn diurnal_multiplier(t_ms: i64) -> f64 {
    let hour = (t_ms as f64).rem_euclid(DAY_MS) / 3_600_000.0;
    1.0 + AMPLITUDE * (2.0 * PI * (hour - PEAK_HOUR) / 24.0).cos()
}

/// Draws session start times of one user.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Arrivals {
    /// Peak rate per ms.
    peak_rate: f64,
}

impl Arrivals {
    /// `per_day` is the mean number of sessions per user per day (positive, validated).
    pub fn new(per_day: f64) -> Self {
        Arrivals {
            peak_rate: per_day * (1.0 + AMPLITUDE) / DAY_MS,
        }
    }

    /// The first arrival strictly after `t`.
    pub fn next_after(&self, mut t: i64, rng: &mut ChaCha8Rng) -> i64 {
        loop {
            let u: f64 = rng.random();
            let step = (-(1.0 - u).ln() / self.peak_rate).ceil().max(1.0) as i64;
            t = t.saturating_add(step);
            if rng.random::<f64>() * (1.0 + AMPLITUDE) < diurnal_multiplier(t) {
                return t;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn evening_is_busier_than_morning_and_the_mean_rate_holds() {
        let arrivals = Arrivals::new(24.0);
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let mut t = 0;
        let mut by_hour = [0u32; 24];
        let days = 200;
        let mut n = 0;
        while t < days * 86_400_000 {
            t = arrivals.next_after(t, &mut rng);
            by_hour[((t / 3_600_000) % 24) as usize] += 1;
            n += 1;
        }
        let per_day = f64::from(n) / days as f64;
        assert!((per_day / 24.0 - 1.0).abs() < 0.05, "{per_day} per day");
        assert!(by_hour[20] > 2 * by_hour[8], "{by_hour:?}");
    }
}
