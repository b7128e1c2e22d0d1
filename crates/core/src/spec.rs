//! Speculative decoding's acceptance rule (Leviathan et al. 2023, "Fast
//! Inference from Transformers via Speculative Decoding"; vLLM's rejection
//! sampler): which of the SLM's `k` draft tokens the LLM keeps, and the one
//! token the LLM adds after them.
//!
//! The random rule is lossless: every emitted token is distributed exactly as
//! if the LLM had sampled it alone (tested below with a chi-square test).

use crate::sampling::{argmax, sample_from_probs, SeqRng};
use crate::TokenId;

/// The outcome of one verify: the first `num_accepted` drafts are kept, then
/// `next_token` (the LLM's correction at the first rejected position, or the
/// bonus token after all `k` drafts) is appended. A verify therefore always
/// emits `num_accepted + 1` tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acceptance {
    pub num_accepted: usize,
    pub next_token: TokenId,
}

/// Greedy verification: keep drafts while each equals the LLM's argmax at its
/// position; at the first mismatch emit the LLM's argmax instead; if all
/// match, the bonus token is the argmax of the last row.
///
/// `target_logits` holds the LLM's rows for the `k` draft positions and the
/// one after them (`drafts.len() + 1` rows).
///
/// # Panics
/// If `target_logits` does not have `drafts.len() + 1` rows: the engine
/// builds both from the same verify row, so a mismatch is a bug there.
pub fn accept_greedy(drafts: &[TokenId], target_logits: &[&[f32]]) -> Acceptance {
    assert_eq!(
        target_logits.len(),
        drafts.len() + 1,
        "verify needs k + 1 target rows for k drafts"
    );
    for (i, (&draft, row)) in drafts.iter().zip(target_logits).enumerate() {
        let best = argmax(row);
        if draft != best {
            return Acceptance {
                num_accepted: i,
                next_token: best,
            };
        }
    }
    Acceptance {
        num_accepted: drafts.len(),
        next_token: argmax(target_logits[drafts.len()]),
    }
}

/// Random (speculative-sampling) verification.
///
/// * `draft_probs[i]`: the distribution draft `i` was drawn from (the SLM's
///   [`crate::sampling::sampling_probs`]), `k` rows.
/// * `target_probs[i]`: the LLM's sampling distribution at the same
///   positions plus the one after the last draft, `k + 1` rows.
///
/// Draft `i` is accepted when `u < p_t / p_d` (`u` uniform in `[0, 1)`), so a
/// token the LLM would never sample is never accepted. At the first rejection
/// the token is drawn from `norm(max(p_t - p_d, 0))` (from `p_t` if that
/// residual is all zero, which only rounding can cause). Only when all drafts
/// are accepted is a bonus token drawn from the last target row.
///
/// RNG use: one uniform per examined draft plus one draw for the final token.
///
/// # Panics
/// If the row counts are not `k` and `k + 1` (an engine bug, as above).
pub fn accept_random(
    drafts: &[TokenId],
    draft_probs: &[Vec<f32>],
    target_probs: &[Vec<f32>],
    rng: &mut SeqRng,
) -> Acceptance {
    let k = drafts.len();
    assert_eq!(
        draft_probs.len(),
        k,
        "one draft distribution per draft token"
    );
    assert_eq!(
        target_probs.len(),
        k + 1,
        "verify needs k + 1 target rows for k drafts"
    );
    for (i, &draft) in drafts.iter().enumerate() {
        let p_d = draft_probs[i].get(draft as usize).copied().unwrap_or(0.0);
        let p_t = target_probs[i].get(draft as usize).copied().unwrap_or(0.0);
        // `u < p_t / p_d` without dividing (p_d can be 0 if the engine drafted
        // greedily against a one-hot row that does not contain the token).
        let accepted = rng.uniform() * p_d < p_t;
        if !accepted {
            let next_token = sample_residual(&target_probs[i], &draft_probs[i], rng);
            return Acceptance {
                num_accepted: i,
                next_token,
            };
        }
    }
    Acceptance {
        num_accepted: k,
        next_token: sample_from_probs(&target_probs[k], rng),
    }
}

/// Draws from `norm(max(p_t - p_d, 0))`, or from `p_t` when that is all zero.
fn sample_residual(p_t: &[f32], p_d: &[f32], rng: &mut SeqRng) -> TokenId {
    let residual: Vec<f32> = p_t
        .iter()
        .enumerate()
        .map(|(v, &t)| (t - p_d.get(v).copied().unwrap_or(0.0)).max(0.0))
        .collect();
    let mass: f32 = residual.iter().sum();
    if mass > 0.0 && mass.is_finite() {
        sample_from_probs(&residual, rng)
    } else {
        sample_from_probs(p_t, rng)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampling::sampling_probs;
    use crate::SamplingParams;
    use proptest::prelude::*;
    use statrs::distribution::{ChiSquared, ContinuousCDF};

    const VOCAB: usize = 8;

    #[test]
    fn greedy_accepts_the_matching_prefix() {
        // Rows whose argmax is 2, 5, 1 (and 7 for the bonus position).
        let rows: Vec<Vec<f32>> = [2usize, 5, 1, 7]
            .iter()
            .map(|&best| {
                (0..VOCAB)
                    .map(|v| if v == best { 1.0 } else { 0.0 })
                    .collect()
            })
            .collect();
        let rows: Vec<&[f32]> = rows.iter().map(|r| r.as_slice()).collect();

        assert_eq!(
            accept_greedy(&[2, 5, 1], &rows),
            Acceptance {
                num_accepted: 3,
                next_token: 7
            }
        );
        assert_eq!(
            accept_greedy(&[2, 4, 1], &rows),
            Acceptance {
                num_accepted: 1,
                next_token: 5
            }
        );
        assert_eq!(
            accept_greedy(&[0, 5, 1], &rows),
            Acceptance {
                num_accepted: 0,
                next_token: 2
            }
        );
        // Later drafts matching does not matter once one mismatched.
        assert_eq!(
            accept_greedy(&[2, 5, 3], &rows),
            Acceptance {
                num_accepted: 2,
                next_token: 1
            }
        );
        // No drafts: the next token is the plain greedy token.
        assert_eq!(
            accept_greedy(&[], &rows[..1]),
            Acceptance {
                num_accepted: 0,
                next_token: 2
            }
        );
    }

    #[test]
    fn greedy_ties_resolve_to_the_lowest_id() {
        let row = [0.0, 3.0, 3.0, 1.0];
        assert_eq!(
            accept_greedy(&[2], &[&row, &row]),
            Acceptance {
                num_accepted: 0,
                next_token: 1
            }
        );
        assert_eq!(
            accept_greedy(&[1], &[&row, &row]),
            Acceptance {
                num_accepted: 1,
                next_token: 1
            }
        );
    }

    #[test]
    fn random_never_accepts_a_token_the_target_excludes() {
        let draft = vec![vec![0.5, 0.5, 0.0], vec![0.5, 0.5, 0.0]];
        let target = vec![
            vec![0.0, 0.2, 0.8],
            vec![0.0, 0.2, 0.8],
            vec![1.0, 0.0, 0.0],
        ];
        let mut rng = SeqRng::new(Some(5));
        for _ in 0..500 {
            let a = accept_random(&[0, 1], &draft, &target, &mut rng);
            assert_eq!(a.num_accepted, 0);
            assert_ne!(a.next_token, 0);
        }
    }

    #[test]
    fn random_accepts_everything_when_draft_equals_target() {
        let p = vec![0.1, 0.6, 0.3];
        let draft = vec![p.clone(), p.clone()];
        let target = vec![p.clone(), p.clone(), vec![0.0, 0.0, 1.0]];
        let mut rng = SeqRng::new(Some(9));
        for _ in 0..500 {
            assert_eq!(
                accept_random(&[1, 0], &draft, &target, &mut rng),
                Acceptance {
                    num_accepted: 2,
                    next_token: 2
                }
            );
        }
    }

    #[test]
    fn random_with_one_hot_rows_acts_like_greedy() {
        let logits = [[0.0f32, 2.0, 1.0], [3.0, 0.0, 1.0], [0.0, 0.0, 5.0]];
        let greedy = SamplingParams::greedy(1);
        let target: Vec<Vec<f32>> = logits.iter().map(|l| sampling_probs(l, &greedy)).collect();
        let draft = vec![target[0].clone(), vec![0.0, 1.0, 0.0]];
        let rows: Vec<&[f32]> = logits.iter().map(|l| l.as_slice()).collect();
        let mut rng = SeqRng::new(Some(1));
        assert_eq!(
            accept_random(&[1, 1], &draft, &target, &mut rng),
            accept_greedy(&[1, 1], &rows)
        );
    }

    /// A random distribution over `VOCAB` tokens. Weights lie in [0.2, 2.2],
    /// so every probability is at least 0.2 / (8 * 2.2) > 1%: each expected
    /// chi-square count is in the hundreds.
    fn random_distribution(rng: &mut SeqRng) -> Vec<f32> {
        let w: Vec<f32> = (0..VOCAB)
            .map(|_| 0.2 + rng.uniform() * rng.uniform() * 2.0)
            .collect();
        let s: f32 = w.iter().sum();
        w.iter().map(|x| x / s).collect()
    }

    /// Pearson's statistic of `counts` against the distribution `p`.
    fn chi_square(counts: &[u64], p: &[f32]) -> f64 {
        let n: u64 = counts.iter().sum();
        counts
            .iter()
            .zip(p)
            .map(|(&c, &p)| {
                let expected = n as f64 * f64::from(p);
                (c as f64 - expected).powi(2) / expected
            })
            .sum()
    }

    /// The chi-square value a correct sampler exceeds with probability 0.001.
    fn critical_value() -> f64 {
        ChiSquared::new((VOCAB - 1) as f64)
            .map(|d| d.inverse_cdf(0.999))
            .unwrap_or(f64::NAN)
    }

    const TRIALS: usize = 40_000;

    /// Counts of the first emitted token over `TRIALS` verifies of `k`
    /// drafts, each drawn from its draft row, with `rule` deciding.
    fn first_token_counts(
        draft: &[Vec<f32>],
        seed: u64,
        rule: impl Fn(&[TokenId], &mut SeqRng) -> Acceptance,
    ) -> Vec<u64> {
        let mut draw_rng = SeqRng::new(Some(seed));
        let mut accept_rng = SeqRng::new(Some(seed ^ 0x9e37_79b9_7f4a_7c15));
        let mut counts = vec![0u64; VOCAB];
        for _ in 0..TRIALS {
            let drafts: Vec<TokenId> = draft
                .iter()
                .map(|p| sample_from_probs(p, &mut draw_rng))
                .collect();
            let a = rule(&drafts, &mut accept_rng);
            let first = if a.num_accepted > 0 {
                drafts[0]
            } else {
                a.next_token
            };
            counts[first as usize] += 1;
        }
        counts
    }

    /// Draft and target rows for `k` drafts, from a fixed seed.
    fn distributions(k: usize, seed: u64) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
        let mut rng = SeqRng::new(Some(seed));
        let draft = (0..k).map(|_| random_distribution(&mut rng)).collect();
        let target = (0..=k).map(|_| random_distribution(&mut rng)).collect();
        (draft, target)
    }

    #[test]
    fn random_acceptance_is_lossless_for_the_first_token() {
        let critical = critical_value();
        assert!(
            (critical - 24.32).abs() < 0.01,
            "chi2(7) 0.999 quantile is 24.32, got {critical}"
        );
        for (k, seed) in [(1usize, 11u64), (3, 12), (4, 13), (1, 14), (2, 15)] {
            let (draft, target) = distributions(k, seed);
            let counts = first_token_counts(&draft, seed, |drafts, rng| {
                accept_random(drafts, &draft, &target, rng)
            });
            let stat = chi_square(&counts, &target[0]);
            eprintln!("k={k} seed={seed}: chi2 {stat:.2} (critical {critical:.2})");
            assert!(
                stat < critical,
                "k={k} seed={seed}: chi2 {stat:.1} >= {critical:.1}, counts {counts:?}"
            );
        }
    }

    #[test]
    fn bonus_token_follows_the_last_target_row() {
        let (draft, target) = distributions(1, 21);
        let mut draw_rng = SeqRng::new(Some(1));
        let mut rng = SeqRng::new(Some(2));
        let mut counts = vec![0u64; VOCAB];
        for _ in 0..TRIALS {
            let d = sample_from_probs(&draft[0], &mut draw_rng);
            let a = accept_random(&[d], &draft, &target, &mut rng);
            if a.num_accepted == 1 {
                counts[a.next_token as usize] += 1;
            }
        }
        assert!(counts.iter().sum::<u64>() > TRIALS as u64 / 4);
        let stat = chi_square(&counts, &target[1]);
        assert!(stat < critical_value(), "chi2 {stat:.1}, counts {counts:?}");
    }

    /// The same test has the power to catch wrong rules.
    #[test]
    fn the_chi_square_test_rejects_wrong_acceptance_rules() {
        let critical = critical_value();
        let (draft, target) = distributions(1, 11);
        // Always accepting reproduces the draft distribution.
        let always = first_token_counts(&draft, 11, |drafts, rng| Acceptance {
            num_accepted: drafts.len(),
            next_token: sample_from_probs(&target[drafts.len()], rng),
        });
        let stat = chi_square(&always, &target[0]);
        eprintln!("always-accept: chi2 {stat:.1}");
        assert!(
            stat > 10.0 * critical,
            "always-accept chi2 {stat:.1} should be far above {critical:.1}"
        );

        // A subtler bug: on rejection resample from the target instead of the residual.
        let no_residual = first_token_counts(&draft, 11, |drafts, rng| {
            let d = drafts[0] as usize;
            if rng.uniform() * draft[0][d] < target[0][d] {
                Acceptance {
                    num_accepted: 1,
                    next_token: sample_from_probs(&target[1], rng),
                }
            } else {
                Acceptance {
                    num_accepted: 0,
                    next_token: sample_from_probs(&target[0], rng),
                }
            }
        });
        let stat = chi_square(&no_residual, &target[0]);
        eprintln!("resample-from-target: chi2 {stat:.1}");
        assert!(
            stat > 10.0 * critical,
            "target-resampling chi2 {stat:.1} should be far above {critical:.1}"
        );
    }

    fn distribution_strategy() -> impl Strategy<Value = Vec<f32>> {
        prop::collection::vec(prop_oneof![1 => Just(0.0f32), 4 => 0.0f32..1.0], VOCAB).prop_map(
            |w| {
                let s: f32 = w.iter().sum();
                if s > 0.0 {
                    w.iter().map(|x| x / s).collect()
                } else {
                    vec![1.0 / VOCAB as f32; VOCAB]
                }
            },
        )
    }

    proptest! {
        #[test]
        fn random_acceptance_emits_only_tokens_the_target_allows(
            rows in prop::collection::vec((distribution_strategy(), distribution_strategy()), 1..5),
            last in distribution_strategy(),
            seed in any::<u64>(),
        ) {
            let mut rng = SeqRng::new(Some(seed));
            let draft: Vec<Vec<f32>> = rows.iter().map(|r| r.0.clone()).collect();
            let mut target: Vec<Vec<f32>> = rows.iter().map(|r| r.1.clone()).collect();
            target.push(last);
            let drafts: Vec<TokenId> = draft.iter().map(|p| sample_from_probs(p, &mut rng)).collect();
            let a = accept_random(&drafts, &draft, &target, &mut rng);
            prop_assert!(a.num_accepted <= drafts.len());
            for i in 0..a.num_accepted {
                prop_assert!(target[i][drafts[i] as usize] > 0.0);
            }
            prop_assert!(target[a.num_accepted][a.next_token as usize] > 0.0);
        }
    }
}
