//! Small statistics helpers.

/// The nearest-rank `p`-quantile (0 < p <= 1) of `values`: the smallest value such that at least
/// `p` of the values are at or below it. `None` for no values. Sorts `values`.
pub fn nearest_rank(values: &mut [i64], p: f64) -> Option<i64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let n = values.len();
    let rank = ((p * n as f64).ceil() as usize).clamp(1, n);
    Some(values[rank - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_matches_the_textbook_examples() {
        // Wikipedia's "Percentile" nearest-rank example: 15, 20, 35, 40, 50.
        let mut v = vec![50, 15, 40, 20, 35];
        assert_eq!(nearest_rank(&mut v, 0.3), Some(20));
        assert_eq!(nearest_rank(&mut v, 0.4), Some(20));
        assert_eq!(nearest_rank(&mut v, 0.5), Some(35));
        assert_eq!(nearest_rank(&mut v, 1.0), Some(50));
        assert_eq!(nearest_rank(&mut [], 0.5), None);
        assert_eq!(nearest_rank(&mut [7], 0.9), Some(7));
    }
}
