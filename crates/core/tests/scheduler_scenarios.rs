//! The scenarios vLLM's own scheduler and prefix-caching tests cover, one by one.

use glimprouter_core::params::{RoutingParams, SamplingParams};
use glimprouter_core::scheduler::{ScheduleError, Scheduler, SchedulerConfig, SeqOutcome};
use glimprouter_core::sequence::{SeqStatus, Sequence};
use glimprouter_core::{Model, RowKind, SeqId};

fn config(num_blocks: usize, budget: usize) -> SchedulerConfig {
    SchedulerConfig {
        block_size: 4,
        num_blocks: [num_blocks, num_blocks],
        max_num_batched_tokens: [budget, budget],
        max_num_seqs: [8, 8],
        ..SchedulerConfig::default()
    }
}

fn seq(id: SeqId, tenant: &str, prompt: Vec<u32>, max_tokens: usize) -> Sequence {
    Sequence::new(
        id,
        tenant,
        prompt,
        SamplingParams::greedy(max_tokens),
        RoutingParams::default(),
        Model::Slm,
    )
}

/// A sequence whose LLM catches up only when a step is handed to it.
fn lazy_seq(id: SeqId, prompt: Vec<u32>, max_tokens: usize) -> Sequence {
    let routing = RoutingParams {
        eager_catch_up: false,
        ..RoutingParams::default()
    };
    let sampling = SamplingParams::greedy(max_tokens);
    Sequence::new(id, "t", prompt, sampling, routing, Model::Slm)
}

/// The glimpse hands the step to the LLM; the glimpsed token is dropped.
fn glimpse_to_llm(id: SeqId) -> SeqOutcome {
    SeqOutcome {
        seq_id: id,
        step_started: Some(Model::Llm),
        route_to: Some(Model::Llm),
        ..Default::default()
    }
}

fn decode(id: SeqId, token: u32) -> SeqOutcome {
    SeqOutcome {
        seq_id: id,
        appended: vec![token],
        writer: Some(Model::Slm),
        ..Default::default()
    }
}

#[test]
fn chunked_prefill_spans_iterations_and_only_the_last_chunk_gets_logits() {
    let mut s = Scheduler::new(config(64, 8));
    s.add(seq(1, "t", (0..20).collect(), 4)).unwrap();
    let mut starts = vec![];
    loop {
        let plan = s.schedule();
        let row = &plan.batch(Model::Slm).rows[0];
        starts.push((row.start_pos, row.token_ids.len(), row.num_logits));
        if row.num_logits == 1 {
            break;
        }
    }
    assert_eq!(starts, vec![(0, 8, 0), (8, 8, 0), (16, 4, 1)]);
    s.check_invariants().unwrap();
}

#[test]
fn long_prefill_threshold_spreads_a_new_prompt_while_a_stream_decodes_each_iteration() {
    let mut s = Scheduler::new(SchedulerConfig {
        long_prefill_token_threshold: Some(6),
        ..config(64, 64)
    });
    s.add(seq(1, "t", vec![1, 2, 3], 16)).unwrap();
    // The short prompt fits under the cap in one row and starts decoding.
    let plan = s.schedule();
    assert_eq!(plan.batch(Model::Slm).rows[0].token_ids.len(), 3);
    s.update(&[decode(1, 9)]);
    s.add(seq(2, "t", (0..20).collect(), 4)).unwrap();
    let mut chunks = vec![];
    for iteration in 0..4 {
        let plan = s.schedule();
        let rows = &plan.batch(Model::Slm).rows;
        let stream = rows.iter().find(|r| r.seq_id == 1).unwrap();
        assert_eq!(
            stream.token_ids.len(),
            1,
            "iteration {iteration}: the stream decodes"
        );
        let prompt = rows.iter().find(|r| r.seq_id == 2).unwrap();
        chunks.push((prompt.start_pos, prompt.token_ids.len(), prompt.num_logits));
        let mut outcomes = vec![decode(1, 9)];
        if prompt.num_logits == 1 {
            outcomes.push(decode(2, 7));
        }
        s.update(&outcomes);
    }
    assert_eq!(chunks, vec![(0, 6, 0), (6, 6, 0), (12, 6, 0), (18, 2, 1)]);
    s.check_invariants().unwrap();
}

#[test]
fn decode_rows_feed_the_last_token() {
    let mut s = Scheduler::new(config(64, 64));
    s.add(seq(1, "t", vec![1, 2, 3], 4)).unwrap();
    s.schedule();
    s.update(&[decode(1, 9)]);
    let plan = s.schedule();
    let row = &plan.batch(Model::Slm).rows[0];
    assert_eq!(
        (
            row.kind,
            row.token_ids.clone(),
            row.start_pos,
            row.num_logits
        ),
        (RowKind::Decode, vec![9], 3, 1)
    );
}

#[test]
fn prefix_hit_skips_cached_blocks_for_the_same_tenant_only() {
    let mut s = Scheduler::new(config(64, 64));
    let prompt: Vec<u32> = (0..10).collect();
    s.add(seq(1, "alice", prompt.clone(), 1)).unwrap();
    s.schedule();
    s.update(&[SeqOutcome {
        finished: true,
        ..decode(1, 5)
    }]);
    s.add(seq(2, "alice", prompt.clone(), 1)).unwrap();
    s.add(seq(3, "bob", prompt.clone(), 1)).unwrap();
    let plan = s.schedule();
    let rows = &plan.batch(Model::Slm).rows;
    let start_of = |id| rows.iter().find(|r| r.seq_id == id).unwrap().start_pos;
    assert_eq!(start_of(2), 8, "alice reuses her two full blocks");
    assert_eq!(start_of(3), 0, "bob computes everything");
    let stats = s.prefix_cache_stats(Model::Slm);
    assert_eq!((stats.queries, stats.hits), (30, 8));
}

#[test]
fn preemption_recomputes_and_resumes_with_generated_tokens() {
    // 4 blocks of 4 tokens: two 8-token prompts fit, growth does not.
    let mut s = Scheduler::new(config(4, 64));
    s.add(seq(1, "t", (0..8).collect(), 4)).unwrap();
    s.add(seq(2, "t", (10..18).collect(), 4)).unwrap();
    let plan = s.schedule();
    assert_eq!(plan.batch(Model::Slm).rows.len(), 2);
    s.update(&[decode(1, 100), decode(2, 200)]);
    // Both now need a third block each: only one can grow; the later admitted yields.
    let plan = s.schedule();
    assert_eq!(plan.preempted, vec![2]);
    assert_eq!(s.seq(2).unwrap().status(), SeqStatus::Waiting);
    assert_eq!(
        s.seq(2).unwrap().tokens.last(),
        Some(&200),
        "generated tokens are kept"
    );
    s.check_invariants().unwrap();
    // Nothing is admitted in an iteration that preempted.
    assert!(plan.batch(Model::Slm).rows.iter().all(|r| r.seq_id == 1));
    s.update(&[SeqOutcome {
        finished: true,
        ..decode(1, 101)
    }]);
    let plan = s.schedule();
    let row = &plan.batch(Model::Slm).rows[0];
    // Recompute prompt + output; its first full block was cached before the
    // preemption and is still on the free list, so only the rest is fed.
    assert_eq!(
        (row.seq_id, row.start_pos, row.token_ids.len()),
        (2, 4, 5),
        "recompute prompt + output"
    );
    assert_eq!(row.token_ids.last(), Some(&200));
    assert_eq!(s.seq(2).unwrap().num_preemptions, 1);
}

#[test]
fn abort_while_waiting_and_while_running_frees_everything() {
    let mut s = Scheduler::new(SchedulerConfig {
        max_num_seqs: [1, 1],
        ..config(16, 64)
    });
    s.add(seq(1, "t", (0..9).collect(), 8)).unwrap();
    s.add(seq(2, "t", (0..9).collect(), 8)).unwrap();
    s.schedule();
    assert_eq!(s.num_waiting(), 1);
    assert!(s.abort(2));
    assert!(s.abort(1));
    assert!(!s.abort(1), "second abort is a no-op");
    s.check_invariants().unwrap();
    assert_eq!(s.pool(Model::Slm).num_free(), 16);
    assert!(!s.has_work());
}

#[test]
fn eviction_takes_the_least_recently_freed_blocks_first() {
    let mut s = Scheduler::new(config(6, 64));
    let a: Vec<u32> = (0..9).collect();
    let b: Vec<u32> = (100..109).collect();
    for (id, p) in [(1, a.clone()), (2, b.clone())] {
        s.add(seq(id, "t", p, 1)).unwrap();
        s.schedule();
        s.update(&[SeqOutcome {
            finished: true,
            ..decode(id, 7)
        }]);
    }
    // Both prompts' blocks are cached and free. A new unrelated request that
    // needs 3 blocks evicts a's (freed first), keeping b's.
    s.add(seq(3, "t", (200..209).collect(), 1)).unwrap();
    s.schedule();
    s.update(&[SeqOutcome {
        finished: true,
        ..decode(3, 7)
    }]);
    s.add(seq(4, "t", b.clone(), 1)).unwrap();
    let plan = s.schedule();
    assert_eq!(
        plan.batch(Model::Slm).rows[0].start_pos,
        8,
        "b is still cached"
    );
    s.update(&[SeqOutcome {
        finished: true,
        ..decode(4, 7)
    }]);
    s.add(seq(5, "t", a, 1)).unwrap();
    let plan = s.schedule();
    assert_eq!(plan.batch(Model::Slm).rows[0].start_pos, 0, "a was evicted");
}

#[test]
fn a_request_that_can_never_fit_is_refused() {
    let mut s = Scheduler::new(config(4, 64));
    let err = s.add(seq(1, "t", (0..15).collect(), 8)).unwrap_err();
    assert!(matches!(err, ScheduleError::NeverFits { .. }), "{err}");
    assert!(!s.has_work());
}

#[test]
fn a_request_that_exactly_fits_runs_to_its_end_and_one_token_more_is_refused() {
    // 4 blocks of 4: 16 positions. The last token is sampled, never fed back, so a
    // 12-token prompt may ask for 5 tokens and a 16-token prompt for 1.
    for (prompt, max_tokens) in [(12, 5), (16, 1)] {
        let mut s = Scheduler::new(config(4, 64));
        s.add(seq(1, "t", (0..prompt).collect(), max_tokens))
            .unwrap_or_else(|e| panic!("{prompt} + {max_tokens}: {e}"));
        for produced in 1..=max_tokens {
            let plan = s.schedule();
            assert_eq!(plan.batch(Model::Slm).rows.len(), 1, "token {produced}");
            s.check_invariants().unwrap();
            s.update(&[SeqOutcome {
                finished: produced == max_tokens,
                ..decode(1, 7)
            }]);
        }
        assert!(!s.has_work(), "{prompt} + {max_tokens} finished");
        let err = Scheduler::new(config(4, 64))
            .add(seq(2, "t", (0..prompt).collect(), max_tokens + 1))
            .unwrap_err();
        assert!(
            matches!(
                err,
                ScheduleError::NeverFits {
                    needed: 5,
                    capacity: 4,
                    ..
                }
            ),
            "{err}"
        );
    }
}

#[test]
fn glimpse_routes_to_llm_which_catches_up_then_returns() {
    let mut s = Scheduler::new(config(64, 64));
    // Lazy catch-up (no shadow row beside the glimpse, see the test below):
    // the LLM catches up once it writes.
    s.add(lazy_seq(1, (0..6).collect(), 16)).unwrap();
    s.schedule();
    // The glimpse goes to the LLM: the token is dropped, the LLM catches up.
    s.update(&[glimpse_to_llm(1)]);
    let plan = s.schedule();
    assert!(plan.batch(Model::Slm).is_empty());
    let row = &plan.batch(Model::Llm).rows[0];
    assert_eq!(
        (row.start_pos, row.token_ids.len(), row.num_logits),
        (0, 6, 1)
    );
    s.update(&[SeqOutcome {
        seq_id: 1,
        appended: vec![50, 51],
        writer: Some(Model::Llm),
        route_to: Some(Model::Slm),
        ..Default::default()
    }]);
    // Back on the SLM: it catches up on the LLM's two tokens.
    let plan = s.schedule();
    let row = &plan.batch(Model::Slm).rows[0];
    assert_eq!((row.start_pos, row.token_ids.clone()), (6, vec![50, 51]));
    let c = s.seq(1).unwrap().route.counters;
    assert_eq!((c.steps, c.llm_steps, c.llm_tokens), (1, 1, 2));
}

#[test]
fn speculation_drafts_on_the_slm_and_verifies_on_the_llm_then_rolls_back() {
    let mut s = Scheduler::new(config(64, 64));
    let routing = RoutingParams {
        speculative_k: 3,
        ..RoutingParams::default()
    };
    s.add(Sequence::new(
        1,
        "t",
        (0..6).collect(),
        SamplingParams::greedy(16),
        routing,
        Model::Llm,
    ))
    .unwrap();
    // Speculation starts with the prompt: the SLM drafts right after its
    // prefill, the LLM verifies while it prefills.
    let plan = s.schedule();
    let d = &plan.batch(Model::Slm).rows[0];
    let v = &plan.batch(Model::Llm).rows[0];
    assert_eq!(
        (d.kind, d.start_pos, d.token_ids.len(), d.num_logits),
        (RowKind::Draft { k: 3 }, 0, 6, 1)
    );
    assert_eq!(
        (v.kind, v.start_pos, v.token_ids.len(), v.num_logits),
        (RowKind::Verify { k: 3 }, 0, 6, 4)
    );
    // One of three drafts accepted, plus the LLM's correction.
    s.update(&[SeqOutcome {
        seq_id: 1,
        drafts: Some((3, 1)),
        appended: vec![61, 62],
        writer: Some(Model::Llm),
        ..Default::default()
    }]);
    let seq = s.seq(1).unwrap();
    assert_eq!(
        seq.table(Model::Llm).computed_len,
        7,
        "prompt + the accepted draft"
    );
    assert_eq!(
        seq.table(Model::Slm).computed_len,
        7,
        "the SLM fed two drafts; one is rolled back"
    );
    assert_eq!(seq.route.counters.accepted_draft_tokens, 1);
    s.check_invariants().unwrap();
    // Next round: each model re-feeds what it lacks (the correction token).
    let plan = s.schedule();
    assert_eq!(plan.batch(Model::Slm).rows[0].token_ids, vec![62]);
    assert_eq!(plan.batch(Model::Llm).rows[0].token_ids, vec![62]);
}

#[test]
fn the_llm_catches_up_beside_a_glimpse_and_starts_its_step_at_once() {
    let mut s = Scheduler::new(config(64, 64));
    s.add(seq(1, "t", vec![1, 2, 3, 4, 5], 8)).unwrap();
    // The prompt's last SLM logits are the first glimpse: the LLM prefills
    // beside it and has the logits of the step's first token.
    let plan = s.schedule();
    let shadow = &plan.batch(Model::Llm).rows[0];
    assert_eq!(
        (
            shadow.kind,
            shadow.start_pos,
            shadow.token_ids.len(),
            shadow.num_logits
        ),
        (RowKind::Shadow, 0, 5, 1)
    );
    // The glimpse hands the step to the LLM, whose first token comes from
    // the shadow's logits in the same iteration.
    s.update(&[SeqOutcome {
        appended: vec![9],
        writer: Some(Model::Llm),
        ..glimpse_to_llm(1)
    }]);
    let plan = s.schedule();
    assert!(plan.batch(Model::Slm).is_empty());
    let row = &plan.batch(Model::Llm).rows[0];
    assert_eq!(
        (row.kind, row.start_pos, row.token_ids.clone()),
        (RowKind::Decode, 5, vec![9])
    );
    assert_eq!(s.seq(1).unwrap().route.step_start, 5);
    s.check_invariants().unwrap();

    // Mid-step no glimpse is pending, so the SLM decodes alone.
    let mut s = Scheduler::new(config(64, 64));
    s.add(seq(2, "t", vec![1, 2, 3], 8)).unwrap();
    s.schedule();
    // The glimpsed token opens the step; the next token is mid-step.
    s.update(&[SeqOutcome {
        step_started: Some(Model::Slm),
        ..decode(2, 7)
    }]);
    let plan = s.schedule();
    assert!(plan.batch(Model::Llm).is_empty(), "{plan:?}");
}

#[test]
fn lazy_catch_up_leaves_the_llm_idle_until_a_step_is_handed_to_it() {
    let mut s = Scheduler::new(config(64, 64));
    s.add(lazy_seq(1, vec![1, 2, 3, 4, 5], 8)).unwrap();
    // The first glimpse runs on the SLM alone: no LLM prefill of the prompt.
    let plan = s.schedule();
    assert!(plan.batch(Model::Llm).is_empty(), "{plan:?}");
    assert_eq!(s.seq(1).unwrap().table(Model::Llm).computed_len, 0);
    // The SLM keeps this step and writes it; the LLM still does nothing.
    s.update(&[SeqOutcome {
        step_started: Some(Model::Slm),
        ..decode(1, 7)
    }]);
    let plan = s.schedule();
    assert!(plan.batch(Model::Llm).is_empty(), "{plan:?}");
    s.update(&[SeqOutcome {
        step_ended: true,
        ..decode(1, 8)
    }]);
    let plan = s.schedule();
    assert!(plan.batch(Model::Llm).is_empty(), "{plan:?}");
    // The next glimpse hands the step to the LLM: it catches up on the
    // prompt and the SLM's step in one row whose last logits start its step.
    s.update(&[glimpse_to_llm(1)]);
    let plan = s.schedule();
    assert!(plan.batch(Model::Slm).is_empty());
    let row = &plan.batch(Model::Llm).rows[0];
    assert_eq!(
        (row.start_pos, row.token_ids.clone(), row.num_logits),
        (0, vec![1, 2, 3, 4, 5, 7, 8], 1)
    );
    s.check_invariants().unwrap();
}

#[test]
fn speculation_pauses_while_more_sequences_run_than_the_configured_batch_size() {
    let mut s = Scheduler::new(SchedulerConfig {
        speculative_disable_by_batch_size: Some(1),
        ..config(64, 64)
    });
    let llm_seq = |id| {
        let routing = RoutingParams {
            speculative_k: 2,
            ..RoutingParams::default()
        };
        Sequence::new(
            id,
            "t",
            vec![1, 2, 3],
            SamplingParams::greedy(16),
            routing,
            Model::Llm,
        )
    };
    let kinds = |plan: &glimprouter_core::scheduler::IterationPlan| {
        plan.batches
            .iter()
            .flat_map(|b| b.rows.iter().map(|r| r.kind))
            .collect::<Vec<_>>()
    };
    s.add(llm_seq(1)).unwrap();
    let plan = s.schedule();
    assert_eq!(
        kinds(&plan),
        vec![RowKind::Draft { k: 2 }, RowKind::Verify { k: 2 }]
    );
    s.update(&[SeqOutcome {
        seq_id: 1,
        drafts: Some((2, 2)),
        appended: vec![7, 8, 9],
        writer: Some(Model::Llm),
        ..Default::default()
    }]);
    // A second request arrives: two sequences exceed the limit of one, so
    // both decode plainly; the SLM's KV simply falls behind.
    s.add(llm_seq(2)).unwrap();
    let plan = s.schedule();
    assert_eq!(kinds(&plan), vec![RowKind::Decode, RowKind::Prefill]);
    s.update(&[
        SeqOutcome {
            seq_id: 1,
            appended: vec![10],
            writer: Some(Model::Llm),
            ..Default::default()
        },
        SeqOutcome {
            seq_id: 2,
            finished: true,
            ..Default::default()
        },
    ]);
    s.check_invariants().unwrap();
    // Alone again: speculation resumes, the draft row first catching the
    // SLM up on what it has not fed (its last draft, the bonus token and
    // the plain decode's token).
    let plan = s.schedule();
    let d = &plan.batch(Model::Slm).rows[0];
    assert_eq!(
        (d.kind, d.start_pos, d.token_ids.clone()),
        (RowKind::Draft { k: 2 }, 4, vec![8, 9, 10])
    );
}
