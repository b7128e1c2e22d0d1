//! Open-loop arrival times: Gamma-distributed gaps with mean 1/rate, as
//! vLLM's `bench serve` (burstiness 1 = Poisson; lower is burstier, higher
//! more even).

use std::time::Duration;

use rand::rngs::StdRng;
use rand::SeedableRng;
use rand_distr::{Distribution, Gamma};

use crate::error::LoadError;

pub struct ArrivalSchedule {
    rng: StdRng,
    /// `None` for an infinite rate: everything arrives at once.
    gaps: Option<Gamma<f64>>,
    elapsed_s: f64,
}

impl ArrivalSchedule {
    pub fn new(rate: f64, burstiness: f64, seed: u64) -> Result<Self, LoadError> {
        if rate.is_nan() || rate <= 0.0 || !burstiness.is_finite() || burstiness <= 0.0 {
            return Err(LoadError::Config(format!(
                "rate {rate} / burstiness {burstiness}: both must be positive"
            )));
        }
        let gaps = if rate.is_infinite() {
            None
        } else {
            // Shape k and scale 1/(rate k): mean 1/rate, CV^2 = 1/k.
            let gamma = Gamma::new(burstiness, 1.0 / (rate * burstiness))
                .map_err(|e| LoadError::Config(format!("arrival distribution: {e}")))?;
            Some(gamma)
        };
        Ok(ArrivalSchedule {
            rng: StdRng::seed_from_u64(seed),
            gaps,
            elapsed_s: 0.0,
        })
    }

    /// The next request's arrival time, from the start of the run.
    pub fn next_arrival(&mut self) -> Duration {
        if let Some(gamma) = &self.gaps {
            self.elapsed_s += gamma.sample(&mut self.rng);
        }
        Duration::try_from_secs_f64(self.elapsed_s).unwrap_or(Duration::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gaps(rate: f64, burstiness: f64, seed: u64, n: usize) -> Vec<f64> {
        let mut s = ArrivalSchedule::new(rate, burstiness, seed).unwrap();
        let mut last = 0.0;
        (0..n)
            .map(|_| {
                let t = s.next_arrival().as_secs_f64();
                let gap = t - last;
                last = t;
                gap
            })
            .collect()
    }

    fn mean_and_cv2(x: &[f64]) -> (f64, f64) {
        let n = x.len() as f64;
        let mean = x.iter().sum::<f64>() / n;
        let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
        (mean, var / (mean * mean))
    }

    #[test]
    fn poisson_gaps_have_mean_one_over_rate() {
        let g = gaps(20.0, 1.0, 1, 20_000);
        assert!(g.iter().all(|v| *v >= 0.0));
        let (mean, cv2) = mean_and_cv2(&g);
        assert!((mean - 0.05).abs() < 0.05 * 0.05, "mean {mean}");
        assert!(
            (cv2 - 1.0).abs() < 0.08,
            "exponential gaps have CV^2 = 1, got {cv2}"
        );
    }

    #[test]
    fn burstiness_sets_the_spread() {
        let (mean, cv2) = mean_and_cv2(&gaps(20.0, 4.0, 2, 20_000));
        assert!((mean - 0.05).abs() < 0.05 * 0.05, "mean {mean}");
        assert!((cv2 - 0.25).abs() < 0.03, "CV^2 = 1/burstiness, got {cv2}");
        let (_, bursty) = mean_and_cv2(&gaps(20.0, 0.25, 2, 20_000));
        assert!(bursty > 2.5, "burstiness < 1 is burstier, got {bursty}");
    }

    #[test]
    fn same_seed_same_schedule_and_infinite_rate_is_immediate() {
        assert_eq!(gaps(5.0, 1.0, 9, 50), gaps(5.0, 1.0, 9, 50));
        assert_ne!(gaps(5.0, 1.0, 9, 50), gaps(5.0, 1.0, 10, 50));
        let mut inf = ArrivalSchedule::new(f64::INFINITY, 1.0, 0).unwrap();
        for _ in 0..10 {
            assert_eq!(inf.next_arrival(), Duration::ZERO);
        }
        assert!(ArrivalSchedule::new(0.0, 1.0, 0).is_err());
        assert!(ArrivalSchedule::new(1.0, 0.0, 0).is_err());
    }
}
