//! Where steps open and close: counting a step, rewriting a rejected one, and what
//! a token means for its request (stop, step end, answer).

use glimprouter_core::route_state::{Phase, RouteState};
use glimprouter_core::routing::StepJudge;
use glimprouter_core::scheduler::SeqOutcome;
use glimprouter_core::{Model, SeqId, TokenId};

use crate::request::{TokenVerdict, Written};

use super::EngineCore;

impl EngineCore {
    /// The request's routing state (owned by its scheduler sequence) as `out`,
    /// the outcome being built this iteration, would leave it.
    pub(super) fn route_after(&self, id: SeqId, out: &SeqOutcome) -> RouteState {
        self.sched.seq(id).map_or(RouteState::new(0), |seq| {
            seq.route.after(out, seq.writer, seq.prompt_len, seq.len())
        })
    }

    /// How tokens `writer` writes now land: the phase and the output before
    /// them, as `out` leaves them; of the output only the window the
    /// detokenizer still reads is copied, not all of it per token.
    pub(super) fn written<'a>(
        &self,
        id: SeqId,
        out: &SeqOutcome,
        tokens: &'a [TokenId],
        writer: Model,
    ) -> Written<'a> {
        let phase = self.route_after(id, out).phase;
        let output = self.sched.seq(id).map_or(&[][..], |s| s.output());
        let len = output.len() + out.appended.len();
        let start = self
            .requests
            .get(&id)
            .map_or(0, |s| s.text.decoder.window_start())
            .min(len);
        let mut window: Vec<TokenId> = output.get(start..).unwrap_or_default().to_vec();
        let from_appended = start.saturating_sub(output.len());
        window.extend_from_slice(&out.appended[from_appended..]);
        Written {
            tokens,
            writer,
            phase,
            window,
            window_start: start,
        }
    }

    /// Opens a step written by `writer` if the next token opens one and no
    /// glimpse in `out` opened it already.
    pub(super) fn open_step(&mut self, id: SeqId, writer: Model, out: &mut SeqOutcome) {
        let route = self.route_after(id, out);
        if !route.glimpse_next() {
            return;
        }
        let Some(state) = self.requests.get_mut(&id) else {
            return;
        };
        // A step the LLM may still rewrite is recorded once judged.
        if !(writer == Model::Slm && state.holds_steps_for_judging(route.phase)) {
            self.metrics.record_step(writer);
        }
        out.step_started = Some(writer);
        state.start_step_tracking(route.phase);
    }

    /// Discards the SLM's current step; the LLM writes it again.
    pub(super) fn rewrite_step(&mut self, id: SeqId, out: &mut SeqOutcome) {
        let Some(state) = self.requests.get_mut(&id) else {
            return;
        };
        // The engine's snapshot marks where the step began, in the text and
        // in the tokens alike.
        let step_start = state.prompt_len + state.rollback_step();
        state.pending_finish = None;
        self.metrics.record_step(Model::Llm);
        out.appended.clear();
        out.writer = None;
        out.rollback_to = Some(step_start);
        out.step_rewritten = true;
        out.route_to = Some(Model::Llm);
    }

    /// What tokens `writer` wrote mean for the request (see `settle_verdict`),
    /// then the end of thinking if they spent its budget.
    pub(super) fn apply_verdict(
        &mut self,
        id: SeqId,
        verdict: &TokenVerdict,
        writer: Model,
        out: &mut SeqOutcome,
    ) {
        self.settle_verdict(id, verdict, writer, out);
        self.end_thinking_past_budget(id, writer, out);
    }

    /// Past the request's `thinking_token_budget`, `writer` writes the end of
    /// thinking (the answer marker) as its next tokens and the answer model
    /// takes over. The budget is checked after each outcome's tokens, so a
    /// verify pass or a remote step may overshoot it by its own length.
    fn end_thinking_past_budget(&mut self, id: SeqId, writer: Model, out: &mut SeqOutcome) {
        let route = self.route_after(id, out);
        let Some(state) = self.requests.get(&id) else {
            return;
        };
        let (Some(budget), Some(marker)) = (
            state.routing.thinking_token_budget,
            state.routing.answer_marker.as_deref(),
        ) else {
            return;
        };
        let settled_otherwise = out.finished || out.request_judge || out.rollback_to.is_some();
        if settled_otherwise
            || route.phase != Phase::Reasoning
            || route.counters.output_tokens() < budget
        {
            return;
        }
        let Ok(forced) = self.tokenizer.encode(marker, false) else {
            return;
        };
        let written = self.written(id, out, &forced, writer);
        let Some(state) = self.requests.get_mut(&id) else {
            return;
        };
        let mut verdict = state.push_tokens(written, &[], &self.tokenizer, &self.metrics);
        out.appended.extend_from_slice(&forced[..verdict.kept]);
        out.writer = Some(writer);
        // However the text watcher read the marker's tokens, the thinking is over.
        if verdict.finish.is_none() {
            verdict.answer_started = true;
            verdict.step_end = false;
        }
        self.settle_verdict(id, &verdict, writer, out);
    }

    /// What tokens `writer` wrote mean for the request: its end (a judged
    /// SLM step is judged first), the answer phase, a step end.
    fn settle_verdict(
        &mut self,
        id: SeqId,
        verdict: &TokenVerdict,
        writer: Model,
        out: &mut SeqOutcome,
    ) {
        let route = self.route_after(id, out);
        let Some(state) = self.requests.get_mut(&id) else {
            return;
        };
        let rules = state.routing.policy.rules();
        if let Some((reason, stop)) = verdict.finish.clone() {
            // The SLM's last step is judged like any other before the request ends.
            if writer == Model::Slm && state.holds_steps_for_judging(route.phase) {
                match rules.step_judge() {
                    StepJudge::LlmScore => {
                        state.pending_finish = Some((reason, stop));
                        out.request_judge = true;
                        return;
                    }
                    StepJudge::SlmStats
                        if rules.rewrite_after_step(&state.routing, &state.step_stats) =>
                    {
                        self.rewrite_step(id, out);
                        return;
                    }
                    _ => {}
                }
            }
            out.finished = true;
            state.finish(reason, stop, route.counters, &self.metrics);
            return;
        }
        let answer_model = state.routing.answer_model;
        let reasoning = route.phase == Phase::Reasoning;
        let step_budget_spent =
            (state.routing.max_steps).is_some_and(|m| route.counters.steps >= m);
        if verdict.answer_started || (verdict.step_end && step_budget_spent && reasoning) {
            state.release_held(&self.metrics);
            state.step_snapshot = None;
            out.enter_answer = true;
            if writer != answer_model {
                out.route_to = Some(answer_model);
            }
            return;
        }
        if !verdict.step_end {
            return;
        }
        out.step_ended = true;
        match writer {
            Model::Slm => match rules.step_judge() {
                StepJudge::LlmScore => out.request_judge = true,
                StepJudge::SlmStats => {
                    if rules.rewrite_after_step(&state.routing, &state.step_stats) {
                        self.rewrite_step(id, out);
                    } else {
                        state.release_held(&self.metrics);
                        state.step_snapshot = None;
                        self.metrics.record_step(Model::Slm);
                    }
                }
                StepJudge::None => {}
            },
            Model::Llm => {
                let next = rules.writer_after_llm_step();
                if next != Model::Llm {
                    out.route_to = Some(next);
                }
            }
        }
    }
}
