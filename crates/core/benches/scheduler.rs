//! `schedule()` + `update()` for 256 running sequences in a mixed SLM/LLM
//! load (half of the LLM queue speculating). Target: < 100 us per iteration.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use glimprouter_core::params::{RoutingParams, SamplingParams};
use glimprouter_core::scheduler::{IterationPlan, Scheduler, SchedulerConfig, SeqOutcome};
use glimprouter_core::sequence::Sequence;
use glimprouter_core::{Model, RowKind};

fn outcomes(plan: &IterationPlan, step: u32) -> Vec<SeqOutcome> {
    let mut out = Vec::new();
    for m in Model::BOTH {
        for row in &plan.batch(m).rows {
            if row.num_logits == 0 || matches!(row.kind, RowKind::Draft { .. }) {
                continue;
            }
            let mut o = SeqOutcome {
                seq_id: row.seq_id,
                writer: Some(m),
                ..Default::default()
            };
            if let RowKind::Verify { k } = row.kind {
                o.drafts = Some((k, k / 2));
                o.appended = vec![step; k / 2 + 1];
            } else {
                o.appended = vec![step];
            }
            out.push(o);
        }
    }
    out
}

fn bench(c: &mut Criterion) {
    let config = SchedulerConfig {
        num_blocks: [40_000, 40_000],
        max_num_batched_tokens: [8192, 8192],
        max_num_seqs: [256, 256],
        ..SchedulerConfig::default()
    };
    let mut sched = Scheduler::new(config);
    for id in 0..256u64 {
        let writer = if id % 2 == 0 { Model::Slm } else { Model::Llm };
        let k = if id % 4 == 1 { 4 } else { 0 };
        let routing = RoutingParams {
            speculative_k: k,
            ..RoutingParams::default()
        };
        let prompt: Vec<u32> = (0..128).map(|t| (t * 7 + id as u32) % 1000).collect();
        let seq = Sequence::new(
            id,
            format!("tenant{}", id % 8),
            prompt,
            SamplingParams::greedy(100_000),
            routing,
            writer,
        );
        sched.add(seq).expect("fits");
    }
    // Admit and prefill everything.
    for step in 0..8 {
        let plan = sched.schedule();
        sched.update(&outcomes(&plan, step));
    }
    let mut step = 10;
    c.bench_function(
        "schedule+update, 256 running (mixed SLM/LLM, speculation)",
        |b| {
            b.iter(|| {
                let plan = sched.schedule();
                step += 1;
                let outs = outcomes(&plan, step % 1000);
                sched.update(black_box(&outs));
            })
        },
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
