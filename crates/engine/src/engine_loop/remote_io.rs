//! Steps written by remote tiers: sending calls and applying their replies.

use glimprouter_core::route_state::Phase;
use glimprouter_core::sampling::entropy_from_top_logprobs;
use glimprouter_core::scheduler::SeqOutcome;
use glimprouter_core::{Model, SeqId, TokenId};

use crate::api::EngineError;
use crate::remote::{RemoteFinish, RemoteReply, StepCall, StepText};

use super::EngineCore;

/// Top log-probabilities a remote SLM's glimpse asks for (the most OpenAI's
/// API and vLLM's default `max_logprobs` allow).
const GLIMPSE_TOP_LOGPROBS: usize = 20;

impl EngineCore {
    /// Sends every sequence whose step a remote model now writes.
    pub(super) fn dispatch_remote(&mut self) {
        if self.remote.is_none() {
            return;
        }
        for id in self.sched.take_remote_ready() {
            self.mark_scheduled(id);
            let remote = self.remote.as_mut().expect("remote dispatcher");
            let (Some(seq), Some(state)) = (self.sched.seq(id), self.requests.get(&id)) else {
                continue;
            };
            let mut stop = state.sampling.stop.clone();
            if seq.route.phase == Phase::Reasoning && !state.routing.delimiter.is_empty() {
                stop.insert(0, state.routing.delimiter.clone());
            }
            // A remote SLM opening a step glimpses first: one token and the
            // top log-probabilities H_init is estimated from.
            let glimpse = seq.writer == Model::Slm && seq.route.glimpse_next();
            let call = StepCall {
                seq_id: id,
                context: seq.tokens.clone(),
                max_tokens: if glimpse {
                    1
                } else {
                    seq.remaining_tokens().max(1)
                },
                stop,
                sampling: state.sampling.clone(),
                step_index: seq.route.counters.steps,
                glimpse_logprobs: glimpse.then_some(GLIMPSE_TOP_LOGPROBS),
            };
            remote.dispatch(seq.writer, call);
        }
    }

    /// Applies the remote replies that arrived: a written step joins the
    /// sequence like tokens of a local model; a failure ends the request
    /// with a 502 and frees everything it held.
    pub(super) fn apply_remote_replies(&mut self) {
        let Some(remote) = self.remote.as_mut() else {
            return;
        };
        let replies: Vec<RemoteReply> = remote.replies.try_iter().collect();
        let mut outcomes = Vec::new();
        for reply in replies {
            let remote = self.remote.as_mut().expect("remote dispatcher");
            if !remote.settle(reply.seq_id) || !self.requests.contains_key(&reply.seq_id) {
                continue; // cancelled meanwhile
            }
            let Some(writer) = self.sched.seq(reply.seq_id).map(|s| s.writer) else {
                continue;
            };
            let step = reply.result.map_err(|e| e.to_string()).and_then(|step| {
                let tokens = self.remote_tokens(reply.seq_id, &step)?;
                Ok((tokens, step.top_logprobs))
            });
            match step {
                Ok((tokens, top)) if reply.glimpse => {
                    let Some(top) = top.filter(|t| !t.is_empty()) else {
                        self.fail_request(
                            reply.seq_id,
                            EngineError::Upstream {
                                model: writer.as_str(),
                                message: "its glimpse came back without logprobs".into(),
                            },
                        );
                        continue;
                    };
                    outcomes.extend(self.on_remote_glimpse(reply.seq_id, &tokens, &top));
                }
                Ok((tokens, _)) => {
                    outcomes.extend(self.on_remote_step(reply.seq_id, writer, &tokens))
                }
                Err(message) => {
                    tracing::warn!(seq = reply.seq_id, %message, "remote step failed");
                    self.fail_request(
                        reply.seq_id,
                        EngineError::Upstream {
                            model: writer.as_str(),
                            message,
                        },
                    );
                }
            }
        }
        self.apply_outcomes(outcomes);
    }

    /// The tokens a remote step adds: the ids it returned, or else its text
    /// re-encoded plus the stop string it cut, or EOS.
    pub(super) fn remote_tokens(&self, id: SeqId, step: &StepText) -> Result<Vec<TokenId>, String> {
        let state = self.requests.get(&id).ok_or("request gone")?;
        if let Some(ids) = step.token_ids.as_ref().filter(|ids| !ids.is_empty()) {
            let vocab = self.tokenizer.vocab_size();
            if let Some(bad) = ids.iter().find(|&&id| id as usize >= vocab) {
                return Err(format!(
                    "it returned token {bad}, outside the vocabulary of {vocab}"
                ));
            }
            let mut ids = ids.clone();
            // Some servers leave the EOS token out of the ids of an EOS stop.
            let ends_in_eos = ids.last().is_some_and(|id| state.eos.contains(id));
            if step.finish == RemoteFinish::Eos && !state.sampling.ignore_eos && !ends_in_eos {
                ids.extend(state.eos.first());
            }
            return Ok(ids);
        }
        let mut text = step.text.clone();
        if let RemoteFinish::StopString(s) = &step.finish {
            text.push_str(s);
        }
        let mut tokens = self
            .tokenizer
            .encode(&text, false)
            .map_err(|e| format!("re-encoding its text: {e}"))?;
        if step.finish == RemoteFinish::Eos && !state.sampling.ignore_eos {
            tokens.extend(state.eos.first());
        }
        if tokens.is_empty() {
            return Err(format!(
                "it returned no token_ids and no text to re-encode (finish {:?}, text {:?})",
                step.finish, step.text
            ));
        }
        Ok(tokens)
    }

    /// Tokens a remote model wrote for its step. In the answer phase they
    /// run on past the marker (the answer model keeps writing).
    pub(super) fn on_remote_step(
        &mut self,
        id: SeqId,
        writer: Model,
        tokens: &[TokenId],
    ) -> Option<SeqOutcome> {
        let mut out = SeqOutcome {
            seq_id: id,
            ..SeqOutcome::default()
        };
        self.open_step(id, writer, &mut out);
        let mut kept = 0;
        loop {
            let written = self.written(id, &out, &tokens[kept..], writer);
            let state = self.requests.get_mut(&id)?;
            let verdict = state.push_tokens(written, &[], &self.tokenizer, &self.metrics);
            kept += verdict.kept;
            // The outcome holds its tokens before its verdict is applied, so the
            // routing state read there (a finish's counters) includes them.
            out.appended = tokens[..kept].to_vec();
            out.writer = Some(writer);
            self.apply_verdict(id, &verdict, writer, &mut out);
            let answer_model = self.requests.get(&id).map(|s| s.routing.answer_model);
            let keeps_writing = verdict.answer_started && answer_model == Some(writer);
            if !keeps_writing || out.finished || kept == tokens.len() {
                break;
            }
        }
        Some(out)
    }

    /// A remote SLM's glimpse: H_init estimated from its top log-probabilities
    /// routes the step; if the SLM keeps it, the glimpsed token opens it.
    pub(super) fn on_remote_glimpse(
        &mut self,
        id: SeqId,
        tokens: &[TokenId],
        top_logprobs: &[f32],
    ) -> Option<SeqOutcome> {
        let mut out = SeqOutcome {
            seq_id: id,
            ..SeqOutcome::default()
        };
        let h = entropy_from_top_logprobs(top_logprobs);
        if self.route_glimpse(id, h, &mut out) == Model::Llm {
            return Some(out);
        }
        self.on_remote_step(id, Model::Slm, tokens)
    }
}
