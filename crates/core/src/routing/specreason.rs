//! SpecReason with the likelihood judge the project brief prescribes for small
//! models (which cannot follow SpecReason's 0-9 scoring prompt): the LLM
//! scores the SLM's finished step by its own mean token log-probability (one
//! prefill pass, no generation), mapped onto the 0-9 scale as
//! `9 * exp(mean logprob)`; below `tau` the LLM rewrites the step.

use super::{RoutingPolicy, StepJudge, StepStats};
use crate::RoutingParams;

pub struct Specreason;

impl RoutingPolicy for Specreason {
    fn step_judge(&self) -> StepJudge {
        StepJudge::LlmScore
    }

    fn rewrite_after_step(&self, params: &RoutingParams, stats: &StepStats) -> bool {
        stats.judge_score().is_some_and(|score| score < params.tau)
    }
}
