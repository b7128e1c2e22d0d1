//! One request's engine-side state: RNG, text watching, streaming, stats.
//!
//! The scheduler's `Sequence` holds what scheduling needs (tokens, writer,
//! KV tables); this holds what interpreting logits and talking to the caller
//! needs.

use std::time::Instant;

use glimprouter_core::route_state::{Phase, RouteCounters};
use glimprouter_core::routing::StepStats;
use glimprouter_core::sampling::{top_logprobs, SeqRng};
use glimprouter_core::steps::TextWatcher;
use glimprouter_core::{Model, RoutingParams, SamplingParams, TokenId};
use glimprouter_models::ModelTokenizer;
use tokio::sync::mpsc::UnboundedSender;

use crate::api::{
    FinishReason, Finished, RoutingStats, StopReason, StreamEvent, TokenDelta, TokenLogprob, Usage,
};
use crate::detokenize::IncrementalDecoder;
use crate::metrics::EngineMetrics;
use crate::queue_slots::QueueSlot;

/// Text-side state that a rewritten step must be rolled back to.
#[derive(Clone)]
pub(crate) struct TextState {
    pub watcher: TextWatcher,
    pub decoder: IncrementalDecoder,
    pub output_len: usize,
}

pub(crate) struct RequestState {
    pub request_id: String,
    pub tenant_label: String,
    pub events: UnboundedSender<StreamEvent>,
    pub sampling: SamplingParams,
    pub routing: RoutingParams,
    pub rng: SeqRng,
    pub text: TextState,
    pub prompt_len: usize,
    pub eos: Vec<TokenId>,
    /// Per-token entropy / log-prob of the SLM's current step (judge policies).
    pub step_stats: StepStats,
    /// Text state at the start of the current step (judge policies roll back to it).
    pub step_snapshot: Option<TextState>,
    /// Deltas of an SLM step not yet judged (judge policies hold them back).
    pub held_deltas: Vec<TokenDelta>,
    /// The SLM's step ended the request (EOS, stop, length), pending its judgement.
    pub pending_finish: Option<(FinishReason, Option<StopReason>)>,
    /// H_init of every glimpse, in order (nats): only the engine measures it.
    pub h_init: Vec<f32>,
    pub arrival: Instant,
    pub first_scheduled: Option<Instant>,
    pub last_emit: Option<Instant>,
    pub finished: bool,
    /// Its place among the requests the engine may hold, freed with the state.
    pub queue_slot: Option<QueueSlot>,
}

/// Tokens a model wrote, as [`RequestState::push_tokens`] takes them.
pub(crate) struct Written<'a> {
    pub tokens: &'a [TokenId],
    pub writer: Model,
    /// The request's phase as they were written.
    pub phase: Phase,
    /// The output before them from index `window_start` on (where the
    /// detokenizer reads from): the sequence's tokens, their one owner, plus
    /// what the outcome being built appended.
    pub window: Vec<TokenId>,
    pub window_start: usize,
}

/// What feeding tokens through the request's text state concluded.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct TokenVerdict {
    /// How many of the offered tokens were kept.
    pub kept: usize,
    pub step_end: bool,
    pub answer_started: bool,
    pub finish: Option<(FinishReason, Option<StopReason>)>,
}

impl RequestState {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        request_id: String,
        tenant_label: String,
        events: UnboundedSender<StreamEvent>,
        sampling: SamplingParams,
        routing: RoutingParams,
        prompt_len: usize,
        eos: Vec<TokenId>,
        arrival: Instant,
    ) -> Self {
        let watcher = TextWatcher::from_params(&routing, &sampling);
        Self {
            request_id,
            tenant_label,
            events,
            rng: SeqRng::new(sampling.seed),
            text: TextState {
                watcher,
                decoder: IncrementalDecoder::default(),
                output_len: 0,
            },
            sampling,
            routing,
            prompt_len,
            eos,
            step_stats: StepStats::new(),
            step_snapshot: None,
            held_deltas: Vec::new(),
            pending_finish: None,
            h_init: Vec::new(),
            arrival,
            first_scheduled: None,
            last_emit: None,
            finished: false,
            queue_slot: None,
        }
    }

    /// Whether the SLM's steps are held back until judged: a judging policy,
    /// still reasoning.
    pub fn holds_steps_for_judging(&self, phase: Phase) -> bool {
        self.routing.policy.rules().judges_after_step() && phase == Phase::Reasoning
    }

    /// Feeds sampled tokens, in order, through EOS / length / text checks.
    /// Stops at the first token that ends the step or the request; tokens
    /// after it are not kept. Streams (or holds) the text of kept tokens.
    /// `logits_rows[i]`, when logprobs were asked for, is the distribution
    /// token `i` was drawn from.
    pub fn push_tokens(
        &mut self,
        written: Written,
        logits_rows: &[&[f32]],
        tokenizer: &ModelTokenizer,
        metrics: &EngineMetrics,
    ) -> TokenVerdict {
        let Written {
            tokens,
            writer,
            phase,
            mut window,
            window_start,
        } = written;
        let mut verdict = TokenVerdict::default();
        let mut text = String::new();
        let mut logprobs = self.sampling.logprobs.map(|_| Vec::new());
        for (i, &tok) in tokens.iter().enumerate() {
            window.push(tok);
            let output_len = window_start + window.len();
            verdict.kept += 1;
            if let (Some(n), Some(lps), Some(row)) = (
                self.sampling.logprobs,
                logprobs.as_mut(),
                logits_rows.get(i),
            ) {
                let (lp, top) = top_logprobs(row, tok, n);
                lps.push(TokenLogprob {
                    token_id: tok,
                    logprob: lp,
                    top,
                });
            }
            let is_eos = !self.sampling.ignore_eos && self.eos.contains(&tok);
            let stop_token = !is_eos && self.sampling.stop_token_ids.contains(&tok);
            let piece = if is_eos || stop_token {
                String::new()
            } else {
                self.text
                    .decoder
                    .next_text(tokenizer, &window, window_start)
                    .unwrap_or_default()
            };
            self.text.output_len = output_len;
            let watcher = &mut self.text.watcher;
            watcher.set_stops_active(output_len >= self.sampling.min_tokens);
            let ev = watcher.push(&piece);
            text.push_str(&ev.emit);
            if let Some(i) = ev.stop {
                let stop = self.sampling.stop.get(i).cloned().map(StopReason::String);
                verdict.finish = Some((FinishReason::Stop, stop));
                break;
            }
            if is_eos || stop_token {
                let stop = stop_token.then_some(StopReason::TokenId(tok));
                verdict.finish = Some((FinishReason::Stop, stop));
                break;
            }
            if output_len >= self.sampling.max_tokens {
                verdict.finish = Some((FinishReason::Length, None));
                break;
            }
            if ev.answer_started {
                verdict.answer_started = true;
                break;
            }
            if ev.step_end {
                verdict.step_end = true;
                break;
            }
        }
        if verdict.finish.is_some() {
            text.push_str(&self.text.watcher.finish());
        }
        metrics
            .generation_tokens
            .with_label_values(&[writer.as_str()])
            .inc_by(verdict.kept as u64);
        metrics
            .tenant_generation_tokens
            .with_label_values(&[&self.tenant_label])
            .inc_by(verdict.kept as u64);
        let delta = TokenDelta {
            token_ids: tokens[..verdict.kept].to_vec(),
            text,
            writer,
            logprobs,
        };
        if self.holds_steps_for_judging(phase)
            && writer == Model::Slm
            && self.step_snapshot.is_some()
        {
            self.held_deltas.push(delta);
        } else {
            self.emit(delta, metrics);
        }
        verdict
    }

    pub fn emit(&mut self, delta: TokenDelta, metrics: &EngineMetrics) {
        let now = Instant::now();
        match self.last_emit {
            None => metrics.ttft.observe((now - self.arrival).as_secs_f64()),
            Some(prev) => metrics.itl.observe((now - prev).as_secs_f64()),
        }
        self.last_emit = Some(now);
        let _ = self.events.send(StreamEvent::Token(delta));
    }

    /// Streams a judged-and-kept step.
    pub fn release_held(&mut self, metrics: &EngineMetrics) {
        for d in std::mem::take(&mut self.held_deltas) {
            self.emit(d, metrics);
        }
    }

    /// Forgets the current (rejected) SLM step: output, text state, stats.
    /// Returns the output length the step began at.
    pub fn rollback_step(&mut self) -> usize {
        self.held_deltas.clear();
        let Some(snap) = self.step_snapshot.take() else {
            return self.text.output_len;
        };
        self.text = snap;
        self.text.output_len
    }

    pub fn start_step_tracking(&mut self, phase: Phase) {
        self.step_stats.reset();
        if self.holds_steps_for_judging(phase) {
            self.step_snapshot = Some(self.text.clone());
        }
    }

    pub fn finish(
        &mut self,
        reason: FinishReason,
        stop_reason: Option<StopReason>,
        counters: RouteCounters,
        metrics: &EngineMetrics,
    ) {
        if self.finished {
            return;
        }
        self.finished = true;
        self.release_held(metrics);
        let routing = RoutingStats {
            policy: self.routing.policy.as_str().to_string(),
            steps: counters.steps,
            llm_steps: counters.llm_steps,
            llm_step_ratio: if counters.steps > 0 {
                counters.llm_steps as f32 / counters.steps as f32
            } else {
                0.0
            },
            slm_tokens: counters.slm_tokens,
            llm_tokens: counters.llm_tokens,
            h_init: std::mem::take(&mut self.h_init),
            draft_tokens: counters.draft_tokens,
            accepted_draft_tokens: counters.accepted_draft_tokens,
        };
        metrics.e2e.observe(self.arrival.elapsed().as_secs_f64());
        metrics
            .request_success
            .with_label_values(&[reason.as_str()])
            .inc();
        let usage = Usage {
            prompt_tokens: self.prompt_len,
            completion_tokens: counters.output_tokens(),
        };
        let _ = self.events.send(StreamEvent::Finished(Finished {
            reason,
            stop_reason,
            usage,
            routing,
        }));
    }
}
