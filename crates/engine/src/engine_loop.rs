//! The engine thread: one iteration after another of schedule, forward both
//! models, interpret the logits, update.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam::channel::Receiver;
use glimprouter_core::block_pool::PrefixCacheStats;
use glimprouter_core::scheduler::{Scheduler, SeqOutcome};
use glimprouter_core::{BatchRow, Model, ModelBatch, RowKind, SeqId};
use glimprouter_models::{Logits, ModelRunner, ModelTokenizer};

use crate::api::EngineError;
use crate::handle::Command;
use crate::metrics::EngineMetrics;
use crate::remote::RemoteDispatcher;
use crate::request::RequestState;

mod drafting;
mod intake;
mod remote_io;
mod step_boundaries;
mod token_outcomes;

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
    /// A core with no requests yet.
    pub fn new(
        sched: Scheduler,
        runners: [Option<ModelRunner>; 2],
        remote: Option<RemoteDispatcher>,
        tokenizer: Arc<ModelTokenizer>,
        metrics: Arc<EngineMetrics>,
        commands: Receiver<Command>,
    ) -> Self {
        Self {
            sched,
            runners,
            remote,
            tokenizer,
            metrics,
            commands,
            requests: HashMap::new(),
            ids: HashMap::new(),
            next_seq: 0,
            last_prefix: Default::default(),
            last_preemptions: 0,
            iterations: 0,
            panic_after_iterations: None,
        }
    }

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

    /// Hands this iteration's conclusions to the scheduler and forgets
    /// finished requests.
    fn apply_outcomes(&mut self, outcomes: Vec<SeqOutcome>) {
        self.sched.update(&outcomes);
        for o in &outcomes {
            if o.finished {
                if let Some(state) = self.requests.remove(&o.seq_id) {
                    self.ids.remove(&state.request_id);
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

#[cfg(test)]
pub(crate) mod testing {
    //! An engine core with no models, for unit tests that hand it logits.
    use std::path::Path;

    use glimprouter_core::scheduler::SchedulerConfig;
    use glimprouter_core::sequence::Sequence;
    use glimprouter_core::{RoutingParams, SamplingParams, TokenId};
    use tokio::sync::mpsc;

    use super::*;
    use crate::api::StreamEvent;

    /// The bundled task tokenizer (45 tokens), no runners, an empty scheduler.
    pub fn core() -> EngineCore {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/llm");
        let tokenizer = ModelTokenizer::from_dir(&dir).expect("the bundled tokenizer");
        let (_tx, commands) = crossbeam::channel::unbounded();
        EngineCore::new(
            Scheduler::new(SchedulerConfig::default()),
            [None, None],
            None,
            Arc::new(tokenizer),
            Arc::new(EngineMetrics::new()),
            commands,
        )
    }

    /// Registers request `id` (greedy, 32 tokens, a 3-token prompt) with `routing`,
    /// its sequence running in the scheduler; the receiver gets its events.
    pub fn add_request(
        core: &mut EngineCore,
        id: SeqId,
        routing: RoutingParams,
    ) -> mpsc::UnboundedReceiver<StreamEvent> {
        let (events, rx) = mpsc::unbounded_channel();
        let eos = core.tokenizer.eos_token_ids().to_vec();
        let writer = routing.policy.rules().initial_writer();
        let seq = Sequence::new(
            id,
            "t",
            vec![1, 2, 3],
            SamplingParams::greedy(32),
            routing.clone(),
            writer,
        );
        core.sched.add(seq).expect("fits");
        core.sched.schedule();
        let state = RequestState::new(
            format!("r{id}"),
            "t".into(),
            events,
            SamplingParams::greedy(32),
            routing,
            3,
            eos,
            std::time::Instant::now(),
        );
        core.requests.insert(id, state);
        rx
    }

    /// Hands `out` to the scheduler, as the end of an iteration does.
    pub fn apply(core: &mut EngineCore, out: SeqOutcome) {
        core.apply_outcomes(vec![out]);
    }

    /// Logits over the vocabulary that put almost all the mass on `token`.
    pub fn peaked(core: &EngineCore, token: TokenId) -> Vec<f32> {
        let mut logits = vec![0f32; core.tokenizer.vocab_size()];
        logits[token as usize] = 30.0;
        logits
    }
}
