//! The routing policies. Which model writes a step is decided either at the
//! step's start, after the SLM's glimpse ([`RoutingPolicy::route_after_glimpse`]),
//! or, for the policies that judge a finished SLM step, after it
//! ([`RoutingPolicy::rewrite_after_step`]).
//!
//! A policy is one type implementing [`RoutingPolicy`], in its own file, and
//! one registration: its [`Policy`] variant (the name requests and configs
//! use) and its arm in [`Policy::rules`]. The scheduler and the engine ask
//! only these questions, never which policy it is.

mod fixed;
mod glimp;
mod glimp_llm_first;
mod random;
mod specreason;
mod step_judges;
mod step_stats;

pub use step_stats::StepStats;

use crate::params::Policy;
use crate::sampling::SeqRng;
use crate::{Model, RoutingParams};

/// How a step the SLM finished is judged before it is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepJudge {
    /// It is kept as written.
    None,
    /// From the SLM's own statistics of the step (needs the SLM's full
    /// distribution at each of its tokens, so a local SLM).
    SlmStats,
    /// The LLM scores the step in a prefill pass first (needs a local LLM).
    LlmScore,
}

/// The questions the scheduler and the engine ask a routing policy.
pub trait RoutingPolicy: Sync {
    /// The model that opens a request's first step: the SLM, which glimpses
    /// (or, for the judging policies, writes), unless the policy says otherwise.
    fn initial_writer(&self) -> Model {
        Model::Slm
    }

    /// Who writes a step, decided at its start from `h_init`, the entropy of
    /// the SLM's distribution over the step's first token
    /// ([`crate::sampling::entropy`]): the SLM, unless the policy routes.
    fn route_after_glimpse(
        &self,
        _params: &RoutingParams,
        _h_init: f32,
        _rng: &mut SeqRng,
    ) -> Model {
        Model::Slm
    }

    /// Whether a glimpse may hand the step to the LLM, so a local LLM may
    /// catch up beside it (`RowKind::Shadow`) and start the step at once.
    fn glimpse_may_hand_to_llm(&self) -> bool {
        false
    }

    /// How a step the SLM finished is judged.
    fn step_judge(&self) -> StepJudge {
        StepJudge::None
    }

    /// Whether the SLM writes whole steps that are judged afterwards (their
    /// text is held back until then).
    fn judges_after_step(&self) -> bool {
        self.step_judge() != StepJudge::None
    }

    /// Whether the LLM rewrites the step the SLM just wrote, from the step's
    /// statistics; an empty step (nothing measured) is never rewritten.
    fn rewrite_after_step(&self, _params: &RoutingParams, _stats: &StepStats) -> bool {
        false
    }

    /// Who opens the step after one the LLM wrote: the SLM, whose glimpse
    /// decides again, unless the policy keeps the LLM.
    fn writer_after_llm_step(&self) -> Model {
        Model::Slm
    }
}

impl Policy {
    /// The policy's answers.
    pub fn rules(self) -> &'static dyn RoutingPolicy {
        match self {
            Policy::Glimp => &glimp::Glimp,
            Policy::GlimpLlmFirst => &glimp_llm_first::GlimpLlmFirst,
            Policy::Slm => &fixed::SlmOnly,
            Policy::Llm => &fixed::LlmOnly,
            Policy::Random => &random::Random,
            Policy::StepEntropy => &step_judges::StepEntropy,
            Policy::StepPpl => &step_judges::StepPpl,
            Policy::Specreason => &specreason::Specreason,
        }
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

    fn route(policy: Policy, tau: f32, h_init: f32, rng: &mut SeqRng) -> Model {
        policy
            .rules()
            .route_after_glimpse(&params(policy, tau), h_init, rng)
    }

    fn rewrites(policy: Policy, tau: f32, stats: &StepStats) -> bool {
        policy
            .rules()
            .rewrite_after_step(&params(policy, tau), stats)
    }

    const ALL: [Policy; 8] = [
        Policy::Glimp,
        Policy::GlimpLlmFirst,
        Policy::Slm,
        Policy::Llm,
        Policy::Random,
        Policy::StepEntropy,
        Policy::StepPpl,
        Policy::Specreason,
    ];

    #[test]
    fn what_each_policy_answers_the_scheduler_and_the_engine() {
        use Model::{Llm, Slm};
        use StepJudge::{LlmScore, SlmStats};
        // (policy, initial writer, glimpse may hand the step to the LLM, judge,
        // writer after an LLM step)
        let expected = [
            (Policy::Glimp, Slm, true, StepJudge::None, Slm),
            (Policy::GlimpLlmFirst, Llm, true, StepJudge::None, Slm),
            (Policy::Slm, Slm, false, StepJudge::None, Slm),
            (Policy::Llm, Llm, false, StepJudge::None, Llm),
            (Policy::Random, Slm, true, StepJudge::None, Slm),
            (Policy::StepEntropy, Slm, false, SlmStats, Slm),
            (Policy::StepPpl, Slm, false, SlmStats, Slm),
            (Policy::Specreason, Slm, false, LlmScore, Slm),
        ];
        assert_eq!(expected.len(), ALL.len(), "every policy is in the table");
        for (policy, first, hands, judge, after_llm) in expected {
            let rules = policy.rules();
            assert_eq!(rules.initial_writer(), first, "{policy:?}");
            assert_eq!(rules.glimpse_may_hand_to_llm(), hands, "{policy:?}");
            assert_eq!(rules.step_judge(), judge, "{policy:?}");
            assert_eq!(rules.judges_after_step(), judge != StepJudge::None);
            assert_eq!(rules.writer_after_llm_step(), after_llm, "{policy:?}");
        }
    }

    #[test]
    fn glimp_compares_entropy_with_tau() {
        let mut rng = SeqRng::new(Some(0));
        for policy in [Policy::Glimp, Policy::GlimpLlmFirst] {
            assert_eq!(route(policy, 1.0, 1.5, &mut rng), Model::Llm);
            assert_eq!(route(policy, 1.0, 1.0, &mut rng), Model::Slm);
            assert_eq!(route(policy, 1.0, 0.2, &mut rng), Model::Slm);
            assert_eq!(route(policy, 1.0, f32::NAN, &mut rng), Model::Slm);
        }
    }

    #[test]
    fn fixed_and_judging_policies_ignore_the_glimpse() {
        let mut rng = SeqRng::new(Some(0));
        for h in [0.0, 5.0, 100.0] {
            assert_eq!(route(Policy::Slm, 0.0, h, &mut rng), Model::Slm);
            assert_eq!(route(Policy::Llm, 9.0, h, &mut rng), Model::Llm);
            for judge in [Policy::StepEntropy, Policy::StepPpl, Policy::Specreason] {
                assert_eq!(route(judge, -1.0, h, &mut rng), Model::Slm);
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
                .filter(|_| p.policy.rules().route_after_glimpse(&p, 0.0, &mut rng) == Model::Llm)
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
    fn judging_policies_rewrite_against_tau() {
        let mut s = StepStats::new();
        s.push_token(2.0, -1.0); // entropy 2, ppl e
        s.push_judge_logprob(-(2f32.ln())); // score 4.5
        assert!(rewrites(Policy::StepEntropy, 1.5, &s));
        assert!(!rewrites(Policy::StepEntropy, 2.5, &s));
        assert!(rewrites(Policy::StepPpl, 2.0, &s));
        assert!(!rewrites(Policy::StepPpl, 3.0, &s));
        assert!(rewrites(Policy::Specreason, 5.0, &s));
        assert!(!rewrites(Policy::Specreason, 4.0, &s));
        for policy in [Policy::Glimp, Policy::Slm, Policy::Llm, Policy::Random] {
            assert!(!rewrites(policy, -100.0, &s));
        }
        // Nothing measured: never rewritten.
        for policy in ALL {
            assert!(!rewrites(policy, 5.0, &StepStats::new()));
        }
    }

    proptest! {
        #[test]
        fn glimp_infinite_tau_is_all_slm_or_all_llm(logits in prop::collection::vec(-50f32..50.0, 1..100)) {
            let h = crate::sampling::entropy(&logits);
            let mut rng = SeqRng::new(Some(0));
            prop_assert_eq!(route(Policy::Glimp, f32::INFINITY, h, &mut rng), Model::Slm);
            prop_assert_eq!(route(Policy::Glimp, f32::NEG_INFINITY, h, &mut rng), Model::Llm);
        }
    }
}
