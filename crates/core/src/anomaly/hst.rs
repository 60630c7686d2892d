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

/// One node of a tree: its split (internal nodes; unused in leaves) and both windows' counts.
///
/// Split and counts side by side in 16 bytes, the trees one after another: a walk reads one
/// cache line per node. The split is `f32`: features are fractions in `[0, 1]` and a split a
/// few `1e-8` off moves no realistic point.
#[derive(Debug, Clone, Copy, Default)]
struct Node {
    feature: u32,
    split: f32,
    /// `mass[latest]` counts the latest window (in inner nodes only once it is complete: walks
    /// count at the leaves), the other the reference window.
    mass: [u32; 2],
}

/// What a [`HalfSpaceTrees`] has learned: its windows' counts and position (the splits follow
/// from the configuration and the seed, so they are not part of it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HstState {
    latest: u8,
    seen_in_window: u32,
    windows_done: u64,
    mass: Vec<[u32; 2]>,
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
    /// Which column of [`Node::mass`] counts the latest window (0 or 1).
    latest: usize,
    /// Every tree's nodes, tree after tree, each in heap order (the children of node `i` are
    /// `2i + 1` and `2i + 2`).
    nodes: Vec<Node>,
    nodes_per_tree: usize,
    max_sum: f64,
    /// The point being walked, cleaned once (reused: no allocation per point).
    point: Vec<f32>,
}

/// Trees walked together, level by level (their positions on the stack).
const GROUP: usize = 16;

/// splitmix64: a tiny deterministic generator, enough for random split placement.
fn next_u64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Sets the count `count` of each of a tree's `inner` nodes (heap order) to the sum of its
/// children's. Children come after their parent, so a backwards pass sees each child's count
/// complete before its parent's.
fn fill_inner<T>(tree: &mut [T], inner: usize, count: impl Fn(&mut T) -> &mut u32) {
    for i in (0..inner).rev() {
        let sum = *count(&mut tree[2 * i + 1]) + *count(&mut tree[2 * i + 2]);
        *count(&mut tree[i]) = sum;
    }
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
        let trees = cfg.trees.max(1);
        let mut all = Vec::with_capacity(trees * nodes);
        for _ in 0..trees {
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
            let mut tree = vec![Node::default(); nodes];
            // Ranges per node, built top-down.
            let mut ranges: Vec<(Vec<f64>, Vec<f64>)> = Vec::with_capacity(internal);
            ranges.push((lo, hi));
            for i in 0..internal {
                let (lo, hi) = ranges[i].clone();
                let q = (next_u64(&mut rng) % dims as u64) as usize;
                let mid = (lo[q] + hi[q]) / 2.0;
                tree[i].feature = q as u32;
                tree[i].split = mid as f32;
                let (mut left_hi, mut right_lo) = (hi.clone(), lo.clone());
                left_hi[q] = mid;
                right_lo[q] = mid;
                // Children of i are 2i+1 and 2i+2; ranges is filled in index order.
                if 2 * i + 1 < internal {
                    ranges.push((lo, left_hi));
                    ranges.push((right_lo, hi));
                }
            }
            all.extend(tree);
        }
        let window = cfg.window.max(1);
        let size_limit = (cfg.size_limit.clamp(0.0, 1.0) * f64::from(window)) as u32;
        let max_sum = trees as f64 * f64::from(window) * ((1u64 << (height + 1)) - 1) as f64;
        HalfSpaceTrees {
            dims,
            height,
            window,
            size_limit,
            seen_in_window: 0,
            windows_done: 0,
            latest: 0,
            nodes: all,
            nodes_per_tree: nodes,
            max_sum,
            point: Vec::with_capacity(dims),
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

    /// One walk of `x` down every tree; returns the sum of reference masses weighted by `2^depth`
    /// along each path, up to and including the first node with fewer than `size_limit * window`
    /// reference points (as in River: a sparse node still counts, but scoring stops there).
    ///
    /// The trees are complete, so every walk is `height + 1` nodes long and the child is chosen
    /// without a branch (a data-dependent branch per node mispredicts half the time).
    fn walk<const SCORE: bool, const LEARN: bool>(&mut self, x: &[f64]) -> u64 {
        let mut point = std::mem::take(&mut self.point);
        point.clear();
        point.extend((0..self.dims).map(|q| {
            x.get(q)
                .copied()
                .filter(|v| v.is_finite())
                .unwrap_or(0.0)
                .clamp(0.0, 1.0) as f32
        }));
        let per_tree = self.nodes_per_tree;
        let trees = self.nodes.len() / per_tree;
        let (latest, reference) = (self.latest, 1 - self.latest);
        let limit = self.size_limit;
        let mut sum = 0u64;
        // Level by level across a group of trees (not tree by tree): the trees' walks are
        // independent, so the processor overlaps their loads instead of waiting on one path at a
        // time. A group's positions live on the stack.
        for group in (0..trees).step_by(GROUP) {
            let n = GROUP.min(trees - group);
            let mut base = [0usize; GROUP];
            for (k, b) in base.iter_mut().enumerate().take(n) {
                *b = (group + k) * per_tree;
            }
            let mut at = base;
            let mut scoring = [SCORE; GROUP];
            for depth in 0..=self.height {
                let leaf = depth == self.height;
                for k in 0..n {
                    let node = &mut self.nodes[at[k]];
                    if SCORE {
                        let r = node.mass[reference];
                        sum += u64::from(scoring[k]) * (u64::from(r) << depth);
                        scoring[k] &= r >= limit;
                    }
                    if LEARN && leaf {
                        // Only leaves count as points arrive: an inner node's count is the sum
                        // of its children's, filled in when the window closes
                        // ([`Self::end_point`]), so the walk down stores nothing. At most
                        // `window` per window: no overflow.
                        node.mass[latest] += 1;
                    }
                    if !leaf {
                        let x = point.get(node.feature as usize).copied().unwrap_or(0.0);
                        // Heap order within the tree: children of i are 2i + 1 and 2i + 2.
                        at[k] = 2 * at[k] - base[k] + 1 + usize::from(x >= node.split);
                    }
                }
            }
        }
        self.point = point;
        sum
    }

    /// `1 - sum / max_sum`, clamped to `[0, 1]`.
    fn normalise(&self, sum: u64) -> f64 {
        (1.0 - sum as f64 / self.max_sum).clamp(0.0, 1.0)
    }

    /// Anomaly score of `x` in `[0, 1]` (1 = most anomalous) against the reference window.
    ///
    /// Takes `&mut self` only for the forest's reusable scratch buffer; the model is unchanged.
    pub fn score(&mut self, x: &[f64]) -> f64 {
        if !self.is_warm() {
            return 0.0;
        }
        let sum = self.walk::<true, false>(x);
        self.normalise(sum)
    }

    /// [`Self::score`] then [`Self::learn`] in one walk down each tree (half the memory
    /// traffic of the two calls; same result).
    pub fn score_and_learn(&mut self, x: &[f64]) -> f64 {
        let warm = self.is_warm();
        let sum = if warm {
            self.walk::<true, true>(x)
        } else {
            self.walk::<false, true>(x)
        };
        self.end_point();
        if warm { self.normalise(sum) } else { 0.0 }
    }

    /// Counts one learned point; rotates the windows every `window` points.
    fn end_point(&mut self) {
        self.seen_in_window += 1;
        if self.seen_in_window >= self.window {
            self.fill_inner_counts();
            // The latest counts become the reference; the old reference column restarts at 0.
            self.latest = 1 - self.latest;
            let latest = self.latest;
            self.nodes.iter_mut().for_each(|n| n.mass[latest] = 0);
            self.seen_in_window = 0;
            self.windows_done += 1;
        }
    }

    /// Sets every inner node's latest count to the sum of its children's (walks count leaves
    /// only).
    fn fill_inner_counts(&mut self) {
        let (latest, inner) = (self.latest, self.inner_nodes());
        for tree in self.nodes.chunks_exact_mut(self.nodes_per_tree) {
            fill_inner(tree, inner, |n| &mut n.mass[latest]);
        }
    }

    fn inner_nodes(&self) -> usize {
        (1usize << self.height) - 1
    }

    /// Folds `x` into the latest window; rotates the windows every `window` points.
    pub fn learn(&mut self, x: &[f64]) {
        self.walk::<false, true>(x);
        self.end_point();
    }

    /// What the forest has learned, for a changelog.
    /// Inner nodes' latest counts are filled in from the leaves, so the values are those of a
    /// forest counting at every node.
    pub fn state(&self) -> HstState {
        let mut mass: Vec<[u32; 2]> = self.nodes.iter().map(|n| n.mass).collect();
        let (latest, inner) = (self.latest, self.inner_nodes());
        for tree in mass.chunks_exact_mut(self.nodes_per_tree) {
            fill_inner(tree, inner, |m| &mut m[latest]);
        }
        HstState {
            latest: self.latest as u8,
            seen_in_window: self.seen_in_window,
            windows_done: self.windows_done,
            mass,
        }
    }

    /// Installs learned counts read back from a changelog; an error, changing nothing, when they
    /// were learned by a forest of another shape.
    pub fn restore_state(&mut self, state: HstState) -> Result<(), String> {
        if state.mass.len() != self.nodes.len() || state.latest > 1 {
            return Err(format!(
                "forest state has {} nodes, this forest {}",
                state.mass.len(),
                self.nodes.len()
            ));
        }
        self.latest = usize::from(state.latest);
        self.seen_in_window = state.seen_in_window;
        self.windows_done = state.windows_done;
        for (n, m) in self.nodes.iter_mut().zip(state.mass) {
            n.mass = m;
        }
        Ok(())
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
    fn state_counts_every_node_on_the_path_as_a_forest_counting_at_each_node_would() {
        let cfg = HstConfig {
            trees: 3,
            height: 4,
            window: 40,
            ..HstConfig::default()
        };
        let mut f = HalfSpaceTrees::new(2, &cfg);
        let mut s = 11u64;
        // One full window and a part of the next: both columns are checked.
        for _ in 0..57 {
            f.learn(&[lcg(&mut s), lcg(&mut s)]);
        }
        let state = f.state();
        let (latest, per_tree) = (usize::from(state.latest), f.nodes_per_tree);
        for tree in state.mass.chunks_exact(per_tree) {
            // Every point passes the root: the root counts the window's points.
            assert_eq!(tree[0][latest], 17);
            assert_eq!(tree[0][1 - latest], 40);
            for i in 0..(per_tree / 2) {
                for col in [0, 1] {
                    assert_eq!(tree[i][col], tree[2 * i + 1][col] + tree[2 * i + 2][col]);
                }
            }
        }
        // Restoring the state and learning on gives the same scores as never stopping.
        let mut restored = HalfSpaceTrees::new(2, &cfg);
        restored.restore_state(state).unwrap();
        for _ in 0..100 {
            let x = [lcg(&mut s), lcg(&mut s)];
            assert_eq!(restored.score_and_learn(&x), f.score_and_learn(&x));
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
        assert_eq!((f.nodes.len(), f.nodes_per_tree), (3 * 31, 31));
    }
}
