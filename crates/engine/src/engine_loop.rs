//! The engine thread: one iteration after another of schedule, forward both
//! models, interpret the logits, update.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam::channel::Receiver;
use glimprouter_core::block_pool::PrefixCacheStats;
use glimprouter_core::params::Policy;
use glimprouter_core::routing::{
    initial_writer, rewrite_after_step, route_after_glimpse, StepStats,
};
use glimprouter_core::sampling::{
    entropy, entropy_from_top_logprobs, sample, sample_from_probs, sampling_probs, token_logprob,
};
use glimprouter_core::scheduler::{Scheduler, SeqOutcome};
use glimprouter_core::sequence::Sequence;
use glimprouter_core::spec::{accept_greedy, accept_random};
use glimprouter_core::{BatchRow, Model, ModelBatch, RowKind, SeqId, TokenId};
use glimprouter_models::{Logits, ModelRunner, ModelTokenizer};

use crate::api::{EngineError, FinishReason, GenerateRequest, StreamEvent};
use crate::handle::Command;
use crate::metrics::EngineMetrics;
use crate::queue_slots::QueueSlot;
use crate::remote::{RemoteDispatcher, RemoteFinish, RemoteReply, StepCall, StepText};
use crate::request::{RequestState, TokenVerdict};

/// Top log-probabilities a remote SLM's glimpse asks for (the most OpenAI's
/// API and vLLM's default `max_logprobs` allow).
const GLIMPSE_TOP_LOGPROBS: usize = 20;

/// Draft tokens the SLM proposed for one LLM-queue sequence this iteration.
struct Drafted {
    tokens: Vec<TokenId>,
    /// The distributions they were drawn from (random sampling only).
    probs: Vec<Vec<f32>>,
}

pub(crate) struct EngineCore {
    pub sched: Scheduler,
    /// `None` for a model served by a remote tier.
    pub runners: [Option<ModelRunner>; 2],
    /// Present when a model is remote.
    pub remote: Option<RemoteDispatcher>,
    pub tokenizer: Arc<ModelTokenizer>,
    pub metrics: Arc<EngineMetrics>,
    pub commands: Receiver<Command>,
    pub requests: HashMap<SeqId, RequestState>,
    pub ids: HashMap<String, SeqId>,
    pub next_seq: SeqId,
    pub last_prefix: [PrefixCacheStats; 2],
    pub last_preemptions: u64,
    /// Model iterations run so far.
    pub iterations: u64,
    /// The test-only fault hook (`start::PANIC_AFTER_ITERATIONS_ENV`): panic once this
    /// many iterations have run.
    pub panic_after_iterations: Option<u64>,
}

impl EngineCore {
    /// Runs until shutdown or until every handle is dropped.
    pub fn run(mut self) {
        loop {
            if !self.sched.has_work() {
                // Idle: block instead of spinning.
                match self.commands.recv() {
                    Ok(cmd) => {
                        if !self.handle(cmd) {
                            return;
                        }
                    }
                    Err(_) => return,
                }
            }
            while let Ok(cmd) = self.commands.try_recv() {
                if !self.handle(cmd) {
                    return;
                }
            }
            self.reap_disconnected();
            self.apply_remote_replies();
            if !self.sched.has_work() {
                // Aborts may have freed blocks: let the gauges show it.
                self.update_gauges();
                continue;
            }
            if let Err(e) = self.iteration() {
                tracing::error!(error = %e, "engine iteration failed; failing every request in flight");
                self.fail_all(e);
            }
            self.iterations += 1;
            if self.panic_after_iterations == Some(self.iterations) {
                panic!(
                    "fault injected: the engine thread panics after {} iterations",
                    self.iterations
                );
            }
            self.dispatch_remote();
            self.update_gauges();
        }
    }

    /// Returns false on shutdown.
    fn handle(&mut self, cmd: Command) -> bool {
        match cmd {
            Command::Submit {
                request,
                events,
                slot,
            } => self.submit(*request, events, slot),
            Command::Abort { request_id } => {
                if let Some(&id) = self.ids.get(&request_id) {
                    self.abort(id);
                }
            }
            Command::ResetPrefixCache { reply } => {
                let _ = reply.send(self.sched.reset_prefix_cache());
            }
            Command::Shutdown => {
                let ids: Vec<SeqId> = self.requests.keys().copied().collect();
                for id in ids {
                    self.abort(id);
                }
                return false;
            }
        }
        true
    }

    fn submit(
        &mut self,
        req: GenerateRequest,
        events: tokio::sync::mpsc::UnboundedSender<StreamEvent>,
        slot: QueueSlot,
    ) {
        if self.ids.contains_key(&req.request_id) {
            let _ = events.send(StreamEvent::Error(EngineError::InvalidRequest(format!(
                "request id {} is already in flight",
                req.request_id
            ))));
            return;
        }
        let id = self.next_seq;
        self.next_seq += 1;
        let writer = initial_writer(&req.routing);
        let seq = Sequence::new(
            id,
            req.tenant.clone(),
            req.prompt_ids.clone(),
            req.sampling.clone(),
            req.routing.clone(),
            writer,
        );
        if let Err(e) = self.sched.add(seq) {
            let _ = events.send(StreamEvent::Error(EngineError::InvalidRequest(
                e.to_string(),
            )));
            return;
        }
        self.metrics
            .prompt_tokens
            .inc_by(req.prompt_ids.len() as u64);
        let tenant_label = self.metrics.tenant_label(&req.tenant);
        let eos = self.tokenizer.eos_token_ids().to_vec();
        let mut state = RequestState::new(
            req.request_id.clone(),
            tenant_label,
            events,
            req.sampling,
            req.routing,
            req.prompt_ids.len(),
            eos,
            req.arrival,
        );
        state.queue_slot = Some(slot);
        self.ids.insert(req.request_id, id);
        self.requests.insert(id, state);
    }

    fn abort(&mut self, id: SeqId) {
        if let Some(mut state) = self.release(id) {
            state.finish(FinishReason::Abort, None, &self.metrics);
        }
    }

    /// Frees everything a request holds (blocks, a remote call in flight,
    /// its id) and hands back its state, if it was still known.
    fn release(&mut self, id: SeqId) -> Option<RequestState> {
        self.sched.abort(id);
        if let Some(remote) = self.remote.as_mut() {
            remote.cancel(id);
        }
        let state = self.requests.remove(&id)?;
        self.ids.remove(&state.request_id);
        Some(state)
    }

    /// A caller that dropped its receiver (client gone) aborts its request.
    fn reap_disconnected(&mut self) {
        let gone: Vec<SeqId> = self
            .requests
            .iter()
            .filter(|(_, s)| s.events.is_closed())
            .map(|(&id, _)| id)
            .collect();
        for id in gone {
            self.abort(id);
        }
    }

    fn fail_all(&mut self, e: EngineError) {
        let ids: Vec<SeqId> = self.requests.keys().copied().collect();
        for id in ids {
            self.fail_request(id, e.clone());
        }
    }

    fn forward(&mut self, model: Model, batch: &ModelBatch) -> Result<Logits, EngineError> {
        run_forward(&mut self.runners[model.idx()], model, batch, &self.metrics)
    }

    fn iteration(&mut self) -> Result<(), EngineError> {
        let mut plan = self.sched.schedule();
        if plan.is_empty() {
            self.dispatch_remote();
            self.wait_outside();
            return Ok(());
        }
        for batch in &plan.batches {
            for row in &batch.rows {
                self.mark_scheduled(row.seq_id);
            }
        }

        // Verify rows carry the SLM's drafts, so the draft rows (and their
        // k - 1 draft passes) run first; the rest of the SLM batch then runs
        // beside the LLM's forward, verify included, so that the SLM's
        // decodes overlap the LLM's work instead of waiting on it.
        let (draft_rows, slm_rows): (Vec<BatchRow>, Vec<BatchRow>) =
            std::mem::take(&mut plan.batches[Model::Slm.idx()].rows)
                .into_iter()
                .partition(|r| matches!(r.kind, RowKind::Draft { .. }));
        let slm_batch = ModelBatch { rows: slm_rows };
        let mut llm_batch = std::mem::take(&mut plan.batches[Model::Llm.idx()]);
        let drafts = self.run_drafts(ModelBatch { rows: draft_rows })?;
        for row in &mut llm_batch.rows {
            if let RowKind::Verify { .. } = row.kind {
                if let Some(d) = drafts.get(&row.seq_id) {
                    row.token_ids.extend_from_slice(&d.tokens);
                }
            }
        }
        let (slm_logits, llm_logits) = if slm_batch.is_empty() || llm_batch.is_empty() {
            (
                self.forward(Model::Slm, &slm_batch)?,
                self.forward(Model::Llm, &llm_batch)?,
            )
        } else {
            // Side by side, so each one's serial stretches overlap the
            // other's work.
            let metrics = &self.metrics;
            let [slm_runner, llm_runner] = &mut self.runners;
            let (slm, llm) = rayon::join(
                || run_forward(slm_runner, Model::Slm, &slm_batch, metrics),
                || run_forward(llm_runner, Model::Llm, &llm_batch, metrics),
            );
            (slm?, llm?)
        };

        // The LLM's logits beside each glimpse (shadow rows), by sequence.
        let mut shadows: HashMap<SeqId, usize> = HashMap::new();
        let mut offset = 0;
        for row in &llm_batch.rows {
            if row.kind == RowKind::Shadow && row.num_logits == 1 {
                shadows.insert(row.seq_id, offset);
            }
            offset += row.num_logits;
        }

        let mut outcomes = Vec::new();
        offset = 0;
        for row in &slm_batch.rows {
            if row.num_logits > 0 {
                let shadow = shadows.get(&row.seq_id).map(|&i| llm_logits.row(i));
                if let Some(o) = self.on_slm_token(row.seq_id, slm_logits.row(offset), shadow) {
                    outcomes.push(o);
                }
            }
            offset += row.num_logits;
        }
        offset = 0;
        for row in &llm_batch.rows {
            let rows: Vec<&[f32]> = (offset..offset + row.num_logits)
                .map(|i| llm_logits.row(i))
                .collect();
            offset += row.num_logits;
            // A shadow's logits were used (or not) by its glimpse.
            if rows.is_empty() || row.kind == RowKind::Shadow {
                continue;
            }
            let outcome = match row.kind {
                RowKind::Verify { k } => match drafts.get(&row.seq_id) {
                    Some(d) => self.on_verify(row.seq_id, &d.tokens, &d.probs, &rows, k),
                    None => None,
                },
                RowKind::Judge => self.on_judge(row, &rows),
                _ => self.on_llm_token(row.seq_id, rows[rows.len() - 1]),
            };
            outcomes.extend(outcome);
        }
        self.apply_outcomes(outcomes);
        Ok(())
    }

    /// Hands this iteration's conclusions to the scheduler (marking which
    /// sequences glimpse next) and forgets finished requests.
    fn apply_outcomes(&mut self, mut outcomes: Vec<SeqOutcome>) {
        for o in &mut outcomes {
            o.glimpse_next = self
                .requests
                .get(&o.seq_id)
                .is_some_and(|s| s.at_step_start && !s.in_answer);
        }
        self.sched.update(&outcomes);
        for o in &outcomes {
            if o.finished {
                if let Some(state) = self.requests.remove(&o.seq_id) {
                    self.ids.remove(&state.request_id);
                }
            }
        }
    }

    /// The SLM drafts k tokens for each LLM-queue sequence: the first from
    /// the forward of the draft rows (which also feed the SLM the tokens it
    /// has not seen), the rest in k - 1 single-token batched forwards.
    fn run_drafts(&mut self, batch: ModelBatch) -> Result<HashMap<SeqId, Drafted>, EngineError> {
        let mut drafts: HashMap<SeqId, Drafted> = HashMap::new();
        if batch.is_empty() {
            return Ok(drafts);
        }
        let logits = self.forward(Model::Slm, &batch)?;
        let mut templates: Vec<(&BatchRow, usize)> = Vec::new();
        let mut offset = 0;
        for row in &batch.rows {
            if let RowKind::Draft { k } = row.kind {
                let d = self.draw_draft(row.seq_id, logits.row(offset));
                drafts.insert(row.seq_id, d);
                templates.push((row, k));
            }
            offset += row.num_logits;
        }
        let max_k = templates.iter().map(|&(_, k)| k).max().unwrap_or(0);
        for j in 1..max_k {
            let rows: Vec<BatchRow> = templates
                .iter()
                .filter(|(_, k)| *k > j)
                .map(|(t, _)| BatchRow {
                    seq_id: t.seq_id,
                    kind: RowKind::Decode,
                    token_ids: vec![*drafts[&t.seq_id].tokens.last().expect("one draft per row")],
                    start_pos: t.start_pos + t.token_ids.len() + j - 1,
                    block_table: t.block_table.clone(),
                    num_logits: 1,
                })
                .collect();
            let batch = ModelBatch { rows };
            let out = self.forward(Model::Slm, &batch)?;
            for (i, row) in batch.rows.iter().enumerate() {
                let next = self.draw_draft(row.seq_id, out.row(i));
                if let Some(d) = drafts.get_mut(&row.seq_id) {
                    d.tokens.extend(next.tokens);
                    d.probs.extend(next.probs);
                }
            }
        }
        Ok(drafts)
    }

    fn draw_draft(&mut self, id: SeqId, logits: &[f32]) -> Drafted {
        let Some(state) = self.requests.get_mut(&id) else {
            return Drafted {
                tokens: vec![0],
                probs: vec![],
            };
        };
        if state.sampling.is_greedy() {
            return Drafted {
                tokens: vec![sample(logits, &state.sampling, &mut state.rng)],
                probs: vec![],
            };
        }
        let probs = sampling_probs(logits, &state.sampling);
        let token = sample_from_probs(&probs, &mut state.rng);
        Drafted {
            tokens: vec![token],
            probs: vec![probs],
        }
    }

    /// Counts a step opened by `writer` unless its glimpse already did.
    fn open_step(&mut self, id: SeqId, writer: Model, out: &mut SeqOutcome) {
        let Some(state) = self.requests.get_mut(&id) else {
            return;
        };
        if state.at_step_start && !state.in_answer && !state.step_counted {
            state.steps += 1;
            state.step_counted = true;
            if writer == Model::Llm {
                state.stats.llm_steps += 1;
            }
            // A step the LLM may still rewrite is recorded once judged.
            if !(writer == Model::Slm && state.holds_steps_for_judging()) {
                self.metrics.record_step(writer);
            }
            out.step_started = Some(writer);
            state.start_step_tracking();
        }
        state.at_step_start = false;
    }

    /// A token of the SLM: a glimpse at a step start, else the next token of
    /// its step. `shadow`: the LLM's logits for the same position, computed
    /// beside the glimpse; when the glimpse hands the step to the LLM, the
    /// LLM's first token is drawn from them now rather than an iteration later.
    fn on_slm_token(
        &mut self,
        id: SeqId,
        logits: &[f32],
        shadow: Option<&[f32]>,
    ) -> Option<SeqOutcome> {
        let state = self.requests.get_mut(&id)?;
        let mut out = SeqOutcome {
            seq_id: id,
            ..SeqOutcome::default()
        };
        let glimpse = state.at_step_start && !state.in_answer;
        if glimpse && self.route_glimpse(id, entropy(logits), &mut out) == Model::Llm {
            if let Some(llm_logits) = shadow {
                self.push_llm_token(id, llm_logits, &mut out);
            }
            return Some(out);
        }
        self.open_step(id, Model::Slm, &mut out);
        let state = self.requests.get_mut(&id)?;
        let token = sample(logits, &state.sampling, &mut state.rng);
        if state.holds_steps_for_judging() {
            state
                .step_stats
                .push_token(entropy(logits), token_logprob(logits, token));
        }
        let verdict = state.push_tokens(
            &[token],
            Model::Slm,
            &[logits],
            &self.tokenizer,
            &self.metrics,
        );
        out.appended = vec![token];
        out.writer = Some(Model::Slm);
        self.apply_verdict(id, &verdict, Model::Slm, &mut out);
        Some(out)
    }

    /// Routes the step a glimpse opens by its H_init. When the LLM gets it,
    /// the glimpsed token is dropped and the step is counted as the LLM's.
    fn route_glimpse(&mut self, id: SeqId, h: f32, out: &mut SeqOutcome) -> Model {
        let Some(state) = self.requests.get_mut(&id) else {
            return Model::Slm;
        };
        state.stats.h_init.push(h);
        self.metrics.h_init.observe(h as f64);
        let dest = route_after_glimpse(&state.routing, h, &mut state.rng);
        if dest == Model::Llm {
            state.steps += 1;
            state.step_counted = true;
            state.stats.llm_steps += 1;
            state.at_step_start = false;
            self.metrics.record_step(Model::Llm);
            out.step_started = Some(Model::Llm);
            out.route_to = Some(Model::Llm);
        }
        dest
    }

    /// A plain LLM decode (or the last row of a catch-up).
    fn on_llm_token(&mut self, id: SeqId, logits: &[f32]) -> Option<SeqOutcome> {
        let mut out = SeqOutcome {
            seq_id: id,
            ..SeqOutcome::default()
        };
        self.push_llm_token(id, logits, &mut out);
        Some(out)
    }

    /// Samples the LLM's next token into `out`.
    fn push_llm_token(&mut self, id: SeqId, logits: &[f32], out: &mut SeqOutcome) {
        self.open_step(id, Model::Llm, out);
        let Some(state) = self.requests.get_mut(&id) else {
            return;
        };
        let token = sample(logits, &state.sampling, &mut state.rng);
        let verdict = state.push_tokens(
            &[token],
            Model::Llm,
            &[logits],
            &self.tokenizer,
            &self.metrics,
        );
        out.appended = vec![token];
        out.writer = Some(Model::Llm);
        self.apply_verdict(id, &verdict, Model::Llm, out);
    }

    /// The LLM scored k drafts: accept a prefix plus one token of its own.
    fn on_verify(
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
        let state = self.requests.get_mut(&id)?;
        let acceptance = if state.sampling.is_greedy() {
            accept_greedy(drafts, rows)
        } else {
            let target: Vec<Vec<f32>> = rows
                .iter()
                .map(|r| sampling_probs(r, &state.sampling))
                .collect();
            accept_random(drafts, draft_probs, &target, &mut state.rng)
        };
        let a = acceptance.num_accepted.min(k);
        let mut tokens = drafts[..a].to_vec();
        tokens.push(acceptance.next_token);
        state.stats.draft_tokens += k;
        state.stats.accepted_draft_tokens += a;
        self.metrics.spec_drafts.inc();
        self.metrics.spec_draft_tokens.inc_by(k as u64);
        self.metrics.spec_accepted_tokens.inc_by(a as u64);
        let verdict = state.push_tokens(
            &tokens,
            Model::Llm,
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
    fn on_judge(&mut self, row: &BatchRow, rows: &[&[f32]]) -> Option<SeqOutcome> {
        let id = row.seq_id;
        let seq = self.sched.seq(id)?;
        let (step_start, len) = (seq.step_start, seq.tokens.len());
        let mut judge = StepStats::new();
        for p in step_start..len {
            // Logits at position p - 1 predict the token at p.
            if let Some(r) = (p - 1).checked_sub(row.start_pos).and_then(|i| rows.get(i)) {
                judge.push_judge_logprob(token_logprob(r, seq.tokens[p]));
            }
        }
        let state = self.requests.get_mut(&id)?;
        let mut out = SeqOutcome {
            seq_id: id,
            ..SeqOutcome::default()
        };
        if rewrite_after_step(&state.routing, &judge) {
            self.rewrite_step(id, &mut out);
        } else {
            state.release_held(&self.metrics);
            state.step_snapshot = None;
            self.metrics.record_step(Model::Slm);
            if let Some((reason, stop)) = state.pending_finish.take() {
                out.finished = true;
                state.finish(reason, stop, &self.metrics);
            }
        }
        Some(out)
    }

    /// Discards the SLM's current step; the LLM writes it again.
    fn rewrite_step(&mut self, id: SeqId, out: &mut SeqOutcome) {
        let Some(state) = self.requests.get_mut(&id) else {
            return;
        };
        // The engine's snapshot marks where the step began; the scheduler's
        // own mark is only updated when this outcome is applied.
        let step_start = state.prompt_len + state.rollback_step();
        state.pending_finish = None;
        state.stats.llm_steps += 1;
        state.at_step_start = false;
        state.step_counted = true;
        self.metrics.record_step(Model::Llm);
        out.appended.clear();
        out.writer = None;
        out.rollback_to = Some(step_start);
        out.step_rewritten = true;
        out.route_to = Some(Model::Llm);
    }

    fn apply_verdict(
        &mut self,
        id: SeqId,
        verdict: &TokenVerdict,
        writer: Model,
        out: &mut SeqOutcome,
    ) {
        let Some(state) = self.requests.get_mut(&id) else {
            return;
        };
        if let Some((reason, stop)) = verdict.finish.clone() {
            // The SLM's last step is judged like any other before the request ends.
            if writer == Model::Slm && state.holds_steps_for_judging() {
                match state.routing.policy {
                    Policy::Specreason => {
                        state.pending_finish = Some((reason, stop));
                        out.request_judge = true;
                        return;
                    }
                    Policy::StepEntropy | Policy::StepPpl
                        if rewrite_after_step(&state.routing, &state.step_stats) =>
                    {
                        self.rewrite_step(id, out);
                        return;
                    }
                    _ => {}
                }
            }
            out.finished = true;
            state.finish(reason, stop, &self.metrics);
            return;
        }
        let answer_model = state.routing.answer_model;
        let step_budget_spent = state.routing.max_steps.is_some_and(|m| state.steps >= m);
        if verdict.answer_started || (verdict.step_end && step_budget_spent && !state.in_answer) {
            state.in_answer = true;
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
        state.at_step_start = true;
        state.step_counted = false;
        let policy = state.routing.policy;
        match writer {
            Model::Slm => match policy {
                Policy::Specreason => out.request_judge = true,
                Policy::StepEntropy | Policy::StepPpl => {
                    if rewrite_after_step(&state.routing, &state.step_stats) {
                        self.rewrite_step(id, out);
                    } else {
                        state.release_held(&self.metrics);
                        state.step_snapshot = None;
                        self.metrics.record_step(Model::Slm);
                    }
                }
                _ => {}
            },
            Model::Llm => {
                if policy != Policy::Llm {
                    out.route_to = Some(Model::Slm);
                }
            }
        }
    }

    /// The first time a request gets rows (or a remote call), its queue time ends.
    fn mark_scheduled(&mut self, id: SeqId) {
        if let Some(state) = self.requests.get_mut(&id) {
            if state.first_scheduled.is_none() {
                let now = Instant::now();
                state.first_scheduled = Some(now);
                self.metrics
                    .queue_time
                    .observe((now - state.arrival).as_secs_f64());
            }
        }
    }

    /// Nothing to run locally: everything waits on something outside this
    /// iteration (remote steps in flight, or a request larger than the free
    /// pool while others drain). Sleep until a command or a remote reply
    /// arrives, or briefly.
    fn wait_outside(&self) {
        match &self.remote {
            Some(remote) if remote.has_in_flight() => {
                let mut select = crossbeam::channel::Select::new();
                select.recv(&self.commands);
                select.recv(&remote.replies);
                let _ = select.ready_timeout(Duration::from_millis(50));
            }
            _ => std::thread::sleep(Duration::from_millis(1)),
        }
    }

    /// Sends every sequence whose step a remote model now writes.
    fn dispatch_remote(&mut self) {
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
            if !state.in_answer && !state.routing.delimiter.is_empty() {
                stop.insert(0, state.routing.delimiter.clone());
            }
            // A remote SLM opening a step glimpses first: one token and the
            // top log-probabilities H_init is estimated from.
            let glimpse = seq.writer == Model::Slm && state.at_step_start && !state.in_answer;
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
                step_index: state.steps,
                glimpse_logprobs: glimpse.then_some(GLIMPSE_TOP_LOGPROBS),
            };
            remote.dispatch(seq.writer, call);
        }
    }

    /// Applies the remote replies that arrived: a written step joins the
    /// sequence like tokens of a local model; a failure ends the request
    /// with a 502 and frees everything it held.
    fn apply_remote_replies(&mut self) {
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
    fn remote_tokens(&self, id: SeqId, step: &StepText) -> Result<Vec<TokenId>, String> {
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
    fn on_remote_step(
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
            let state = self.requests.get_mut(&id)?;
            let verdict =
                state.push_tokens(&tokens[kept..], writer, &[], &self.tokenizer, &self.metrics);
            kept += verdict.kept;
            self.apply_verdict(id, &verdict, writer, &mut out);
            let answer_model = self.requests.get(&id).map(|s| s.routing.answer_model);
            let keeps_writing = verdict.answer_started && answer_model == Some(writer);
            if !keeps_writing || out.finished || kept == tokens.len() {
                break;
            }
        }
        out.appended = tokens[..kept].to_vec();
        out.writer = Some(writer);
        Some(out)
    }

    /// A remote SLM's glimpse: H_init estimated from its top log-probabilities
    /// routes the step; if the SLM keeps it, the glimpsed token opens it.
    fn on_remote_glimpse(
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

    /// Ends one request with an error and frees what it held.
    fn fail_request(&mut self, id: SeqId, e: EngineError) {
        if let Some(state) = self.release(id) {
            let _ = state.events.send(StreamEvent::Error(e));
        }
    }

    fn update_gauges(&mut self) {
        let m = &self.metrics;
        m.requests_waiting.set(self.sched.num_waiting() as i64);
        for model in Model::BOTH {
            let label = [model.as_str()];
            m.requests_running
                .with_label_values(&label)
                .set(self.sched.num_running(model) as i64);
            m.kv_cache_usage
                .with_label_values(&label)
                .set(self.sched.pool(model).usage());
            let stats = self.sched.prefix_cache_stats(model);
            let last = &mut self.last_prefix[model.idx()];
            m.prefix_cache_queries
                .with_label_values(&label)
                .inc_by(stats.queries - last.queries);
            m.prefix_cache_hits
                .with_label_values(&label)
                .inc_by(stats.hits - last.hits);
            *last = stats;
        }
        let p = self.sched.num_preemptions();
        m.preemptions.inc_by(p - self.last_preemptions);
        self.last_preemptions = p;
    }
}

/// One model's forward over its batch, timed into the metrics. A remote
/// model (no runner) never has rows.
fn run_forward(
    runner: &mut Option<ModelRunner>,
    model: Model,
    batch: &ModelBatch,
    metrics: &EngineMetrics,
) -> Result<Logits, EngineError> {
    if batch.is_empty() {
        // No rows, so no row is ever read.
        return Ok(Logits {
            data: Vec::new(),
            vocab: 0,
        });
    }
    let Some(runner) = runner else {
        return Err(EngineError::Internal(format!(
            "rows planned for the remote {}",
            model.as_str()
        )));
    };
    let start = Instant::now();
    let logits = runner
        .forward(batch)
        .map_err(|e| EngineError::Internal(format!("{} forward: {e}", model.as_str())))?;
    let m = model.as_str();
    metrics
        .forward_seconds
        .with_label_values(&[m])
        .observe(start.elapsed().as_secs_f64());
    metrics
        .iteration_tokens
        .with_label_values(&[m])
        .observe(batch.num_tokens() as f64);
    Ok(logits)
}
