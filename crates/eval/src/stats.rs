//! Summary statistics of the eval: means, percentiles and the rank AUC.

/// Arithmetic mean; `None` for no values.
pub fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

/// The `q`-quantile (0..=1) by linear interpolation between the closest
/// ranks (numpy's default), so p90 of few problems is not pinned to one.
/// `None` for no values; NaNs are ignored.
pub fn percentile(values: &[f64], q: f64) -> Option<f64> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    let rank = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let lo = rank.floor() as usize;
    let hi = rank.ceil() as usize;
    Some(sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo as f64))
}

/// Area under the ROC curve of `scores` for the binary `labels` (true =
/// positive), by the Mann-Whitney rank statistic: the probability that a
/// random positive scores above a random negative, ties counting one half.
/// `None` when either class is empty or a score is NaN.
pub fn auc(scores: &[f64], labels: &[bool]) -> Option<f64> {
    if scores.len() != labels.len() || scores.iter().any(|s| s.is_nan()) {
        return None;
    }
    let positives = labels.iter().filter(|&&l| l).count();
    let negatives = labels.len() - positives;
    if positives == 0 || negatives == 0 {
        return None;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    // Ranks start at 1; a run of equal scores shares the mean of its ranks.
    let mut positive_rank_sum = 0.0;
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && scores[order[end]] == scores[order[start]] {
            end += 1;
        }
        let mean_rank = (start + 1 + end) as f64 / 2.0;
        positive_rank_sum +=
            mean_rank * order[start..end].iter().filter(|&&i| labels[i]).count() as f64;
        start = end;
    }
    let (p, n) = (positives as f64, negatives as f64);
    Some((positive_rank_sum - p * (p + 1.0) / 2.0) / (p * n))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition itself: pairs where the positive wins, ties half.
    fn auc_by_pairs(scores: &[f64], labels: &[bool]) -> f64 {
        let (mut wins, mut pairs) = (0.0, 0.0);
        for (i, &li) in labels.iter().enumerate() {
            for (j, &lj) in labels.iter().enumerate() {
                if li && !lj {
                    pairs += 1.0;
                    wins += match scores[i].total_cmp(&scores[j]) {
                        std::cmp::Ordering::Greater => 1.0,
                        std::cmp::Ordering::Equal => 0.5,
                        std::cmp::Ordering::Less => 0.0,
                    };
                }
            }
        }
        wins / pairs
    }

    #[test]
    fn auc_known_cases() {
        // Perfect separation, reversed, all tied.
        assert_eq!(
            auc(&[0.1, 0.2, 0.8, 0.9], &[false, false, true, true]),
            Some(1.0)
        );
        assert_eq!(
            auc(&[0.1, 0.2, 0.8, 0.9], &[true, true, false, false]),
            Some(0.0)
        );
        assert_eq!(
            auc(&[1.0, 1.0, 1.0, 1.0], &[true, false, true, false]),
            Some(0.5)
        );
        // Positives {0.35, 0.8}, negatives {0.1, 0.4}: 3 of 4 pairs won.
        assert_eq!(
            auc(&[0.1, 0.4, 0.35, 0.8], &[false, false, true, true]),
            Some(0.75)
        );
        // One tie between classes: positive 0.5 vs negatives {0.5, 0.2}: 1.5 / 2.
        assert_eq!(auc(&[0.5, 0.5, 0.2], &[true, false, false]), Some(0.75));
    }

    #[test]
    fn auc_undefined_without_both_classes() {
        assert_eq!(auc(&[0.1, 0.2], &[true, true]), None);
        assert_eq!(auc(&[], &[]), None);
        assert_eq!(auc(&[0.1, f64::NAN], &[true, false]), None);
        assert_eq!(auc(&[0.1], &[true, false]), None);
    }

    #[test]
    fn auc_matches_pair_counting_with_ties() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        for _ in 0..200 {
            let n = rng.random_range(2..40);
            // Few distinct scores, so ties are common.
            let scores: Vec<f64> = (0..n)
                .map(|_| f64::from(rng.random_range(0..6u8)) * 0.5)
                .collect();
            let labels: Vec<bool> = (0..n).map(|_| rng.random_bool(0.4)).collect();
            match auc(&scores, &labels) {
                Some(a) => assert!((a - auc_by_pairs(&scores, &labels)).abs() < 1e-12),
                None => assert!(labels.iter().all(|&l| l) || labels.iter().all(|&l| !l)),
            }
        }
    }

    #[test]
    fn mean_and_percentiles() {
        assert_eq!(mean(&[]), None);
        assert_eq!(mean(&[1.0, 2.0, 6.0]), Some(3.0));
        let v: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.0), Some(1.0));
        assert_eq!(percentile(&v, 1.0), Some(10.0));
        assert_eq!(percentile(&v, 0.5), Some(5.5));
        // rank 0.9 * 9 = 8.1 -> 9 + 0.1 * (10 - 9)
        assert!((percentile(&v, 0.9).unwrap_or(f64::NAN) - 9.1).abs() < 1e-12);
        assert_eq!(percentile(&[4.0], 0.9), Some(4.0));
        assert_eq!(percentile(&[], 0.9), None);
        // Order of the input does not matter.
        assert_eq!(percentile(&[3.0, 1.0, 2.0], 0.5), Some(2.0));
    }
}
