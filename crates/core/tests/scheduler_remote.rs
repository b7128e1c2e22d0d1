//! A remote LLM tier: sequences it writes are parked (no rows, no blocks of
//! that model), handed to the engine exactly once per step, never preempted,
//! and resume through an ordinary outcome.

use glimprouter_core::params::{RoutingParams, SamplingParams};
use glimprouter_core::scheduler::{Scheduler, SchedulerConfig, SeqOutcome};
use glimprouter_core::sequence::{SeqStatus, Sequence};
use glimprouter_core::{Model, RowKind, SeqId};

fn remote_llm(num_blocks: usize) -> SchedulerConfig {
    SchedulerConfig {
        block_size: 4,
        num_blocks: [num_blocks, 0],
        max_num_batched_tokens: [64, 64],
        max_num_seqs: [8, 8],
        remote: [false, true],
        ..SchedulerConfig::default()
    }
}

fn seq(id: SeqId, prompt: Vec<u32>, writer: Model, speculative_k: usize) -> Sequence {
    let routing = RoutingParams {
        speculative_k,
        ..RoutingParams::default()
    };
    Sequence::new(id, "t", prompt, SamplingParams::greedy(16), routing, writer)
}

#[test]
fn a_remote_writer_is_admitted_without_blocks_and_handed_out_once() {
    let mut s = Scheduler::new(remote_llm(16));
    // num_blocks for the LLM is 0: a local model would refuse the request.
    s.add(seq(1, vec![1, 2, 3], Model::Llm, 3)).unwrap();
    let plan = s.schedule();
    assert!(plan.is_empty(), "no rows for a remote writer: {plan:?}");
    assert_eq!(s.seq(1).unwrap().status(), SeqStatus::Running);
    assert_eq!(s.num_running(Model::Llm), 1);
    assert_eq!(s.take_remote_ready(), vec![1]);
    assert!(s.take_remote_ready().is_empty(), "handed out twice");
    assert!(s.schedule().is_empty());
    s.check_invariants().unwrap();

    // The remote wrote a step; the SLM takes the next one and catches up.
    s.update(&[SeqOutcome {
        seq_id: 1,
        appended: vec![7, 8, 9],
        writer: Some(Model::Llm),
        route_to: Some(Model::Slm),
        ..Default::default()
    }]);
    s.check_invariants().unwrap();
    assert!(s.take_remote_ready().is_empty());
    let plan = s.schedule();
    let row = &plan.batch(Model::Slm).rows[0];
    assert_eq!(
        (row.start_pos, row.token_ids.len(), row.num_logits),
        (0, 6, 1)
    );
    assert!(plan.batch(Model::Llm).is_empty());
    // Speculation is off with a remote tier: no draft rows were planned.
    assert!(!matches!(row.kind, RowKind::Draft { .. }));
    s.check_invariants().unwrap();
}

#[test]
fn a_step_routed_to_the_remote_parks_the_sequence_and_it_resumes_where_it_was() {
    let mut s = Scheduler::new(remote_llm(16));
    s.add(seq(1, vec![1, 2, 3, 4, 5], Model::Slm, 0)).unwrap();
    s.schedule();
    // The glimpse sends the step to the LLM.
    s.update(&[SeqOutcome {
        seq_id: 1,
        step_started: Some(Model::Llm),
        route_to: Some(Model::Llm),
        ..Default::default()
    }]);
    assert!(s.schedule().is_empty());
    assert_eq!(s.take_remote_ready(), vec![1]);
    let slm_blocks = s.seq(1).unwrap().table(Model::Slm).blocks.clone();
    assert!(!slm_blocks.is_empty(), "a parked sequence keeps its SLM KV");
    s.update(&[SeqOutcome {
        seq_id: 1,
        appended: vec![6, 7],
        writer: Some(Model::Llm),
        route_to: Some(Model::Slm),
        ..Default::default()
    }]);
    let plan = s.schedule();
    let row = &plan.batch(Model::Slm).rows[0];
    // The SLM feeds only the two tokens the remote wrote.
    assert_eq!(row.kind, RowKind::CatchUp);
    assert_eq!((row.start_pos, row.token_ids.clone()), (5, vec![6, 7]));
    s.check_invariants().unwrap();
}

#[test]
fn parked_sequences_are_never_preempted_and_aborts_free_everything() {
    // 10 blocks of 4 tokens.
    let mut s = Scheduler::new(remote_llm(10));
    let mut grower = seq(2, (10..18).collect(), Model::Slm, 0);
    grower.sampling.max_tokens = 24;
    s.add(grower).unwrap();
    s.schedule();
    // Admitted after the grower, so the first preemption victim were it local.
    s.add(seq(1, (0..16).collect(), Model::Slm, 0)).unwrap();
    s.schedule();
    s.update(&[SeqOutcome {
        seq_id: 1,
        route_to: Some(Model::Llm),
        ..Default::default()
    }]);
    assert_eq!(s.take_remote_ready(), vec![1]);
    let mut preempted = Vec::new();
    for token in 0..24 {
        let plan = s.schedule();
        preempted.extend(plan.preempted.iter().copied());
        s.check_invariants().unwrap();
        if !plan.batch(Model::Slm).is_empty() {
            s.update(&[SeqOutcome {
                seq_id: 2,
                appended: vec![100 + token],
                writer: Some(Model::Slm),
                ..Default::default()
            }]);
        }
    }
    assert!(
        !preempted.is_empty(),
        "the pool never ran out: the test proves nothing"
    );
    assert!(!preempted.contains(&1), "a parked sequence was preempted");
    assert_eq!(s.seq(1).unwrap().status(), SeqStatus::Running);
    assert!(s.abort(1));
    assert!(s.abort(2));
    s.check_invariants().unwrap();
    assert_eq!(s.pool(Model::Slm).num_free(), 10);
}
