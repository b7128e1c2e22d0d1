//! The request's logits processors and penalties (`logit_bias`,
//! `allowed_token_ids`, `min_tokens`, `stop_token_ids`, the presence, frequency
//! and repetition penalties) apply to whichever model writes, and speculation
//! stays lossless for the distribution they make.

use glimprouter_core::logits_processors::{process_logits, TokenHistory};
use glimprouter_core::params::Policy;
use glimprouter_core::sampling::sampling_probs;
use glimprouter_core::{RoutingParams, SamplingParams};
use glimprouter_engine::{FinishReason, StopReason};

use crate::harness::*;
use crate::lossless::assert_counts_fit;

const PROMPTS: [&str; 3] = [
    "Problem: 3 plus 4",
    "Problem: start at 12, add 7, then subtract 5",
    "Problem: start at 40, add 13, add 8, subtract 21, add 2",
];

fn run(sampling: &SamplingParams, routing: RoutingParams) -> Vec<Output> {
    run_on(pair(), sampling, routing)
}

fn run_on(pair: &Pair, sampling: &SamplingParams, routing: RoutingParams) -> Vec<Output> {
    run_texts(&config(pair), &PROMPTS, |_| sampling.clone(), &routing)
}

fn tokens(outs: &[Output]) -> Vec<Vec<u32>> {
    outs.iter().map(|o| o.tokens.clone()).collect()
}

fn penalized() -> SamplingParams {
    SamplingParams {
        presence_penalty: 2.0,
        frequency_penalty: 2.0,
        repetition_penalty: 1.5,
        ..SamplingParams::greedy(40)
    }
}

#[test]
fn penalties_change_both_writers_and_speculation_keeps_the_greedy_output() {
    let plain = SamplingParams::greedy(40);
    for policy in [Policy::Slm, Policy::Llm] {
        assert_ne!(
            tokens(&run(&plain, routing(policy, 0.0, 0))),
            tokens(&run(&penalized(), routing(policy, 0.0, 0))),
            "{policy:?}: the penalties change what the model writes"
        );
    }
    // One long step (the default delimiter): a verify pass keeps several tokens,
    // each scored after the drafts before it.
    let long_steps = |k| RoutingParams {
        policy: Policy::Llm,
        speculative_k: k,
        ..RoutingParams::default()
    };
    // The LLM drafting for itself: every draft that the same rules would pick
    // is accepted, so a verify pass that forgot the drafts before a position
    // would reject them and write other tokens.
    let self_drafting = Pair {
        slm: pair().llm.clone(),
        llm: pair().llm.clone(),
    };
    let llm = run_on(&self_drafting, &penalized(), long_steps(0));
    let llm_spec = run_on(&self_drafting, &penalized(), long_steps(3));
    assert_eq!(tokens(&llm), tokens(&llm_spec));
    let accepted: usize = llm_spec
        .iter()
        .map(|o| o.finished.routing.accepted_draft_tokens)
        .sum();
    assert!(accepted > 0, "drafts were accepted: {accepted}");
    // Mixed routing: a tau that sends some steps each way, with and without drafts.
    let tau = median_of_h_init(&run(&penalized(), routing(Policy::Glimp, 0.0, 0)));
    let mixed = run(&penalized(), routing(Policy::Glimp, tau, 0));
    let mixed_spec = run(&penalized(), routing(Policy::Glimp, tau, 2));
    assert_eq!(tokens(&mixed), tokens(&mixed_spec));
    let llm_steps: usize = mixed.iter().map(|o| o.finished.routing.llm_steps).sum();
    let steps: usize = mixed.iter().map(|o| o.finished.routing.steps).sum();
    assert!(llm_steps > 0 && llm_steps < steps, "{llm_steps}/{steps}");
}

#[test]
fn bias_and_allowed_tokens_decide_every_writer_s_tokens() {
    let engine = start(&config(pair()));
    let (a, b) = (prompt(&engine, "Ġ5")[0], prompt(&engine, "Ġ7")[0]);
    engine.shutdown();
    let allowed = SamplingParams {
        allowed_token_ids: vec![a, b],
        ignore_eos: true,
        ..SamplingParams::greedy(24)
    };
    let biased = SamplingParams {
        logit_bias: vec![(b, 100.0)],
        ignore_eos: true,
        ..SamplingParams::greedy(24)
    };
    for r in [
        routing(Policy::Slm, 0.0, 0),
        routing(Policy::Llm, 0.0, 3),
        routing(Policy::Random, 0.0, 2),
    ] {
        for o in run(&allowed, r.clone()) {
            assert!(
                o.tokens.iter().all(|t| [a, b].contains(t)),
                "{:?}",
                o.tokens
            );
            assert_eq!(o.tokens.len(), 24);
        }
        for o in run(&biased, r.clone()) {
            assert_eq!(o.tokens, vec![b; 24]);
        }
    }
}

#[test]
fn a_stop_token_ends_the_request_and_min_tokens_holds_it_back() {
    let llm = routing(Policy::Llm, 0.0, 2);
    let base = run(&SamplingParams::greedy(32), llm.clone());
    let o = &base[1];
    // The first token that did not occur before it.
    let i = (2..o.tokens.len())
        .find(|&i| !o.tokens[..i].contains(&o.tokens[i]))
        .expect("a new token in the output");
    let t = o.tokens[i];
    let stopped = SamplingParams {
        stop_token_ids: vec![t],
        ..SamplingParams::greedy(32)
    };
    let out = &run(&stopped, llm.clone())[1];
    assert_eq!(
        out.tokens,
        o.tokens[..=i],
        "ends with the stop token, kept in the ids"
    );
    assert_eq!(out.finished.reason, FinishReason::Stop);
    assert_eq!(out.finished.stop_reason, Some(StopReason::TokenId(t)));
    let held = SamplingParams {
        min_tokens: i + 2,
        ..stopped
    };
    let out = &run(&held, llm)[1];
    assert_eq!(out.tokens[..i], o.tokens[..i]);
    assert!(
        !out.tokens[..i + 2].contains(&t),
        "no stop token before min_tokens: {:?}",
        out.tokens
    );
    assert!(out.tokens.len() >= i + 2);
}

/// The LLM's second token, drawn through a verify pass with a draft before it,
/// follows the LLM's processed distribution at that position: the penalties
/// count the draft that precedes it. A bias of +100 makes the first token `a`
/// (for both models); `repetition_penalty` 1000 then divides that logit by
/// 1000 at the second position, but only for a rule that sees the draft.
#[test]
fn verification_is_lossless_for_the_penalised_distribution() {
    let pair = pair();
    let engine = start(&config(pair));
    let p = prompt(&engine, "Problem: start at 12, add 7");
    let a = (0..)
        .find(|t| !p.contains(t))
        .expect("a token not in the prompt");
    let sampling = SamplingParams {
        temperature: 1.0,
        max_tokens: 2,
        ignore_eos: true,
        logit_bias: vec![(a, 100.0)],
        repetition_penalty: 1000.0,
        ..SamplingParams::default()
    };
    let mut context = p.clone();
    context.push(a);
    let logits = next_token_logits(&pair.llm, &context);
    let history = TokenHistory {
        prompt: &p,
        output: &[a],
        pending: &[],
    };
    let eos = engine.info().tokenizer.eos_token_ids().to_vec();
    let processed = process_logits(&logits, &sampling, &eos, &history);
    let target = sampling_probs(&processed, &sampling);

    // The default delimiter ("\n\n") rarely comes up, so both tokens are one
    // step and one verify pass (the harness's " " would end a step per token).
    let one_step = RoutingParams {
        policy: Policy::Llm,
        speculative_k: 2,
        ..RoutingParams::default()
    };
    let n = 2000;
    let mut counts = vec![0usize; target.len()];
    let mut verified = 0;
    for out in run_seeds(&engine, &p, &sampling, &one_step, n) {
        assert_eq!(out.tokens[0], a, "the bias decides the first token");
        verified += usize::from(out.finished.routing.accepted_draft_tokens >= 1);
        counts[out.tokens[1] as usize] += 1;
    }
    // A second token drawn by a plain decode (speculation paused by load) has the
    // same target; the test's power is in the verified ones.
    assert!(
        verified >= n * 9 / 10,
        "second tokens verified after the draft: {verified}/{n}"
    );
    assert_counts_fit(&counts, &target, n);
    // Power: a rule blind to the draft would leave `a` at +100 and draw it
    // nearly always; the processed distribution gives it little.
    assert!(target[a as usize] < 0.2, "p(a) = {}", target[a as usize]);
    assert!(counts[a as usize] < n / 2);
    engine.shutdown();
}
