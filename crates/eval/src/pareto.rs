//! The accuracy / latency Pareto front: the runs no other run beats on both.

/// Indices of the points `(latency, accuracy)` that no other point
/// dominates (latency no higher and accuracy no lower, one of them strictly),
/// ordered by latency. Exact duplicates are all kept. Points with a NaN
/// coordinate are never on the front.
pub fn pareto_front(points: &[(f64, f64)]) -> Vec<usize> {
    let valid = |p: &(f64, f64)| !p.0.is_nan() && !p.1.is_nan();
    let dominates =
        |a: &(f64, f64), b: &(f64, f64)| a.0 <= b.0 && a.1 >= b.1 && (a.0 < b.0 || a.1 > b.1);
    let mut front: Vec<usize> = (0..points.len())
        .filter(|&i| valid(&points[i]))
        .filter(|&i| !points.iter().any(|q| valid(q) && dominates(q, &points[i])))
        .collect();
    front.sort_by(|&a, &b| {
        points[a]
            .0
            .total_cmp(&points[b].0)
            .then(points[a].1.total_cmp(&points[b].1))
    });
    front
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dominated_points_are_dropped() {
        // (latency, accuracy)
        let points = [
            (1.0, 0.5),
            (2.0, 0.9),
            (1.5, 0.4),
            (3.0, 0.9),
            (0.5, 0.2),
            (2.5, 0.95),
        ];
        // (1.5, 0.4) loses to (1.0, 0.5); (3.0, 0.9) to (2.0, 0.9).
        assert_eq!(pareto_front(&points), vec![4, 0, 1, 5]);
    }

    #[test]
    fn front_edge_cases() {
        assert!(pareto_front(&[]).is_empty());
        assert_eq!(pareto_front(&[(1.0, 0.5)]), vec![0]);
        assert_eq!(pareto_front(&[(1.0, 0.5), (1.0, 0.5)]), vec![0, 1]);
        assert_eq!(pareto_front(&[(f64::NAN, 1.0), (1.0, 0.5)]), vec![1]);
    }

    #[test]
    fn every_dropped_point_is_dominated_by_a_front_point() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        for _ in 0..100 {
            let points: Vec<(f64, f64)> = (0..rng.random_range(1..20))
                .map(|_| {
                    (
                        rng.random_range(0..10) as f64,
                        rng.random_range(0..10) as f64,
                    )
                })
                .collect();
            let front = pareto_front(&points);
            for (i, p) in points.iter().enumerate() {
                let beaten = front.iter().any(|&f| {
                    let q = points[f];
                    q.0 <= p.0 && q.1 >= p.1 && (q.0 < p.0 || q.1 > p.1)
                });
                assert_eq!(front.contains(&i), !beaten, "{points:?} {front:?}");
            }
        }
    }
}
