//! Half-Space Trees: an online isolation forest with constant memory (Tan, Ting and Liu, 2011;
//! River's `anomaly.HalfSpaceTrees`).
//!
//! Each tree is a complete binary tree of height `height` over features in `[0, 1]`. Node `i`
//! splits on a random feature at the middle of that feature's current work range; the root's
//! work ranges are randomly shifted and doubled, so the trees differ. Every node counts how many
//! points of the *latest* window passed through it (`l_mass`); when a window of `window` points
//! is complete, the latest counts become the *reference* counts (`r_mass`) and restart at zero.
//! A point's score sums `r_mass * 2^depth` along its path, stopping at the first node with less
//! than `size_limit * window` reference points; dense regions give large sums. [`HalfSpaceTrees::score`]
//! reports `1 - sum / max_sum`, so 1 is the most anomalous, and 0 until one window is complete.

use serde::{Deserialize, Serialize};

/// Settings of [`HalfSpaceTrees`].
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct HstConfig {
    /// Number of trees. Default 10 (River's default).
    pub trees: usize,
    /// Height of each tree (levels below the root). Default 8; clamped to 1..=16.
    pub height: u32,
    /// Points per mass window. Default 250 (River's default).
    pub window: u32,
    /// Fraction of the window a node needs to be descended into when scoring. Default 0.1.
    pub size_limit: f64,
    /// Seed of the random splits. Default 42.
    pub seed: u64,
}

impl Default for HstConfig {
    fn default() -> Self {
        HstConfig {
            trees: 10,
            height: 8,
            window: 250,
            size_limit: 0.1,
            seed: 42,
        }
    }
}

/// One tree: split feature and value per internal node, masses per node (heap layout: the
/// children of node `i` are `2i + 1` and `2i + 2`).
#[derive(Debug, Clone)]
struct Tree {
    feature: Vec<u16>,
    split: Vec<f64>,
    l_mass: Vec<u32>,
    r_mass: Vec<u32>,
}

/// An online Half-Space Trees anomaly scorer over `dims` features in `[0, 1]` (values outside
/// are clamped; non-finite values count as 0).
#[derive(Debug, Clone)]
pub struct HalfSpaceTrees {
    dims: usize,
    height: u32,
    window: u32,
    size_limit: u32,
    seen_in_window: u32,
    windows_done: u64,
    trees: Vec<Tree>,
    max_sum: f64,
}

/// splitmix64: a tiny deterministic generator, enough for random split placement.
fn next_u64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn next_f64(state: &mut u64) -> f64 {
    (next_u64(state) >> 11) as f64 / (1u64 << 53) as f64
}

impl HalfSpaceTrees {
    /// A forest over `dims` features (at least 1).
    pub fn new(dims: usize, cfg: &HstConfig) -> Self {
        let dims = dims.max(1);
        let height = cfg.height.clamp(1, 16);
        let nodes = (1usize << (height + 1)) - 1;
        let internal = (1usize << height) - 1;
        let mut rng = cfg.seed ^ 0x5851_F42D_4C95_7F2D;
        let trees = (0..cfg.trees.max(1))
            .map(|_| {
                // River: each dimension's work range is [s - r, s + r] with s uniform in [0, 1]
                // and r = 2 max(s, 1 - s), so it always covers [0, 1].
                let mut lo = Vec::with_capacity(dims);
                let mut hi = Vec::with_capacity(dims);
                for _ in 0..dims {
                    let s = next_f64(&mut rng);
                    let r = 2.0 * s.max(1.0 - s);
                    lo.push(s - r);
                    hi.push(s + r);
                }
                let mut feature = vec![0u16; internal];
                let mut split = vec![0.0; internal];
                // Ranges per node, built top-down.
                let mut ranges: Vec<(Vec<f64>, Vec<f64>)> = Vec::with_capacity(internal);
                ranges.push((lo, hi));
                for i in 0..internal {
                    let (lo, hi) = ranges[i].clone();
                    let q = (next_u64(&mut rng) % dims as u64) as usize;
                    let mid = (lo[q] + hi[q]) / 2.0;
                    feature[i] = q as u16;
                    split[i] = mid;
                    let (mut left_hi, mut right_lo) = (hi.clone(), lo.clone());
                    left_hi[q] = mid;
                    right_lo[q] = mid;
                    // Children of i are 2i+1 and 2i+2; ranges is filled in index order.
                    if 2 * i + 1 < internal {
                        ranges.push((lo, left_hi));
                        ranges.push((right_lo, hi));
                    }
                }
                Tree {
                    feature,
                    split,
                    l_mass: vec![0; nodes],
                    r_mass: vec![0; nodes],
                }
            })
            .collect::<Vec<_>>();
        let window = cfg.window.max(1);
        let size_limit = (cfg.size_limit.clamp(0.0, 1.0) * f64::from(window)) as u32;
        let max_sum = trees.len() as f64 * f64::from(window) * ((1u64 << (height + 1)) - 1) as f64;
        HalfSpaceTrees {
            dims,
            height,
            window,
            size_limit,
            seen_in_window: 0,
            windows_done: 0,
            trees,
            max_sum,
        }
    }

    /// Number of features expected.
    pub fn dims(&self) -> usize {
        self.dims
    }

    /// Whether one window is complete (before that, [`Self::score`] is 0).
    pub fn is_warm(&self) -> bool {
        self.windows_done > 0
    }

    fn feature(x: &[f64], q: usize) -> f64 {
        x.get(q)
            .copied()
            .filter(|v| v.is_finite())
            .unwrap_or(0.0)
            .clamp(0.0, 1.0)
    }

    /// Anomaly score of `x` in `[0, 1]` (1 = most anomalous) against the reference window.
    pub fn score(&self, x: &[f64]) -> f64 {
        if !self.is_warm() {
            return 0.0;
        }
        let internal = self.trees.first().map_or(0, |t| t.split.len());
        let mut sum = 0.0;
        for tree in &self.trees {
            let mut node = 0usize;
            let mut depth = 0u32;
            loop {
                let mass = tree.r_mass[node];
                sum += f64::from(mass) * f64::from(1u32 << depth);
                // As in River: a sparse node still counts, but the walk stops there.
                if mass < self.size_limit || node >= internal {
                    break;
                }
                let q = usize::from(tree.feature[node]);
                node = if Self::feature(x, q) < tree.split[node] {
                    2 * node + 1
                } else {
                    2 * node + 2
                };
                depth += 1;
            }
        }
        (1.0 - sum / self.max_sum).clamp(0.0, 1.0)
    }

    /// [`Self::score`] then [`Self::learn`] in one walk down each tree (half the memory
    /// traffic of the two calls; same result).
    pub fn score_and_learn(&mut self, x: &[f64]) -> f64 {
        let warm = self.is_warm();
        let limit = self.size_limit;
        let mut sum = 0.0;
        for tree in &mut self.trees {
            let internal = tree.split.len();
            let mut node = 0usize;
            let mut depth = 0u32;
            let mut scoring = warm;
            loop {
                if scoring {
                    let mass = tree.r_mass[node];
                    sum += f64::from(mass) * f64::from(1u32 << depth);
                    scoring = mass >= limit;
                }
                tree.l_mass[node] = tree.l_mass[node].saturating_add(1);
                if node >= internal {
                    break;
                }
                let q = usize::from(tree.feature[node]);
                node = if Self::feature(x, q) < tree.split[node] {
                    2 * node + 1
                } else {
                    2 * node + 2
                };
                depth += 1;
            }
        }
        self.end_point();
        if warm {
            (1.0 - sum / self.max_sum).clamp(0.0, 1.0)
        } else {
            0.0
        }
    }

    /// Counts one learned point; rotates the windows every `window` points.
    fn end_point(&mut self) {
        self.seen_in_window += 1;
        if self.seen_in_window >= self.window {
            for tree in &mut self.trees {
                std::mem::swap(&mut tree.r_mass, &mut tree.l_mass);
                tree.l_mass.iter_mut().for_each(|m| *m = 0);
            }
            self.seen_in_window = 0;
            self.windows_done += 1;
        }
    }

    /// Folds `x` into the latest window; rotates the windows every `window` points.
    pub fn learn(&mut self, x: &[f64]) {
        for tree in &mut self.trees {
            let internal = tree.split.len();
            let mut node = 0usize;
            loop {
                tree.l_mass[node] = tree.l_mass[node].saturating_add(1);
                if node >= internal {
                    break;
                }
                let q = usize::from(tree.feature[node]);
                node = if Self::feature(x, q) < tree.split[node] {
                    2 * node + 1
                } else {
                    2 * node + 2
                };
            }
        }
        self.end_point();
    }

    /// Height of the trees in use (after clamping).
    pub fn height(&self) -> u32 {
        self.height
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(state: &mut u64) -> f64 {
        next_f64(state)
    }

    #[test]
    fn cold_forest_scores_zero_and_warms_after_one_window() {
        let cfg = HstConfig {
            window: 10,
            ..HstConfig::default()
        };
        let mut f = HalfSpaceTrees::new(2, &cfg);
        for _ in 0..9 {
            f.learn(&[0.5, 0.5]);
        }
        assert!(!f.is_warm());
        assert_eq!(f.score(&[0.0, 1.0]), 0.0);
        f.learn(&[0.5, 0.5]);
        assert!(f.is_warm());
    }

    #[test]
    fn points_far_from_the_mass_score_higher() {
        let mut f = HalfSpaceTrees::new(3, &HstConfig::default());
        let mut s = 7u64;
        for _ in 0..2_000 {
            // Normal traffic: a small blob around (0.3, 0.3, 0.3).
            let x = [
                0.25 + 0.1 * lcg(&mut s),
                0.25 + 0.1 * lcg(&mut s),
                0.25 + 0.1 * lcg(&mut s),
            ];
            f.learn(&x);
        }
        let inlier = f.score(&[0.3, 0.3, 0.3]);
        let outlier = f.score(&[0.95, 0.9, 0.05]);
        assert!(outlier > inlier + 0.3, "inlier {inlier}, outlier {outlier}");
        assert!((0.0..=1.0).contains(&inlier) && (0.0..=1.0).contains(&outlier));
        // Garbage input is clamped, not a panic.
        assert!(f.score(&[f64::NAN, 7.0]).is_finite());
    }

    #[test]
    fn score_and_learn_equals_score_then_learn() {
        let cfg = HstConfig {
            window: 50,
            ..HstConfig::default()
        };
        let (mut a, mut b) = (HalfSpaceTrees::new(2, &cfg), HalfSpaceTrees::new(2, &cfg));
        let mut s = 3u64;
        for _ in 0..500 {
            let x = [lcg(&mut s), lcg(&mut s) * 0.2];
            let expected = a.score(&x);
            a.learn(&x);
            assert_eq!(b.score_and_learn(&x), expected);
        }
    }

    #[test]
    fn memory_is_fixed_by_the_config() {
        let cfg = HstConfig {
            trees: 3,
            height: 4,
            ..HstConfig::default()
        };
        let mut f = HalfSpaceTrees::new(2, &cfg);
        for i in 0..10_000 {
            f.learn(&[f64::from(i % 100) / 100.0, 0.5]);
        }
        assert_eq!(f.trees.len(), 3);
        assert!(
            f.trees
                .iter()
                .all(|t| t.r_mass.len() == 31 && t.split.len() == 15)
        );
    }
}
