//! Cancellation, disconnects, errors: every block of both pools comes back.

use std::time::Duration;

use glimprouter_core::params::Policy;
use glimprouter_core::SamplingParams;
use glimprouter_engine::{EngineError, FinishReason, StreamEvent};

use crate::harness::*;

#[test]
fn abort_and_dropped_receivers_free_every_block() {
    let engine = start(&config(pair()));
    let long = SamplingParams {
        ignore_eos: true,
        ..SamplingParams::greedy(400)
    };
    let mut receivers = Vec::new();
    for i in 0..6 {
        let r = request(
            &format!("a{i}"),
            prompt(&engine, "Problem: start at 5, add 6"),
            long.clone(),
            routing(Policy::Glimp, 1.0, 2),
        );
        receivers.push(engine.submit(r).unwrap());
    }
    // Let them run a little, then abort three and drop the other three.
    let mut first = receivers.remove(0);
    assert!(matches!(first.blocking_recv(), Some(StreamEvent::Token(_))));
    for i in 0..3 {
        engine.abort(&format!("a{i}"));
    }
    let aborted: Vec<_> = receivers.drain(..2).collect();
    drop(receivers);
    for mut rx in aborted.into_iter().chain(std::iter::once(first)) {
        loop {
            match rx.blocking_recv() {
                Some(StreamEvent::Finished(f)) => {
                    assert_eq!(f.reason, FinishReason::Abort);
                    break;
                }
                Some(StreamEvent::Token(_)) => continue,
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    wait_for_empty_pools(&engine);
    assert_eq!(
        gauge(&engine, "glimp:num_requests_running", ("queue", "slm")),
        0.0
    );
    engine.shutdown();
}

#[test]
fn requests_that_cannot_fit_get_errors_not_hangs() {
    let engine = start(&config(pair()));
    let max = engine.info().max_model_len;
    let p = prompt(&engine, "Problem: 3 plus 4");
    let too_long = request(
        "long",
        p.clone(),
        SamplingParams::greedy(max),
        routing(Policy::Glimp, 1.0, 0),
    );
    assert!(matches!(
        engine.submit(too_long),
        Err(EngineError::ContextLength { .. })
    ));
    let empty = request(
        "empty",
        vec![],
        SamplingParams::greedy(4),
        routing(Policy::Glimp, 1.0, 0),
    );
    assert!(matches!(
        engine.submit(empty),
        Err(EngineError::InvalidRequest(_))
    ));
    // A request that fits the context but not a (tiny) pool is refused by the scheduler.
    let mut tiny = config(pair());
    tiny.slm.num_blocks = Some(2);
    let small_engine = start(&tiny);
    let mut rx = small_engine
        .submit(request(
            "big",
            p,
            SamplingParams::greedy(200),
            routing(Policy::Glimp, 1.0, 0),
        ))
        .unwrap();
    match rx.blocking_recv() {
        Some(StreamEvent::Error(EngineError::InvalidRequest(msg))) => {
            assert!(msg.contains("never"), "{msg}")
        }
        other => panic!("expected an error, got {other:?}"),
    }
    small_engine.shutdown();
    engine.shutdown();
}

#[test]
fn shutdown_ends_requests_in_flight() {
    let engine = start(&config(pair()));
    let long = SamplingParams {
        ignore_eos: true,
        ..SamplingParams::greedy(500)
    };
    let rx = engine
        .submit(request(
            "s",
            prompt(&engine, "Problem: 1"),
            long,
            routing(Policy::Llm, 0.0, 0),
        ))
        .unwrap();
    std::thread::sleep(Duration::from_millis(50));
    engine.shutdown();
    let out = collect(rx);
    assert_eq!(out.finished.reason, FinishReason::Abort);
}

#[test]
fn reset_prefix_cache_makes_the_next_run_of_a_prompt_start_cold() {
    let pair = pair();
    let engine = start(&config(pair));
    let ids = three_block_prompt(&engine);
    let run = |n: usize| {
        let r = request(
            &format!("cold-{n}"),
            ids.clone(),
            SamplingParams::greedy(2),
            routing(Policy::Llm, 0.0, 0),
        );
        run_all(&engine, vec![r]);
        counter(&engine, "glimp:prefix_cache_hits_total")
    };
    let cold = run(0);
    let warm = run(1);
    assert!(
        warm > cold,
        "a repeated prompt hits the cache: {cold} -> {warm}"
    );
    let forgotten = engine
        .reset_prefix_cache()
        .expect("engine running")
        .blocking_recv()
        .expect("engine replies");
    assert!(
        forgotten >= 3,
        "the prompt's blocks are forgotten: {forgotten}"
    );
    assert_eq!(
        run(2),
        warm,
        "after the reset the same prompt finds nothing"
    );
    engine.shutdown();
}
