//! Reading a forward's logits into each sequence's outcome for the scheduler:
//! glimpses and routing, plain tokens, verified drafts, judged steps.

use std::borrow::Cow;

use glimprouter_core::logits_processors::{process_logits, TokenHistory};
use glimprouter_core::routing::StepStats;
use glimprouter_core::sampling::{entropy, sample, sampling_probs, token_logprob};
use glimprouter_core::scheduler::SeqOutcome;
use glimprouter_core::spec::{accept_greedy, accept_random};
use glimprouter_core::{BatchRow, Model, SeqId, TokenId};

use super::EngineCore;

impl EngineCore {
    /// `logits` as the request's logits processors and penalties leave them for
    /// the position after its finalised tokens and then `pending` (drafts).
    pub(super) fn processed_logits<'a>(
        &self,
        id: SeqId,
        logits: &'a [f32],
        pending: &[TokenId],
    ) -> Cow<'a, [f32]> {
        let (Some(state), Some(seq)) = (self.requests.get(&id), self.sched.seq(id)) else {
            return Cow::Borrowed(logits);
        };
        let history = TokenHistory {
            prompt: &seq.tokens[..seq.prompt_len],
            output: &seq.tokens[seq.prompt_len..],
            pending,
        };
        process_logits(logits, &state.sampling, &state.eos, &history)
    }

    /// A token of the SLM: a glimpse at a step start, else the next token of
    /// its step. `shadow`: the LLM's logits for the same position, computed
    /// beside the glimpse; when the glimpse hands the step to the LLM, the
    /// LLM's first token is drawn from them now rather than an iteration later.
    pub(super) fn on_slm_token(
        &mut self,
        id: SeqId,
        logits: &[f32],
        shadow: Option<&[f32]>,
    ) -> Option<SeqOutcome> {
        if !self.requests.contains_key(&id) {
            return None;
        }
        let mut out = SeqOutcome {
            seq_id: id,
            ..SeqOutcome::default()
        };
        let route = self.route_after(id, &out);
        if route.glimpse_next() && self.route_glimpse(id, entropy(logits), &mut out) == Model::Llm {
            if let Some(llm_logits) = shadow {
                self.write_sampled_token(id, Model::Llm, llm_logits, &mut out);
            }
            return Some(out);
        }
        self.write_sampled_token(id, Model::Slm, logits, &mut out);
        Some(out)
    }

    /// Routes the step a glimpse opens by its H_init. When the LLM gets it,
    /// the glimpsed token is dropped and the step is counted as the LLM's.
    pub(super) fn route_glimpse(&mut self, id: SeqId, h: f32, out: &mut SeqOutcome) -> Model {
        let Some(state) = self.requests.get_mut(&id) else {
            return Model::Slm;
        };
        state.h_init.push(h);
        self.metrics.h_init.observe(h as f64);
        let routing = &state.routing;
        let dest = routing
            .policy
            .rules()
            .route_after_glimpse(routing, h, &mut state.rng);
        if dest == Model::Llm {
            self.metrics.record_step(Model::Llm);
            out.step_started = Some(Model::Llm);
            out.route_to = Some(Model::Llm);
        }
        dest
    }

    /// A plain LLM decode (or the last row of a catch-up).
    pub(super) fn on_llm_token(&mut self, id: SeqId, logits: &[f32]) -> Option<SeqOutcome> {
        let mut out = SeqOutcome {
            seq_id: id,
            ..SeqOutcome::default()
        };
        self.write_sampled_token(id, Model::Llm, logits, &mut out);
        Some(out)
    }

    /// `writer` opens a step if one is due, samples its next token from
    /// `logits` through the request's logits processors, and settles what
    /// the token means, all into `out`.
    fn write_sampled_token(
        &mut self,
        id: SeqId,
        writer: Model,
        logits: &[f32],
        out: &mut SeqOutcome,
    ) {
        self.open_step(id, writer, out);
        let processed = self.processed_logits(id, logits, &[]);
        let phase = self.route_after(id, out).phase;
        let Some(state) = self.requests.get_mut(&id) else {
            return;
        };
        let token = [sample(&processed, &state.sampling, &mut state.rng)];
        // The judges score an SLM step by its raw distribution at each token.
        if writer == Model::Slm && state.holds_steps_for_judging(phase) {
            state
                .step_stats
                .push_token(entropy(logits), token_logprob(logits, token[0]));
        }
        let written = self.written(id, out, &token, writer);
        let Some(state) = self.requests.get_mut(&id) else {
            return;
        };
        let verdict = state.push_tokens(written, &[logits], &self.tokenizer, &self.metrics);
        out.appended = token.to_vec();
        out.writer = Some(writer);
        self.apply_verdict(id, &verdict, writer, out);
    }

    /// The LLM scored k drafts: accept a prefix plus one token of its own.
    pub(super) fn on_verify(
        &mut self,
        id: SeqId,
        drafts: &[TokenId],
        draft_probs: &[Vec<f32>],
        rows: &[&[f32]],
        k: usize,
    ) -> Option<SeqOutcome> {
        let mut out = SeqOutcome {
            seq_id: id,
            ..SeqOutcome::default()
        };
        self.open_step(id, Model::Llm, &mut out);
        // Row i scores the position after drafts[..i].
        let processed: Vec<Cow<[f32]>> = rows
            .iter()
            .enumerate()
            .map(|(i, r)| self.processed_logits(id, r, &drafts[..i.min(drafts.len())]))
            .collect();
        let state = self.requests.get_mut(&id)?;
        let acceptance = if state.sampling.is_greedy() {
            let rows: Vec<&[f32]> = processed.iter().map(|r| &r[..]).collect();
            accept_greedy(drafts, &rows)
        } else {
            let target: Vec<Vec<f32>> = processed
                .iter()
                .map(|r| sampling_probs(r, &state.sampling))
                .collect();
            accept_random(drafts, draft_probs, &target, &mut state.rng)
        };
        let a = acceptance.num_accepted.min(k);
        let mut tokens = drafts[..a].to_vec();
        tokens.push(acceptance.next_token);
        self.metrics.spec_drafts.inc();
        self.metrics.spec_draft_tokens.inc_by(k as u64);
        self.metrics.spec_accepted_tokens.inc_by(a as u64);
        let written = self.written(id, &out, &tokens, Model::Llm);
        let state = self.requests.get_mut(&id)?;
        let verdict = state.push_tokens(
            written,
            &rows[..tokens.len()],
            &self.tokenizer,
            &self.metrics,
        );
        // KV stays valid for the drafts that were both accepted and kept.
        out.drafts = Some((k, a.min(verdict.kept)));
        out.appended = tokens[..verdict.kept].to_vec();
        out.writer = Some(Model::Llm);
        self.apply_verdict(id, &verdict, Model::Llm, &mut out);
        Some(out)
    }

    /// SpecReason's judge: the LLM's mean log-probability of the SLM's step.
    pub(super) fn on_judge(&mut self, row: &BatchRow, rows: &[&[f32]]) -> Option<SeqOutcome> {
        let id = row.seq_id;
        let seq = self.sched.seq(id)?;
        let (step_start, len) = (seq.route.step_start, seq.tokens.len());
        let mut judge = StepStats::new();
        for p in step_start..len {
            // Logits at position p - 1 predict the token at p.
            if let Some(r) = (p - 1).checked_sub(row.start_pos).and_then(|i| rows.get(i)) {
                judge.push_judge_logprob(token_logprob(r, seq.tokens[p]));
            }
        }
        let mut out = SeqOutcome {
            seq_id: id,
            ..SeqOutcome::default()
        };
        let counters = self.route_after(id, &out).counters;
        let state = self.requests.get_mut(&id)?;
        if state
            .routing
            .policy
            .rules()
            .rewrite_after_step(&state.routing, &judge)
        {
            self.rewrite_step(id, &mut out);
        } else {
            state.release_held(&self.metrics);
            state.step_snapshot = None;
            self.metrics.record_step(Model::Slm);
            if let Some((reason, stop)) = state.pending_finish.take() {
                out.finished = true;
                state.finish(reason, stop, counters, &self.metrics);
            }
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use glimprouter_core::RoutingParams;

    use super::super::testing::{add_request, apply, core, peaked};
    use super::*;

    fn glimp(tau: f32) -> RoutingParams {
        RoutingParams {
            tau,
            ..RoutingParams::default()
        }
    }

    #[test]
    fn a_confident_glimpse_keeps_the_step_and_an_unsure_one_hands_it_to_the_llm() {
        let mut core = core();
        let five = core.tokenizer.token_id("Ġ5").expect("a digit token");
        let _events = (
            add_request(&mut core, 1, glimp(0.8)),
            add_request(&mut core, 2, glimp(0.8)),
        );
        // H_init about 0: the SLM writes the step, starting with its token.
        let out = core.on_slm_token(1, &peaked(&core, five), None).unwrap();
        assert_eq!(out.step_started, Some(Model::Slm));
        assert_eq!(out.appended, vec![five]);
        assert_eq!(out.route_to, None);
        // Uniform: H_init = ln(vocab) > tau; the LLM gets the step and the glimpsed
        // token is dropped.
        let flat = vec![0f32; core.tokenizer.vocab_size()];
        let out = core.on_slm_token(2, &flat, None).unwrap();
        assert_eq!(out.step_started, Some(Model::Llm));
        assert_eq!(out.route_to, Some(Model::Llm));
        assert!(out.appended.is_empty());
        assert_eq!(core.route_after(2, &out).counters.llm_steps, 1);
        assert_eq!(core.requests[&2].h_init.len(), 1);
        // With the LLM's logits beside the glimpse, its first token comes at once.
        let _e = add_request(&mut core, 3, glimp(0.8));
        let out = core
            .on_slm_token(3, &flat, Some(&peaked(&core, five)))
            .unwrap();
        assert_eq!(
            (out.appended.clone(), out.writer),
            (vec![five], Some(Model::Llm))
        );
    }

    #[test]
    fn inside_a_step_the_slm_and_the_llm_append_their_greedy_token() {
        let mut core = core();
        let (five, six) = (
            core.tokenizer.token_id("Ġ5").unwrap(),
            core.tokenizer.token_id("Ġ6").unwrap(),
        );
        let _e = add_request(&mut core, 1, glimp(0.8));
        let out = core.on_slm_token(1, &peaked(&core, five), None).unwrap();
        apply(&mut core, out);
        // Mid-step, even a flat distribution is not a glimpse: no routing.
        let mut flat = vec![0f32; core.tokenizer.vocab_size()];
        flat[six as usize] = 0.5;
        let out = core.on_slm_token(1, &flat, None).unwrap();
        assert_eq!(
            (out.appended, out.route_to, out.step_started),
            (vec![six], None, None)
        );
        let out = core.on_llm_token(1, &peaked(&core, five)).unwrap();
        assert_eq!((out.appended, out.writer), (vec![five], Some(Model::Llm)));
    }
}
