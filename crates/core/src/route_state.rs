//! Where a request stands in its reasoning, as routing sees it: the phase,
//! whether the next token opens a step, where the current step began, and
//! the routing counters. A [`crate::sequence::Sequence`] owns it and the
//! scheduler changes it only by applying the engine's [`SeqOutcome`]s; the
//! engine reads it, and reads the state an outcome it is building would
//! leave with [`RouteState::after`], the same arithmetic.

use crate::scheduler::SeqOutcome;
use crate::Model;

/// Reasoning steps are routed; the answer after the end-of-reasoning marker
/// is written by one model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Reasoning,
    Answer,
}

/// Routing counters of one request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RouteCounters {
    pub steps: usize,
    pub llm_steps: usize,
    pub slm_tokens: usize,
    pub llm_tokens: usize,
    pub draft_tokens: usize,
    pub accepted_draft_tokens: usize,
}

impl RouteCounters {
    /// The output's length: every output token was written by one of the two
    /// models and is counted for it, and the tokens of a rewritten step are
    /// taken off the SLM's count when they are rolled back.
    pub fn output_tokens(&self) -> usize {
        self.slm_tokens + self.llm_tokens
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteState {
    pub phase: Phase,
    /// The next token opens a reasoning step.
    pub at_step_start: bool,
    /// Index in the sequence's tokens where the current step began.
    pub step_start: usize,
    pub counters: RouteCounters,
}

impl RouteState {
    /// A request about to write its first step after `prompt_len` tokens.
    pub fn new(prompt_len: usize) -> Self {
        Self {
            phase: Phase::Reasoning,
            at_step_start: true,
            step_start: prompt_len,
            counters: RouteCounters::default(),
        }
    }

    /// The SLM's next logits open a step (a glimpse, when it writes).
    pub fn glimpse_next(&self) -> bool {
        self.at_step_start && self.phase == Phase::Reasoning
    }

    /// Applies `out` to a sequence of `len` tokens (`prompt_len` of them the
    /// prompt) whose current step `writer` writes; in [`SeqOutcome`]'s field
    /// order, as the scheduler applies the rest of it.
    pub fn apply(&mut self, out: &SeqOutcome, writer: Model, prompt_len: usize, len: usize) {
        let c = &mut self.counters;
        let mut len = len;
        if let Some(to) = out.rollback_to {
            let to = to.clamp(prompt_len, len.max(prompt_len));
            let removed = len - to;
            match writer {
                Model::Slm => c.slm_tokens = c.slm_tokens.saturating_sub(removed),
                Model::Llm => c.llm_tokens = c.llm_tokens.saturating_sub(removed),
            }
            len = to;
        }
        if let Some((drafted, accepted)) = out.drafts {
            c.draft_tokens += drafted;
            c.accepted_draft_tokens += accepted.min(drafted);
        }
        match out.writer.unwrap_or(writer) {
            Model::Slm => c.slm_tokens += out.appended.len(),
            Model::Llm => c.llm_tokens += out.appended.len(),
        }
        len += out.appended.len();
        if let Some(model) = out.step_started {
            c.steps += 1;
            if model == Model::Llm {
                c.llm_steps += 1;
            }
            self.step_start = len - out.appended.len().min(1);
            self.at_step_start = false;
        }
        if out.step_ended {
            self.at_step_start = true;
        }
        if out.step_rewritten {
            c.llm_steps += 1;
            self.at_step_start = false;
        }
        if out.enter_answer {
            self.phase = Phase::Answer;
        }
    }

    /// The state `out` would leave (see [`RouteState::apply`]).
    pub fn after(&self, out: &SeqOutcome, writer: Model, prompt_len: usize, len: usize) -> Self {
        let mut next = *self;
        next.apply(out, writer, prompt_len, len);
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out() -> SeqOutcome {
        SeqOutcome::default()
    }

    #[test]
    fn a_glimpsed_step_that_ends_at_once_leaves_the_next_token_at_a_step_start() {
        let s = RouteState::new(4);
        assert!(s.glimpse_next());
        let o = SeqOutcome {
            appended: vec![9],
            writer: Some(Model::Slm),
            step_started: Some(Model::Slm),
            step_ended: true,
            ..out()
        };
        let next = s.after(&o, Model::Slm, 4, 4);
        assert_eq!((next.step_start, next.at_step_start), (4, true));
        assert_eq!((next.counters.steps, next.counters.slm_tokens), (1, 1));
        // A glimpse that hands the step to the LLM drops its token: the step
        // starts at the current end and the next token is not a step start.
        let o = SeqOutcome {
            step_started: Some(Model::Llm),
            route_to: Some(Model::Llm),
            ..out()
        };
        let next = s.after(&o, Model::Slm, 4, 4);
        assert_eq!((next.step_start, next.at_step_start), (4, false));
        assert_eq!(next.counters.llm_steps, 1);
    }

    #[test]
    fn a_rewritten_step_rolls_back_the_slm_s_tokens_and_counts_for_the_llm() {
        let mut s = RouteState::new(2);
        let written = SeqOutcome {
            appended: vec![5, 6, 7],
            writer: Some(Model::Slm),
            step_started: Some(Model::Slm),
            ..out()
        };
        s.apply(&written, Model::Slm, 2, 2);
        let rewrite = SeqOutcome {
            rollback_to: Some(2),
            step_rewritten: true,
            step_ended: true,
            route_to: Some(Model::Llm),
            ..out()
        };
        s.apply(&rewrite, Model::Slm, 2, 5);
        assert_eq!(s.counters.slm_tokens, 0);
        assert_eq!((s.counters.steps, s.counters.llm_steps), (1, 1));
        assert!(!s.at_step_start, "the LLM writes the same step again");
        let answer = SeqOutcome {
            enter_answer: true,
            step_ended: true,
            ..out()
        };
        s.apply(&answer, Model::Llm, 2, 2);
        assert!(s.at_step_start && !s.glimpse_next());
    }
}
