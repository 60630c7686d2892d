//! k-means (k-means++ seeding, Lloyd iterations) and the adjusted Rand index that measures how
//! much two segmentations of the same points agree. Used by the session outlook's segments and by
//! the item index of the sequence models (`sequence::index`).

use crate::logistic::SplitMix64;

/// Most Lloyd iterations.
const MAX_ITERATIONS: usize = 100;

/// Squared Euclidean distance.
fn distance2(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// Index of the centroid nearest to `point` (the lowest index on ties, so assignment is
/// deterministic).
pub fn nearest(centroids: &[Vec<f64>], point: &[f64]) -> usize {
    let mut best = (f64::INFINITY, 0);
    for (i, c) in centroids.iter().enumerate() {
        let d = distance2(c, point);
        if d < best.0 {
            best = (d, i);
        }
    }
    best.1
}

/// Fits `k` centroids to `points` (all of one width): k-means++ seeding from `seed`, then Lloyd
/// iterations until no assignment changes. Fewer distinct points than `k` give fewer centroids.
pub fn fit(points: &[Vec<f64>], k: usize, seed: u64) -> Vec<Vec<f64>> {
    fit_iterations(points, k, seed, MAX_ITERATIONS)
}

/// [`fit`] with at most `max_iterations` Lloyd iterations (a large clustering that only needs
/// good cells, not convergence, stops early).
pub fn fit_iterations(
    points: &[Vec<f64>],
    k: usize,
    seed: u64,
    max_iterations: usize,
) -> Vec<Vec<f64>> {
    let Some(first) = points.first() else {
        return Vec::new();
    };
    let width = first.len();
    let mut rng = SplitMix64(seed);
    let mut centroids: Vec<Vec<f64>> =
        vec![points[(rng.next_u64() % points.len() as u64) as usize].clone()];
    let mut d2: Vec<f64> = points.iter().map(|p| distance2(p, &centroids[0])).collect();
    while centroids.len() < k {
        let total: f64 = d2.iter().sum();
        if total <= 0.0 {
            break; // every point sits on a centroid already
        }
        let mut target = rng.next_f64() * total;
        // Rounding can leave `target` past the last weight: fall back to the last point that is not
        // a centroid already (a duplicate centroid would be a segment that stays empty).
        let mut pick = d2.iter().rposition(|d| *d > 0.0).unwrap_or(0);
        for (i, d) in d2.iter().enumerate() {
            if target < *d {
                pick = i;
                break;
            }
            target -= d;
        }
        let c = points[pick].clone();
        for (d, p) in d2.iter_mut().zip(points) {
            *d = d.min(distance2(p, &c));
        }
        centroids.push(c);
    }
    let mut assignment: Vec<usize> = vec![usize::MAX; points.len()];
    for _ in 0..max_iterations {
        let mut changed = false;
        for (a, p) in assignment.iter_mut().zip(points) {
            let n = nearest(&centroids, p);
            changed |= *a != n;
            *a = n;
        }
        if !changed {
            break;
        }
        let mut sums = vec![vec![0.0; width]; centroids.len()];
        let mut counts = vec![0usize; centroids.len()];
        for (&a, p) in assignment.iter().zip(points) {
            counts[a] += 1;
            for (s, x) in sums[a].iter_mut().zip(p) {
                *s += x;
            }
        }
        for ((c, s), n) in centroids.iter_mut().zip(sums).zip(counts) {
            // An emptied cluster keeps its centroid.
            if n > 0 {
                *c = s.into_iter().map(|v| v / n as f64).collect();
            }
        }
    }
    centroids
}

/// Sum of squared distances of the points to their nearest centroid.
pub fn inertia(centroids: &[Vec<f64>], points: &[Vec<f64>]) -> f64 {
    points
        .iter()
        .map(|p| distance2(&centroids[nearest(centroids, p)], p))
        .sum()
}

/// The best of `restarts` fits (seeds `seed`, `seed + 1`, ...) by [`inertia`]: one k-means++ draw
/// can settle in a poor local optimum, and then a refit would not reproduce it.
pub fn fit_best(points: &[Vec<f64>], k: usize, seed: u64, restarts: usize) -> Vec<Vec<f64>> {
    (0..restarts.max(1) as u64)
        .map(|r| fit(points, k, seed.wrapping_add(r)))
        .map(|c| (inertia(&c, points), c))
        .min_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
        .unwrap_or_default()
}

/// Adjusted Rand index of two labellings of the same points: 1 for identical partitions (whatever
/// the label numbers), about 0 for independent ones. `None` for fewer than two points.
pub fn adjusted_rand_index(a: &[usize], b: &[usize]) -> Option<f64> {
    let n = a.len().min(b.len());
    if n < 2 {
        return None;
    }
    let ka = a.iter().max().map_or(0, |m| m + 1);
    let kb = b.iter().max().map_or(0, |m| m + 1);
    let mut table = vec![vec![0u64; kb]; ka];
    for (&x, &y) in a.iter().zip(b) {
        table[x][y] += 1;
    }
    let pairs = |c: u64| (c * c.saturating_sub(1)) as f64 / 2.0;
    let index: f64 = table.iter().flatten().map(|&c| pairs(c)).sum();
    let rows: f64 = table.iter().map(|r| pairs(r.iter().sum())).sum();
    let cols: f64 = (0..kb)
        .map(|j| pairs(table.iter().map(|r| r[j]).sum()))
        .sum();
    let expected = rows * cols / pairs(n as u64);
    let max = (rows + cols) / 2.0;
    if (max - expected).abs() < 1e-12 {
        // Both partitions trivial (one cluster each, or all singletons): they agree.
        return Some(1.0);
    }
    Some((index - expected) / (max - expected))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blobs() -> Vec<Vec<f64>> {
        let mut rng = SplitMix64(3);
        let centres = [[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]];
        (0..300)
            .map(|i| {
                let c = centres[i % 3];
                vec![c[0] + rng.next_f64() - 0.5, c[1] + rng.next_f64() - 0.5]
            })
            .collect()
    }

    #[test]
    fn three_separated_blobs_are_found_from_any_seed() {
        let points = blobs();
        let truth: Vec<usize> = (0..points.len()).map(|i| i % 3).collect();
        for seed in 1..5 {
            let centroids = fit(&points, 3, seed);
            assert_eq!(centroids.len(), 3);
            let got: Vec<usize> = points.iter().map(|p| nearest(&centroids, p)).collect();
            assert_eq!(adjusted_rand_index(&truth, &got), Some(1.0), "seed {seed}");
        }
    }

    #[test]
    fn the_rand_index_ignores_label_numbers_and_is_near_zero_for_unrelated_labels() {
        let a = [0, 0, 1, 1, 2, 2];
        let b = [2, 2, 0, 0, 1, 1];
        assert_eq!(adjusted_rand_index(&a, &b), Some(1.0));
        let mut rng = SplitMix64(9);
        let x: Vec<usize> = (0..5_000).map(|_| (rng.next_u64() % 4) as usize).collect();
        let y: Vec<usize> = (0..5_000).map(|_| (rng.next_u64() % 4) as usize).collect();
        let ari = adjusted_rand_index(&x, &y).unwrap();
        assert!(ari.abs() < 0.01, "{ari}");
        assert_eq!(adjusted_rand_index(&[0], &[0]), None);
    }

    #[test]
    fn identical_points_give_one_centroid() {
        let points = vec![vec![1.0, 2.0]; 10];
        assert_eq!(fit(&points, 4, 1), vec![vec![1.0, 2.0]]);
    }
}
