//! The policies that let the SLM write a whole step and judge it afterwards
//! from the SLM's own per-token statistics; a step judged poor is rewritten
//! by the LLM.

use super::{RoutingPolicy, StepJudge, StepStats};
use crate::RoutingParams;

/// Rewrite iff the step's mean token entropy `> tau` (nats).
pub struct StepEntropy;

impl RoutingPolicy for StepEntropy {
    fn step_judge(&self) -> StepJudge {
        StepJudge::SlmStats
    }

    fn rewrite_after_step(&self, params: &RoutingParams, stats: &StepStats) -> bool {
        stats.mean_entropy().is_some_and(|h| h > params.tau)
    }
}

/// Rewrite iff the SLM's perplexity of its own step, `exp(-mean logprob)`, `> tau`.
pub struct StepPpl;

impl RoutingPolicy for StepPpl {
    fn step_judge(&self) -> StepJudge {
        StepJudge::SlmStats
    }

    fn rewrite_after_step(&self, params: &RoutingParams, stats: &StepStats) -> bool {
        stats.perplexity().is_some_and(|ppl| ppl > params.tau)
    }
}
