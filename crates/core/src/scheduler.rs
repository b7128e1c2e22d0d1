//! The two-queue continuous-batching scheduler.
//!
//! Running sequences sit in the queue of the model that writes their current
//! step (SLM or LLM). Every iteration [`Scheduler::schedule`] builds one ragged
//! batch per model: running sequences first, oldest admitted first, then — if
//! nothing had to be preempted — waiting ones by weighted fair share across
//! tenants. The engine runs the batches, interprets the logits, and reports
//! back through [`Scheduler::update`] with one [`SeqOutcome`] per sequence that
//! got logits. The scheduler owns every state transition (tokens, KV lengths,
//! queues, blocks); the engine owns the meaning of logits (sampling, entropy,
//! acceptance, step boundaries).

use std::collections::HashMap;

use rustc_hash::FxHashMap;

use crate::batch::{BatchRow, ModelBatch, RowKind};
use crate::block_pool::{BlockPool, PrefixCacheStats};
use crate::block_table::BlockTable;
use crate::sequence::{SeqStatus, Sequence};
use crate::tenant_queue::TenantQueues;
use crate::{BlockId, Model, SeqId, TokenId};

#[derive(Debug, Clone, PartialEq)]
pub struct SchedulerConfig {
    /// Tokens per KV block (vLLM's default is 16).
    pub block_size: usize,
    /// Physical blocks per pool, indexed by `Model::idx`.
    pub num_blocks: [usize; 2],
    /// Most tokens fed to each model in one iteration.
    pub max_num_batched_tokens: [usize; 2],
    /// Most sequences in each model's batch (and in each running queue).
    pub max_num_seqs: [usize; 2],
    pub enable_prefix_caching: bool,
    /// Admission weight per tenant (absent = 1).
    pub tenant_weights: HashMap<String, f64>,
    /// Models served by a remote engine, indexed by `Model::idx`. A remote
    /// model has no pool and gets no rows: a sequence it writes is parked
    /// (counted in its running queue, holding its other blocks) while the
    /// engine has the remote write the step, and resumes when the engine
    /// applies the reply as an ordinary [`SeqOutcome`].
    pub remote: [bool; 2],
    /// Skip speculation in iterations that start with more than this many
    /// sequences running or waiting (vLLM's `speculative_disable_by_batch_size`,
    /// applied per iteration). On compute-bound hardware a verify row of k+1 tokens
    /// costs about k+1 decodes, which drafts only win back in small batches.
    pub speculative_disable_by_batch_size: Option<usize>,
    /// Most tokens one sequence's prefill or catch-up row feeds in one
    /// iteration (vLLM's `long_prefill_token_threshold`; None or 0 = no cap
    /// beyond the budget). A long prompt then spreads over several
    /// iterations instead of stalling every decode in one, which bounds the
    /// inter-token latency of the running streams at the cost of the new
    /// request's time to first token. Rows that must end at the last token
    /// (decode, draft, verify, judge, shadow) are never split, so never capped.
    pub long_prefill_token_threshold: Option<usize>,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            block_size: 16,
            num_blocks: [1024, 1024],
            max_num_batched_tokens: [2048, 2048],
            max_num_seqs: [128, 128],
            enable_prefix_caching: true,
            tenant_weights: HashMap::new(),
            remote: [false, false],
            speculative_disable_by_batch_size: None,
            long_prefill_token_threshold: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("sequence {0} already exists")]
    DuplicateId(SeqId),
    #[error("the request needs {needed} KV blocks of the {model} but its pool only has {capacity}; it can never be scheduled")]
    NeverFits {
        model: &'static str,
        needed: usize,
        capacity: usize,
    },
    #[error("empty prompt")]
    EmptyPrompt,
}

/// What one iteration runs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IterationPlan {
    /// One ragged batch per model, indexed by `Model::idx`.
    pub batches: [ModelBatch; 2],
    /// Sequences preempted (by recompute) while building this plan.
    pub preempted: Vec<SeqId>,
}

impl IterationPlan {
    pub fn is_empty(&self) -> bool {
        self.batches.iter().all(ModelBatch::is_empty)
    }

    pub fn batch(&self, model: Model) -> &ModelBatch {
        &self.batches[model.idx()]
    }
}

/// What the engine concluded for one sequence from this iteration's logits.
/// Fields are applied in declaration order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SeqOutcome {
    pub seq_id: SeqId,
    /// Drop every token from this index on (a step the LLM rewrites).
    pub rollback_to: Option<usize>,
    /// For a verify row: `(drafted, accepted)`; the KV of rejected drafts is
    /// rolled back in both models.
    pub drafts: Option<(usize, usize)>,
    /// Finalised tokens to append, all written by `writer`.
    pub appended: Vec<TokenId>,
    pub writer: Option<Model>,
    /// A new reasoning step starts now, written by this model (counts steps).
    pub step_started: Option<Model>,
    /// The current step, counted as the SLM's, is being rewritten by the LLM.
    pub step_rewritten: bool,
    /// Move the sequence to this model's running queue.
    pub route_to: Option<Model>,
    /// The end-of-reasoning marker appeared: the answer phase begins.
    pub enter_answer: bool,
    /// The SLM finished a step the LLM must score before it is kept.
    pub request_judge: bool,
    /// The last token ended a step (or the reasoning): the next token opens
    /// one, so the SLM's next logits are a glimpse and the LLM may catch up
    /// beside it in a [`RowKind::Shadow`] row. Applied before `step_rewritten`.
    pub step_ended: bool,
    /// The sequence is done (stop, length); its blocks are freed now.
    pub finished: bool,
}

pub struct Scheduler {
    config: SchedulerConfig,
    pools: [BlockPool; 2],
    seqs: FxHashMap<SeqId, Sequence>,
    waiting: TenantQueues,
    /// Running sequences in admission order (both queues).
    running: Vec<SeqId>,
    admissions: u64,
    num_preemptions: u64,
}

/// Result of trying to place one running sequence in the plan.
enum Placement {
    Scheduled,
    /// Nothing fits this iteration (budget or batch full); try again next time.
    Skipped,
    /// Its pool is out of blocks; something must be preempted.
    OutOfBlocks,
    /// Its writer is remote: nothing to run here.
    Remote,
}

/// The (at most two) rows one sequence needs in an iteration.
#[derive(Default)]
struct Rows([Option<RowPlan>; 2]);

impl Rows {
    fn one(row: RowPlan) -> Self {
        Rows([Some(row), None])
    }

    fn is_empty(&self) -> bool {
        self.0[0].is_none()
    }

    fn iter(&self) -> impl Iterator<Item = &RowPlan> {
        self.0.iter().flatten()
    }
}

/// One row before it is committed to the plan.
struct RowPlan {
    model: Model,
    kind: RowKind,
    start: usize,
    end: usize,
    /// Positions past `end` to reserve (draft tokens).
    extra: usize,
    num_logits: usize,
}

impl Scheduler {
    pub fn new(config: SchedulerConfig) -> Self {
        let pools = [
            BlockPool::new(config.num_blocks[0], config.block_size),
            BlockPool::new(config.num_blocks[1], config.block_size),
        ];
        let waiting = TenantQueues::new(config.tenant_weights.clone());
        Self {
            config,
            pools,
            seqs: FxHashMap::default(),
            waiting,
            running: Vec::new(),
            admissions: 0,
            num_preemptions: 0,
        }
    }

    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }

    pub fn block_size(&self) -> usize {
        self.config.block_size
    }

    pub fn pool(&self, model: Model) -> &BlockPool {
        &self.pools[model.idx()]
    }

    /// Forgets both models' cached prefixes that no sequence holds; returns
    /// how many blocks were forgotten.
    pub fn reset_prefix_cache(&mut self) -> usize {
        self.pools
            .iter_mut()
            .map(BlockPool::reset_prefix_cache)
            .sum()
    }

    pub fn seq(&self, id: SeqId) -> Option<&Sequence> {
        self.seqs.get(&id)
    }

    pub fn seqs(&self) -> impl Iterator<Item = &Sequence> {
        self.seqs.values()
    }

    pub fn num_waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Running sequences whose current step `model` writes.
    pub fn num_running(&self, model: Model) -> usize {
        self.running
            .iter()
            .filter(|id| self.seqs[id].writer == model)
            .count()
    }

    pub fn has_work(&self) -> bool {
        !self.seqs.is_empty()
    }

    pub fn num_preemptions(&self) -> u64 {
        self.num_preemptions
    }

    pub fn prefix_cache_stats(&self, model: Model) -> PrefixCacheStats {
        self.pools[model.idx()].stats()
    }

    /// Queues a new sequence. Fails if it could never fit in a pool.
    pub fn add(&mut self, seq: Sequence) -> Result<(), ScheduleError> {
        if self.seqs.contains_key(&seq.id) {
            return Err(ScheduleError::DuplicateId(seq.id));
        }
        if seq.tokens.is_empty() {
            return Err(ScheduleError::EmptyPrompt);
        }
        // The most positions it ever holds: its last token is sampled, never fed back,
        // and drafts stop one short of the tokens left (`draft_depth`), so a row never
        // reaches past prompt + max_tokens - 1.
        let max_len = (seq.prompt_len + seq.sampling.max_tokens)
            .saturating_sub(1)
            .max(seq.prompt_len);
        let needed = max_len.div_ceil(self.config.block_size);
        for model in Model::BOTH {
            if self.config.remote[model.idx()] {
                continue;
            }
            let capacity = self.config.num_blocks[model.idx()];
            if needed > capacity {
                let model = if model == Model::Slm { "SLM" } else { "LLM" };
                return Err(ScheduleError::NeverFits {
                    model,
                    needed,
                    capacity,
                });
            }
        }
        self.waiting.push_back(&seq.tenant, seq.id);
        self.seqs.insert(seq.id, seq);
        Ok(())
    }

    /// Cancels a sequence wherever it is and frees everything it holds.
    /// Returns false if it was unknown (already finished).
    pub fn abort(&mut self, id: SeqId) -> bool {
        let Some(seq) = self.seqs.get(&id) else {
            return false;
        };
        match seq.status {
            SeqStatus::Waiting => {
                let tenant = seq.tenant.clone();
                self.waiting.remove(&tenant, id);
            }
            SeqStatus::Running => self.running.retain(|&s| s != id),
        }
        self.release(id);
        true
    }

    /// Builds the next iteration's batches.
    pub fn schedule(&mut self) -> IterationPlan {
        let mut plan = IterationPlan::default();
        for b in &mut plan.batches {
            b.rows.reserve(self.running.len());
        }
        let mut budget = self.config.max_num_batched_tokens;
        // Sequences a remote writes are parked: never placed, never victims
        // (their reply must find them running).
        let mut order: Vec<SeqId> = self
            .running
            .iter()
            .copied()
            .filter(|id| !self.is_remote(self.seqs[id].writer))
            .collect();
        let mut i = 0;
        while i < order.len() {
            let id = order[i];
            self.match_cached_prefix(id);
            match self.place_running(id, &mut budget, &mut plan) {
                Placement::Scheduled | Placement::Skipped | Placement::Remote => i += 1,
                Placement::OutOfBlocks => {
                    // Victims come from the tail: those not yet placed in this
                    // plan. If the tail is this sequence itself, it yields.
                    let Some(victim) = order.pop() else { break };
                    self.preempt(victim);
                    plan.preempted.push(victim);
                    if victim == id {
                        break;
                    }
                }
            }
        }
        if plan.preempted.is_empty() {
            self.admit_waiting(&mut budget, &mut plan);
        }
        plan
    }

    pub fn is_remote(&self, model: Model) -> bool {
        self.config.remote[model.idx()]
    }

    /// Running sequences whose current step a remote model must write and
    /// that were not handed out yet, oldest admitted first. They count as
    /// handed out (`awaiting_remote`) until an outcome for them is applied.
    pub fn take_remote_ready(&mut self) -> Vec<SeqId> {
        let mut ready = Vec::new();
        for &id in &self.running {
            let seq = self.seqs.get_mut(&id).expect("running sequence exists");
            if self.config.remote[seq.writer.idx()] && !seq.awaiting_remote {
                seq.awaiting_remote = true;
                ready.push(id);
            }
        }
        ready
    }

    /// Applies the engine's conclusions for this iteration.
    pub fn update(&mut self, outcomes: &[SeqOutcome]) {
        for out in outcomes {
            self.apply(out);
        }
    }

    fn apply(&mut self, out: &SeqOutcome) {
        let Some(seq) = self.seqs.get_mut(&out.seq_id) else {
            return;
        };
        if seq.status != SeqStatus::Running {
            return;
        }
        let pools = &mut self.pools;
        seq.route
            .apply(out, seq.writer, seq.prompt_len, seq.tokens.len());
        if let Some(len) = out.rollback_to {
            let len = len.clamp(seq.prompt_len, seq.tokens.len());
            seq.tokens.truncate(len);
            for m in Model::BOTH {
                seq.tables[m.idx()].truncate(&mut pools[m.idx()], len);
            }
        }
        if let Some((drafted, accepted)) = out.drafts {
            // Both models fed the drafts optimistically; keep only the
            // accepted ones.
            let keep = seq.tokens.len() + accepted.min(drafted);
            for m in Model::BOTH {
                seq.tables[m.idx()].truncate(&mut pools[m.idx()], keep);
            }
        }
        seq.tokens.extend_from_slice(&out.appended);
        if let Some(model) = out.route_to {
            seq.writer = model;
        }
        seq.awaiting_judge = out.request_judge;
        seq.awaiting_remote = false;
        if self.config.enable_prefix_caching {
            for m in Model::BOTH {
                seq.tables[m.idx()].cache_full_blocks(
                    &mut pools[m.idx()],
                    &seq.tokens,
                    &seq.tenant,
                );
            }
        }
        if out.finished {
            self.running.retain(|&s| s != out.seq_id);
            self.release(out.seq_id);
        }
    }

    fn release(&mut self, id: SeqId) {
        if let Some(mut seq) = self.seqs.remove(&id) {
            for m in Model::BOTH {
                seq.tables[m.idx()].free(&mut self.pools[m.idx()]);
            }
        }
    }

    fn preempt(&mut self, id: SeqId) {
        let Some(seq) = self.seqs.get_mut(&id) else {
            return;
        };
        for m in Model::BOTH {
            seq.tables[m.idx()].free(&mut self.pools[m.idx()]);
        }
        seq.status = SeqStatus::Waiting;
        seq.awaiting_judge = false;
        seq.num_preemptions += 1;
        let tenant = seq.tenant.clone();
        self.running.retain(|&s| s != id);
        self.waiting.push_front(&tenant, id);
        self.num_preemptions += 1;
    }

    /// Speculation depth for this sequence now (0 = plain decoding; always
    /// 0 with a remote model, whose distributions are not at hand).
    fn draft_depth(&self, seq: &Sequence) -> usize {
        if seq.writer != Model::Llm || seq.awaiting_judge || self.config.remote.contains(&true) {
            return 0;
        }
        if self.speculation_paused() {
            return 0;
        }
        seq.routing
            .speculative_k
            .min(seq.remaining_tokens().saturating_sub(1))
    }

    /// Whether the load (running + waiting) is above
    /// [`SchedulerConfig::speculative_disable_by_batch_size`]. Building a plan
    /// only moves sequences between the two (admission, preemption), so every
    /// sequence of a plan gets the same answer.
    fn speculation_paused(&self) -> bool {
        let load = self.running.len() + self.waiting.len();
        self.config
            .speculative_disable_by_batch_size
            .is_some_and(|n| load > n)
    }

    /// Most tokens a splittable row may feed this iteration.
    fn chunk_cap(&self) -> usize {
        match self.config.long_prefill_token_threshold {
            Some(t) if t > 0 => t,
            _ => usize::MAX,
        }
    }

    /// Rows a running sequence needs this iteration, given token budgets.
    fn plan_rows(&self, seq: &Sequence, budget: &[usize; 2], batch_rows: [usize; 2]) -> Rows {
        let len = seq.tokens.len();
        let room = |m: Model| batch_rows[m.idx()] < self.config.max_num_seqs[m.idx()];
        // A model about to produce logits must re-feed at least the last token.
        let start = |m: Model| seq.tables[m.idx()].computed_len.min(len - 1);
        let kind_for = |start: usize| {
            if start < seq.prompt_len {
                RowKind::Prefill
            } else if len - start == 1 {
                RowKind::Decode
            } else {
                RowKind::CatchUp
            }
        };

        if seq.awaiting_judge {
            let llm = Model::Llm;
            if !room(llm) {
                return Rows::default();
            }
            let judge_from = seq.route.step_start.saturating_sub(1);
            let s = seq.tables[llm.idx()].computed_len.min(judge_from);
            if s < judge_from {
                // Catch up on the context before the step first, in chunks.
                let n = (judge_from - s)
                    .min(budget[llm.idx()])
                    .min(self.chunk_cap());
                if n == 0 {
                    return Rows::default();
                }
                return Rows::one(RowPlan {
                    model: llm,
                    kind: RowKind::CatchUp,
                    start: s,
                    end: s + n,
                    extra: 0,
                    num_logits: 0,
                });
            }
            let n = len - s;
            // A judge row is never split; one larger than the whole budget
            // may run alone.
            let fits = n <= budget[llm.idx()]
                || budget[llm.idx()] == self.config.max_num_batched_tokens[llm.idx()];
            if !fits {
                return Rows::default();
            }
            return Rows::one(RowPlan {
                model: llm,
                kind: RowKind::Judge,
                start: s,
                end: len,
                extra: 0,
                num_logits: n,
            });
        }

        let k = self.draft_depth(seq);
        if k > 0 {
            let (slm, llm) = (Model::Slm, Model::Llm);
            let (ss, ls) = (start(slm), start(llm));
            let slm_tokens = (len - ss) + (k - 1);
            let llm_tokens = (len - ls) + k;
            if room(slm)
                && room(llm)
                && slm_tokens <= budget[slm.idx()]
                && llm_tokens <= budget[llm.idx()]
            {
                return Rows([
                    Some(RowPlan {
                        model: slm,
                        kind: RowKind::Draft { k },
                        start: ss,
                        end: len,
                        extra: k - 1,
                        num_logits: 1,
                    }),
                    Some(RowPlan {
                        model: llm,
                        kind: RowKind::Verify { k },
                        start: ls,
                        end: len,
                        extra: k,
                        num_logits: k + 1,
                    }),
                ]);
            }
        }

        let w = seq.writer;
        if !room(w) {
            return Rows::default();
        }
        let s = start(w);
        let n = (len - s).min(budget[w.idx()]).min(self.chunk_cap());
        if n == 0 {
            return Rows::default();
        }
        let num_logits = usize::from(s + n == len);
        let row = RowPlan {
            model: w,
            kind: kind_for(s),
            start: s,
            end: s + n,
            extra: 0,
            num_logits,
        };
        let llm = Model::Llm;
        let ls = start(llm);
        let shadow = num_logits == 1
            && self.shadows_glimpse(seq)
            && room(llm)
            && len - ls <= budget[llm.idx()];
        if !shadow {
            return Rows::one(row);
        }
        Rows([
            Some(row),
            Some(RowPlan {
                model: llm,
                kind: RowKind::Shadow,
                start: ls,
                end: len,
                extra: 0,
                num_logits: 1,
            }),
        ])
    }

    /// Whether the SLM's next logits are a glimpse that may hand the step to
    /// a local LLM, so the LLM should catch up beside it (see
    /// [`RowKind::Shadow`]).
    fn shadows_glimpse(&self, seq: &Sequence) -> bool {
        seq.writer == Model::Slm
            && seq.route.glimpse_next()
            && seq.routing.eager_catch_up
            && !seq.awaiting_judge
            && !self.config.remote.contains(&true)
            && seq.routing.policy.rules().glimpse_may_hand_to_llm()
    }

    /// Every local model the sequence's next rows feed and that holds none
    /// of it yet reuses the cached full blocks of what the sequence holds:
    /// all of them at admission, and later a model that joins (glimp's LLM
    /// on the first step handed to it with lazy catch-up, a judge's LLM), so
    /// a prompt a model has seen before is not computed again.
    fn match_cached_prefix(&mut self, id: SeqId) {
        if !self.config.enable_prefix_caching {
            return;
        }
        let seq = &self.seqs[&id];
        let fed = Model::BOTH.map(|m| {
            let table = &seq.tables[m.idx()];
            !self.config.remote[m.idx()]
                && table.is_empty()
                && table.computed_len == 0
                && (m == seq.writer
                    || (m == Model::Llm && (seq.awaiting_judge || self.shadows_glimpse(seq)))
                    || (m == Model::Slm && self.draft_depth(seq) > 0))
        });
        let seq = self.seqs.get_mut(&id).expect("sequence exists");
        for m in Model::BOTH.into_iter().filter(|m| fed[m.idx()]) {
            seq.tables[m.idx()].match_prefix(&mut self.pools[m.idx()], &seq.tokens, &seq.tenant);
        }
    }

    fn place_running(
        &mut self,
        id: SeqId,
        budget: &mut [usize; 2],
        plan: &mut IterationPlan,
    ) -> Placement {
        if self.is_remote(self.seqs[&id].writer) {
            return Placement::Remote;
        }
        let batch_rows = [plan.batches[0].rows.len(), plan.batches[1].rows.len()];
        let rows = self.plan_rows(&self.seqs[&id], budget, batch_rows);
        if rows.is_empty() {
            return Placement::Skipped;
        }
        let seq = self.seqs.get_mut(&id).expect("running sequence exists");
        for r in rows.iter() {
            let m = r.model.idx();
            let table = &mut seq.tables[m];
            // Cut back first: a re-fed position overwrites its slot.
            if table.computed_len > r.start {
                table.computed_len = r.start;
            }
            if !table.reserve(&mut self.pools[m], r.end + r.extra) {
                return Placement::OutOfBlocks;
            }
        }
        for r in rows.0.into_iter().flatten() {
            Self::commit_row(seq, r, budget, plan);
        }
        Placement::Scheduled
    }

    fn commit_row(
        seq: &mut Sequence,
        r: RowPlan,
        budget: &mut [usize; 2],
        plan: &mut IterationPlan,
    ) {
        let m = r.model.idx();
        let table: &mut BlockTable = &mut seq.tables[m];
        table.computed_len = r.end + r.extra;
        budget[m] = budget[m].saturating_sub(r.end - r.start + r.extra);
        let blocks: Vec<BlockId> = table.blocks.clone();
        plan.batches[m].rows.push(BatchRow {
            seq_id: seq.id,
            kind: r.kind,
            token_ids: seq.tokens[r.start..r.end].to_vec(),
            start_pos: r.start,
            block_table: blocks,
            num_logits: r.num_logits,
        });
    }

    fn admit_waiting(&mut self, budget: &mut [usize; 2], plan: &mut IterationPlan) {
        while let Some((tenant, id)) = self.waiting.peek() {
            let tenant = tenant.to_string();
            let w = self.seqs[&id].writer;
            let queue_len = self
                .running
                .iter()
                .filter(|s| self.seqs[s].writer == w)
                .count();
            if queue_len >= self.config.max_num_seqs[w.idx()] {
                break;
            }
            // Reuse cached prefixes in every table the first rows will feed,
            // then plan the sequence exactly like a running one.
            self.match_cached_prefix(id);
            match self.place_running(id, budget, plan) {
                Placement::Scheduled | Placement::Remote => {
                    self.waiting.pop(&tenant);
                    self.admissions += 1;
                    let seq = self.seqs.get_mut(&id).expect("waiting sequence exists");
                    seq.status = SeqStatus::Running;
                    seq.admitted_at = self.admissions;
                    self.running.push(id);
                }
                Placement::Skipped | Placement::OutOfBlocks => {
                    let seq = self.seqs.get_mut(&id).expect("waiting sequence exists");
                    for m in Model::BOTH {
                        seq.tables[m.idx()].free(&mut self.pools[m.idx()]);
                    }
                    break;
                }
            }
        }
    }

    /// Checks every bookkeeping invariant; for tests and debug builds.
    /// * each block's ref count equals the number of block tables holding it;
    /// * each pool's free list holds exactly the unreferenced blocks;
    /// * tables are long enough for their computed positions;
    /// * waiting sequences hold no blocks; queues and states agree.
    pub fn check_invariants(&self) -> Result<(), String> {
        for m in Model::BOTH {
            let pool = &self.pools[m.idx()];
            pool.check_consistency()?;
            let mut holders: HashMap<BlockId, u32> = HashMap::new();
            for seq in self.seqs.values() {
                let t = &seq.tables[m.idx()];
                if t.computed_len > t.capacity(self.config.block_size) {
                    return Err(format!(
                        "seq {} {:?}: computed {} > capacity",
                        seq.id, m, t.computed_len
                    ));
                }
                for &b in &t.blocks {
                    *holders.entry(b).or_default() += 1;
                }
                // Between iterations no model holds KV past the finalised
                // tokens: rejected drafts were rolled back.
                if t.computed_len > seq.tokens.len() {
                    return Err(format!(
                        "seq {} {:?}: KV for {} positions but only {} tokens",
                        seq.id,
                        m,
                        t.computed_len,
                        seq.tokens.len()
                    ));
                }
                if seq.status == SeqStatus::Waiting && !t.blocks.is_empty() {
                    return Err(format!("waiting seq {} holds blocks", seq.id));
                }
            }
            for b in 0..pool.num_blocks() as BlockId {
                let held = holders.get(&b).copied().unwrap_or(0);
                if pool.ref_count(b) != held {
                    return Err(format!(
                        "{m:?} block {b}: ref_count {} but {held} holders",
                        pool.ref_count(b)
                    ));
                }
            }
        }
        for seq in self.seqs.values() {
            if seq.awaiting_remote
                && (seq.status != SeqStatus::Running || !self.is_remote(seq.writer))
            {
                return Err(format!(
                    "seq {} awaits a remote reply but is {:?} with writer {:?}",
                    seq.id, seq.status, seq.writer
                ));
            }
            for m in Model::BOTH {
                if self.is_remote(m) && !seq.tables[m.idx()].blocks.is_empty() {
                    return Err(format!("seq {} holds blocks of remote {m:?}", seq.id));
                }
            }
        }
        let running: usize = self
            .seqs
            .values()
            .filter(|s| s.status == SeqStatus::Running)
            .count();
        if running != self.running.len() {
            return Err(format!(
                "{} running seqs but running list has {}",
                running,
                self.running.len()
            ));
        }
        let waiting = self
            .seqs
            .values()
            .filter(|s| s.status == SeqStatus::Waiting)
            .count();
        if waiting != self.waiting.len() {
            return Err(format!(
                "{} waiting seqs but queues hold {}",
                waiting,
                self.waiting.len()
            ));
        }
        Ok(())
    }
}
