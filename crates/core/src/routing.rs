//! The routing policies' decisions, as pure functions of numbers the engine
//! measured. Which model writes a step is decided either at the step's start
//! (after the SLM's glimpse, [`route_after_glimpse`]) or, for the policies
//! that judge a finished SLM step, after it ([`rewrite_after_step`]).
//!
//! `tau` for `glimp`: the LLM writes the step iff `H_init > tau` (nats, over
//! the full vocabulary). `tau = +inf` therefore sends every step to the SLM
//! and `tau = -inf` every step to the LLM, since `H_init` is always finite
//! and `>= 0`.

use crate::params::Policy;
use crate::sampling::SeqRng;
use crate::{Model, RoutingParams};

/// The model that opens a request's first step: the SLM glimpses (or, for
/// the judging policies, drafts) for every policy but `llm`.
pub fn initial_writer(params: &RoutingParams) -> Model {
    match params.policy {
        Policy::Llm => Model::Llm,
        _ => Model::Slm,
    }
}

/// Whether the step-start decision needs the SLM's glimpse entropy.
pub fn needs_glimpse(params: &RoutingParams) -> bool {
    params.policy == Policy::Glimp
}

/// Who writes a step, decided at its start from `h_init`, the entropy of the
/// SLM's distribution over the step's first token
/// ([`crate::sampling::entropy`]).
///
/// * `glimp`: the LLM iff `h_init > tau` (a NaN entropy keeps the SLM).
/// * `slm` / `llm`: always that model.
/// * `random`: the LLM with probability `random_p` (one draw from `rng`;
///   no other policy draws).
/// * `step-entropy`, `step-ppl`, `specreason`: the SLM; they judge the step
///   after it is written ([`rewrite_after_step`]).
pub fn route_after_glimpse(params: &RoutingParams, h_init: f32, rng: &mut SeqRng) -> Model {
    match params.policy {
        Policy::Glimp => {
            if h_init > params.tau {
                Model::Llm
            } else {
                Model::Slm
            }
        }
        Policy::Slm => Model::Slm,
        Policy::Llm => Model::Llm,
        Policy::Random => {
            if rng.uniform() < params.random_p {
                Model::Llm
            } else {
                Model::Slm
            }
        }
        Policy::StepEntropy | Policy::StepPpl | Policy::Specreason => Model::Slm,
    }
}

/// Statistics of one step written by the SLM, accumulated token by token, for
/// the policies that judge a step after it is written.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepStats {
    tokens: usize,
    entropy_sum: f64,
    logprob_sum: f64,
    judged_tokens: usize,
    judge_logprob_sum: f64,
}

impl StepStats {
    pub fn new() -> Self {
        Self::default()
    }

    /// One SLM token: the entropy of the SLM's raw distribution at that
    /// position and the SLM's raw log-probability of the token it sampled.
    pub fn push_token(&mut self, entropy: f32, logprob: f32) {
        self.tokens += 1;
        self.entropy_sum += f64::from(entropy);
        self.logprob_sum += f64::from(logprob);
    }

    /// The judge's (LLM's) raw log-probability of one of the step's tokens,
    /// from its prefill pass over the step (`specreason`).
    pub fn push_judge_logprob(&mut self, logprob: f32) {
        self.judged_tokens += 1;
        self.judge_logprob_sum += f64::from(logprob);
    }

    /// SLM tokens pushed.
    pub fn tokens(&self) -> usize {
        self.tokens
    }

    /// Mean per-token entropy of the SLM (nats); `None` for an empty step.
    pub fn mean_entropy(&self) -> Option<f32> {
        (self.tokens > 0).then(|| (self.entropy_sum / self.tokens as f64) as f32)
    }

    /// The SLM's perplexity of its own step, `exp(-mean logprob)`.
    pub fn perplexity(&self) -> Option<f32> {
        (self.tokens > 0).then(|| (-self.logprob_sum / self.tokens as f64).exp() as f32)
    }

    /// The likelihood judge's score on SpecReason's 0-9 scale:
    /// `9 * exp(mean judge logprob)`, i.e. 9 times the geometric mean of the
    /// LLM's probabilities of the step's tokens.
    pub fn judge_score(&self) -> Option<f32> {
        (self.judged_tokens > 0)
            .then(|| (9.0 * (self.judge_logprob_sum / self.judged_tokens as f64).exp()) as f32)
    }

    /// Forgets everything, for the next step.
    pub fn reset(&mut self) {
        *self = Self::default();
    }
}

/// Whether the LLM rewrites the step the SLM just wrote.
///
/// * `step-entropy`: mean token entropy `> tau` (nats).
/// * `step-ppl`: perplexity `exp(-mean logprob) > tau`.
/// * `specreason`: score `9 * exp(mean LLM logprob of the step) < tau`.
///   This is the likelihood judge the project brief prescribes for small
///   models, which cannot follow SpecReason's 0-9 scoring prompt: the LLM
///   scores the step by its own mean token log-probability (one prefill pass,
///   no generation), mapped onto the same 0-9 scale.
///
/// An empty step (nothing measured) is never rewritten; the other policies
/// never rewrite.
pub fn rewrite_after_step(params: &RoutingParams, stats: &StepStats) -> bool {
    match params.policy {
        Policy::StepEntropy => stats.mean_entropy().is_some_and(|h| h > params.tau),
        Policy::StepPpl => stats.perplexity().is_some_and(|ppl| ppl > params.tau),
        Policy::Specreason => stats.judge_score().is_some_and(|score| score < params.tau),
        Policy::Glimp | Policy::Slm | Policy::Llm | Policy::Random => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn params(policy: Policy, tau: f32) -> RoutingParams {
        RoutingParams {
            policy,
            tau,
            ..RoutingParams::default()
        }
    }

    const ALL: [Policy; 7] = [
        Policy::Glimp,
        Policy::Slm,
        Policy::Llm,
        Policy::Random,
        Policy::StepEntropy,
        Policy::StepPpl,
        Policy::Specreason,
    ];

    #[test]
    fn only_the_llm_policy_starts_with_the_llm() {
        for policy in ALL {
            let expect = if policy == Policy::Llm {
                Model::Llm
            } else {
                Model::Slm
            };
            assert_eq!(initial_writer(&params(policy, 1.0)), expect, "{policy:?}");
        }
        assert!(needs_glimpse(&params(Policy::Glimp, 1.0)));
        assert!(!needs_glimpse(&params(Policy::Random, 1.0)));
    }

    #[test]
    fn glimp_compares_entropy_with_tau() {
        let mut rng = SeqRng::new(Some(0));
        let p = params(Policy::Glimp, 1.0);
        assert_eq!(route_after_glimpse(&p, 1.5, &mut rng), Model::Llm);
        assert_eq!(route_after_glimpse(&p, 1.0, &mut rng), Model::Slm);
        assert_eq!(route_after_glimpse(&p, 0.2, &mut rng), Model::Slm);
        assert_eq!(route_after_glimpse(&p, f32::NAN, &mut rng), Model::Slm);
    }

    #[test]
    fn fixed_and_judging_policies_ignore_the_glimpse() {
        let mut rng = SeqRng::new(Some(0));
        for h in [0.0, 5.0, 100.0] {
            assert_eq!(
                route_after_glimpse(&params(Policy::Slm, 0.0), h, &mut rng),
                Model::Slm
            );
            assert_eq!(
                route_after_glimpse(&params(Policy::Llm, 9.0), h, &mut rng),
                Model::Llm
            );
            for judge in [Policy::StepEntropy, Policy::StepPpl, Policy::Specreason] {
                assert_eq!(
                    route_after_glimpse(&params(judge, -1.0), h, &mut rng),
                    Model::Slm
                );
            }
        }
    }

    #[test]
    fn random_sends_the_requested_share_to_the_llm() {
        let mut rng = SeqRng::new(Some(4));
        let n = 20_000;
        for random_p in [0.0f32, 0.3, 1.0] {
            let p = RoutingParams {
                policy: Policy::Random,
                random_p,
                ..RoutingParams::default()
            };
            let llm = (0..n)
                .filter(|_| route_after_glimpse(&p, 0.0, &mut rng) == Model::Llm)
                .count();
            let share = llm as f64 / n as f64;
            let sd = (f64::from(random_p) * (1.0 - f64::from(random_p)) / n as f64).sqrt();
            assert!(
                (share - f64::from(random_p)).abs() <= 4.0 * sd + 1e-12,
                "p={random_p} share={share}"
            );
        }
    }

    #[test]
    fn step_stats_means() {
        let mut s = StepStats::new();
        assert_eq!(
            (s.mean_entropy(), s.perplexity(), s.judge_score()),
            (None, None, None)
        );
        s.push_token(1.0, -1.0);
        s.push_token(3.0, -3.0);
        assert_eq!(s.tokens(), 2);
        assert!((s.mean_entropy().unwrap_or(f32::NAN) - 2.0).abs() < 1e-6);
        assert!((s.perplexity().unwrap_or(f32::NAN) - 2f32.exp()).abs() < 1e-5);
        s.push_judge_logprob(0.0);
        s.push_judge_logprob(-2f32.ln() * 2.0);
        // Geometric mean of probabilities 1 and 1/4 is 1/2.
        assert!((s.judge_score().unwrap_or(f32::NAN) - 4.5).abs() < 1e-5);
        s.reset();
        assert_eq!(s, StepStats::default());
    }

    #[test]
    fn judging_policies_rewrite_against_tau() {
        let mut s = StepStats::new();
        s.push_token(2.0, -1.0); // entropy 2, ppl e
        s.push_judge_logprob(-(2f32.ln())); // score 4.5
        assert!(rewrite_after_step(&params(Policy::StepEntropy, 1.5), &s));
        assert!(!rewrite_after_step(&params(Policy::StepEntropy, 2.5), &s));
        assert!(rewrite_after_step(&params(Policy::StepPpl, 2.0), &s));
        assert!(!rewrite_after_step(&params(Policy::StepPpl, 3.0), &s));
        assert!(rewrite_after_step(&params(Policy::Specreason, 5.0), &s));
        assert!(!rewrite_after_step(&params(Policy::Specreason, 4.0), &s));
        for policy in [Policy::Glimp, Policy::Slm, Policy::Llm, Policy::Random] {
            assert!(!rewrite_after_step(&params(policy, -100.0), &s));
        }
        // Nothing measured: never rewritten.
        for policy in ALL {
            assert!(!rewrite_after_step(&params(policy, 5.0), &StepStats::new()));
        }
    }

    proptest! {
        #[test]
        fn glimp_infinite_tau_is_all_slm_or_all_llm(logits in prop::collection::vec(-50f32..50.0, 1..100)) {
            let h = crate::sampling::entropy(&logits);
            let mut rng = SeqRng::new(Some(0));
            prop_assert_eq!(route_after_glimpse(&params(Policy::Glimp, f32::INFINITY), h, &mut rng), Model::Slm);
            prop_assert_eq!(route_after_glimpse(&params(Policy::Glimp, f32::NEG_INFINITY), h, &mut rng), Model::Llm);
        }
    }
}
