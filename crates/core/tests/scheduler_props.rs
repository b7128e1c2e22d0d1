//! Property tests: random multi-tenant workloads through the scheduler, with
//! every invariant checked after every iteration.

use std::collections::HashMap;

use glimprouter_core::params::{Policy, RoutingParams, SamplingParams};
use glimprouter_core::scheduler::{IterationPlan, Scheduler, SchedulerConfig, SeqOutcome};
use glimprouter_core::sequence::Sequence;
use glimprouter_core::{BlockId, Model, RowKind, SeqId};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const TENANTS: [&str; 3] = ["acme", "globex", "initech"];

#[derive(Debug, Clone)]
struct Workload {
    seed: u64,
    block_size: usize,
    num_blocks: [usize; 2],
    budget: [usize; 2],
    max_seqs: [usize; 2],
    num_requests: usize,
    spec_k: usize,
    /// The LLM is a remote tier: no LLM pool, its steps come back as replies.
    remote_llm: bool,
    /// Speculation pauses above this load (None = never).
    spec_off_above: Option<usize>,
    /// Longest prefill/catch-up row (None = budget only).
    chunk_cap: Option<usize>,
}

fn workloads() -> impl Strategy<Value = Workload> {
    (
        any::<u64>(),
        prop::sample::select(vec![1usize, 4, 16]),
        12usize..80,
        12usize..80,
        8usize..96,
        1usize..12,
        1usize..40,
        0usize..4,
        prop::bool::weighted(0.25),
        prop::option::of(0usize..8),
        prop::option::of(1usize..24),
    )
        .prop_map(
            |(
                seed,
                block_size,
                b0,
                b1,
                budget,
                max_seqs,
                num_requests,
                spec_k,
                remote_llm,
                spec_off_above,
                chunk_cap,
            )| {
                Workload {
                    seed,
                    block_size,
                    num_blocks: [
                        b0 * 16 / block_size.max(1) + 4,
                        b1 * 16 / block_size.max(1) + 4,
                    ],
                    budget: [budget, budget + 8],
                    max_seqs: [max_seqs, max_seqs],
                    num_requests,
                    spec_k,
                    remote_llm,
                    spec_off_above,
                    chunk_cap,
                }
            },
        )
}

/// Records which tenant wrote each block's KV, to catch cross-tenant reuse.
#[derive(Default)]
struct Shadow {
    writer_tenant: [HashMap<BlockId, String>; 2],
}

impl Shadow {
    fn record(&mut self, sched: &Scheduler, plan: &IterationPlan) {
        for m in Model::BOTH {
            for row in &plan.batch(m).rows {
                let seq = sched.seq(row.seq_id).unwrap();
                let bs = sched.block_size();
                // Draft and verify rows also write the draft positions.
                let drafts = match row.kind {
                    RowKind::Draft { k } => k - 1,
                    RowKind::Verify { k } => k,
                    _ => 0,
                };
                let end = row.start_pos + row.token_ids.len() + drafts;
                for pos in row.start_pos..end {
                    self.writer_tenant[m.idx()]
                        .insert(row.block_table[pos / bs], seq.tenant.clone());
                }
            }
        }
    }

    fn check(&self, sched: &Scheduler) -> Result<(), String> {
        for seq in sched.seqs() {
            for m in Model::BOTH {
                let t = seq.table(m);
                let full = t.computed_len / sched.block_size();
                for &b in &t.blocks[..full.min(t.blocks.len())] {
                    if let Some(w) = self.writer_tenant[m.idx()].get(&b) {
                        if w != &seq.tenant {
                            return Err(format!(
                                "seq {} of {} reads block {b} written by {w}",
                                seq.id, seq.tenant
                            ));
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

fn make_request(rng: &mut ChaCha8Rng, id: SeqId, w: &Workload, shared: &[Vec<u32>]) -> Sequence {
    let tenant = TENANTS[rng.random_range(0..TENANTS.len())];
    let mut prompt = shared[rng.random_range(0..shared.len())].clone();
    let extra = rng.random_range(1..40);
    prompt.extend((0..extra).map(|_| rng.random_range(0..50u32)));
    let sampling = SamplingParams {
        max_tokens: rng.random_range(1..30),
        ..SamplingParams::greedy(1)
    };
    let routing = RoutingParams {
        policy: Policy::Glimp,
        speculative_k: w.spec_k,
        ..RoutingParams::default()
    };
    let writer = if rng.random_bool(0.5) {
        Model::Slm
    } else {
        Model::Llm
    };
    Sequence::new(id, tenant, prompt, sampling, routing, writer)
}

/// Plays the engine: turns rows with logits into random but well-formed outcomes.
fn outcomes(rng: &mut ChaCha8Rng, sched: &Scheduler, plan: &IterationPlan) -> Vec<SeqOutcome> {
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for m in [Model::Llm, Model::Slm] {
        for row in &plan.batch(m).rows {
            // A shadow's outcome comes with its glimpse (the SLM row).
            if row.num_logits == 0 || row.kind == RowKind::Shadow || !seen.insert(row.seq_id) {
                continue;
            }
            let seq = sched.seq(row.seq_id).unwrap();
            let mut o = SeqOutcome {
                seq_id: row.seq_id,
                ..Default::default()
            };
            let remaining = seq.remaining_tokens();
            match row.kind {
                RowKind::Verify { k } => {
                    let accepted = rng.random_range(0..=k);
                    o.drafts = Some((k, accepted));
                    let n = (accepted + 1).min(remaining);
                    o.appended = (0..n).map(|_| rng.random_range(0..50)).collect();
                    o.writer = Some(Model::Llm);
                }
                RowKind::Draft { .. } => continue, // the verify row speaks for it
                RowKind::Judge => {
                    if rng.random_bool(0.5) {
                        o.rollback_to = Some(seq.route.step_start);
                        o.route_to = Some(Model::Llm);
                    }
                }
                _ => {
                    let shadowed = plan
                        .batch(Model::Llm)
                        .rows
                        .iter()
                        .any(|r| r.seq_id == row.seq_id && r.kind == RowKind::Shadow);
                    if shadowed && rng.random_bool(0.5) {
                        // The glimpse hands the step to the LLM, whose shadow
                        // logits give the step's first token right away.
                        o.step_started = Some(Model::Llm);
                        o.route_to = Some(Model::Llm);
                        o.appended = vec![rng.random_range(0..50)];
                        o.writer = Some(Model::Llm);
                    } else if rng.random_bool(0.15) {
                        // A glimpse that sends the step to the other model.
                        o.step_started = Some(seq.writer.other());
                        o.route_to = Some(seq.writer.other());
                    } else {
                        o.appended = vec![rng.random_range(0..50)];
                        o.writer = Some(seq.writer);
                        // SpecReason's judge needs a local LLM.
                        let llm_local = !sched.is_remote(Model::Llm);
                        if llm_local && rng.random_bool(0.05) && seq.writer == Model::Slm {
                            o.request_judge = true;
                        }
                    }
                }
            }
            let produced = seq.output_len() + o.appended.len();
            o.finished = produced >= seq.sampling.max_tokens || rng.random_bool(0.02);
            o.step_ended = rng.random_bool(0.3);
            out.push(o);
        }
    }
    out
}

/// Plays a remote LLM tier: a written step of a few tokens, then back to the
/// SLM (or on with the LLM), or the end of the request.
fn remote_reply(rng: &mut ChaCha8Rng, seq: &Sequence) -> SeqOutcome {
    let n = rng.random_range(1..6).min(seq.remaining_tokens());
    let finished = seq.output_len() + n >= seq.sampling.max_tokens || rng.random_bool(0.05);
    SeqOutcome {
        seq_id: seq.id,
        appended: (0..n).map(|_| rng.random_range(0..50)).collect(),
        writer: Some(Model::Llm),
        route_to: rng.random_bool(0.7).then_some(Model::Slm),
        finished,
        ..Default::default()
    }
}

fn run(w: &Workload) -> Result<(), String> {
    let mut rng = ChaCha8Rng::seed_from_u64(w.seed);
    let mut num_blocks = w.num_blocks;
    if w.remote_llm {
        num_blocks[Model::Llm.idx()] = 0;
    }
    let config = SchedulerConfig {
        block_size: w.block_size,
        num_blocks,
        max_num_batched_tokens: w.budget,
        max_num_seqs: w.max_seqs,
        enable_prefix_caching: true,
        tenant_weights: HashMap::from([("acme".to_string(), 2.0)]),
        remote: [false, w.remote_llm],
        speculative_disable_by_batch_size: w.spec_off_above,
        long_prefill_token_threshold: w.chunk_cap,
    };
    let mut sched = Scheduler::new(config);
    let mut shadow = Shadow::default();
    let shared: Vec<Vec<u32>> = (0..3)
        .map(|i| (0..(i * 13 + 5)).map(|t| t as u32 % 50).collect())
        .collect();
    let mut next_id = 0;
    let mut accepted = Vec::new();
    let mut finished_by_tenant: HashMap<String, usize> = HashMap::new();
    let mut tenant_of = HashMap::new();
    // Remote steps handed out and not yet answered.
    let mut in_flight: Vec<SeqId> = Vec::new();
    for iteration in 0..5000 {
        if next_id < w.num_requests as u64 && rng.random_bool(0.5) {
            let seq = make_request(&mut rng, next_id, w, &shared);
            tenant_of.insert(next_id, seq.tenant.clone());
            if sched.add(seq).is_ok() {
                accepted.push(next_id);
            }
            next_id += 1;
        }
        if rng.random_bool(0.02) && !accepted.is_empty() {
            let victim = accepted[rng.random_range(0..accepted.len())];
            sched.abort(victim);
        }
        let plan = sched.schedule();
        for m in Model::BOTH {
            let b = plan.batch(m);
            if b.num_tokens() > w.budget[m.idx()] {
                // Only a single judge row may exceed the budget.
                let judge_alone = b.rows.len() == 1 && b.rows[0].kind == RowKind::Judge;
                if !judge_alone {
                    return Err(format!(
                        "iteration {iteration}: {m:?} batch of {} tokens over budget",
                        b.num_tokens()
                    ));
                }
            }
            if b.rows.len() > w.max_seqs[m.idx()] {
                return Err(format!("{m:?} batch has {} rows", b.rows.len()));
            }
            for row in &b.rows {
                let splittable = matches!(row.kind, RowKind::Prefill | RowKind::CatchUp);
                if let (true, Some(chunk)) = (splittable, w.chunk_cap) {
                    if row.token_ids.len() > chunk {
                        return Err(format!(
                            "iteration {iteration}: {:?} row of seq {} feeds {} tokens, cap {chunk}",
                            row.kind,
                            row.seq_id,
                            row.token_ids.len()
                        ));
                    }
                }
                let cap = row.block_table.len() * w.block_size;
                if row.start_pos + row.token_ids.len() > cap {
                    return Err(format!(
                        "row of seq {} has no slot for its tokens",
                        row.seq_id
                    ));
                }
            }
        }
        shadow.record(&sched, &plan);
        let mut outs = outcomes(&mut rng, &sched, &plan);
        for id in sched.take_remote_ready() {
            if in_flight.contains(&id) {
                return Err(format!("iteration {iteration}: seq {id} handed out twice"));
            }
            in_flight.push(id);
        }
        // Replies arrive in any order, some iterations later; aborted
        // sequences' replies arrive too and must be ignored.
        let mut i = 0;
        while i < in_flight.len() {
            if rng.random_bool(0.3) {
                let id = in_flight.swap_remove(i);
                if let Some(seq) = sched.seq(id) {
                    outs.push(remote_reply(&mut rng, seq));
                }
            } else {
                i += 1;
            }
        }
        for o in &outs {
            if o.finished {
                *finished_by_tenant
                    .entry(tenant_of[&o.seq_id].clone())
                    .or_default() += 1;
            }
        }
        sched.update(&outs);
        sched
            .check_invariants()
            .map_err(|e| format!("iteration {iteration}: {e}"))?;
        shadow
            .check(&sched)
            .map_err(|e| format!("iteration {iteration}: {e}"))?;
        if next_id >= w.num_requests as u64 && !sched.has_work() {
            break;
        }
    }
    if sched.has_work() {
        return Err(format!(
            "not every sequence finished: {} left ({} waiting)",
            sched.seqs().count(),
            sched.num_waiting()
        ));
    }
    for m in Model::BOTH {
        let pool = sched.pool(m);
        if pool.num_free() != pool.num_blocks() {
            return Err(format!(
                "{m:?} pool leaked: {} of {} free",
                pool.num_free(),
                pool.num_blocks()
            ));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn random_workloads_keep_every_invariant(w in workloads()) {
        if let Err(e) = run(&w) {
            prop_assert!(false, "{e} in {w:?}");
        }
    }
}
