//! Greedy equivalences the method promises (DESIGN.md's invariants).

use glimprouter_core::params::Policy;
use glimprouter_core::{Model, RoutingParams, SamplingParams};

use crate::harness::*;

const PROMPTS: [&str; 4] = [
    "Problem: 3 plus 4",
    "Problem: start at 12, add 7, then subtract 5",
    "Problem: 9",
    "Problem: start at 40, add 13, add 8, subtract 21, add 2",
];

fn outputs(policy: Policy, tau: f32, k: usize) -> Vec<Output> {
    outputs_with(routing(policy, tau, k))
}

fn outputs_with(routing: RoutingParams) -> Vec<Output> {
    run_prompts(&config(pair()), routing, |_| 48)
}

/// Every prompt of [`PROMPTS`] at once, the i-th with `max_tokens(i)`.
fn run_prompts(
    config: &glimprouter_engine::EngineConfig,
    routing: RoutingParams,
    max_tokens: impl Fn(usize) -> usize,
) -> Vec<Output> {
    run_texts(
        config,
        &PROMPTS,
        |i| SamplingParams::greedy(max_tokens(i)),
        &routing,
    )
}

fn tokens(outs: &[Output]) -> Vec<Vec<u32>> {
    outs.iter().map(|o| o.tokens.clone()).collect()
}

#[test]
fn tau_plus_infinity_is_exactly_the_slm_and_minus_infinity_exactly_the_llm() {
    let slm_only = outputs(Policy::Slm, 0.0, 0);
    let llm_only = outputs(Policy::Llm, 0.0, 0);
    let glimp_inf = outputs(Policy::Glimp, f32::INFINITY, 0);
    let glimp_neg = outputs(Policy::Glimp, f32::NEG_INFINITY, 0);
    assert_ne!(
        tokens(&slm_only),
        tokens(&llm_only),
        "the two models must differ for this test to mean anything"
    );
    assert_eq!(tokens(&glimp_inf), tokens(&slm_only));
    assert_eq!(tokens(&glimp_neg), tokens(&llm_only));
    let steps: usize = glimp_neg.iter().map(|o| o.finished.routing.steps).sum();
    assert!(
        steps > 2 * glimp_neg.len(),
        "several steps were routed: {:?}",
        glimp_neg.iter().map(|o| &o.tokens).collect::<Vec<_>>()
    );
    for o in &glimp_neg {
        assert_eq!(o.finished.routing.steps, o.finished.routing.llm_steps);
        assert!(o.writers.iter().all(|&w| w == Model::Llm));
    }
    for o in &glimp_inf {
        assert_eq!(o.finished.routing.llm_steps, 0);
        assert!(o.writers.iter().all(|&w| w == Model::Slm));
    }
}

#[test]
fn glimp_llm_first_gives_the_llm_the_first_step_and_routes_the_rest() {
    let first_only = outputs(Policy::GlimpLlmFirst, f32::INFINITY, 0);
    for o in &first_only {
        let r = &o.finished.routing;
        assert_eq!(r.llm_steps, 1, "{r:?}");
        assert!(r.steps > 1, "{r:?}");
        let llm_tokens = o.writers.iter().take_while(|&&w| w == Model::Llm).count();
        assert!(llm_tokens >= 1, "the LLM opens: {:?}", o.writers);
        assert!(o.writers[llm_tokens..].iter().all(|&w| w == Model::Slm));
    }
    assert_eq!(
        tokens(&outputs(Policy::GlimpLlmFirst, f32::NEG_INFINITY, 0)),
        tokens(&outputs(Policy::Llm, 0.0, 0))
    );
}

#[test]
fn speculation_on_or_off_gives_identical_greedy_output() {
    let plain = outputs(Policy::Llm, 0.0, 0);
    let spec = outputs(Policy::Llm, 0.0, 3);
    assert_eq!(tokens(&plain), tokens(&spec));
    let drafted: usize = spec.iter().map(|o| o.finished.routing.draft_tokens).sum();
    assert!(drafted > 0, "speculation actually ran");
    // Mixed routing with speculation inside LLM steps.
    let tau = median_h_init();
    let mixed_plain = outputs(Policy::Glimp, tau, 0);
    let mixed_spec = outputs(Policy::Glimp, tau, 2);
    assert_eq!(tokens(&mixed_plain), tokens(&mixed_spec));
    let llm_steps: usize = mixed_plain
        .iter()
        .map(|o| o.finished.routing.llm_steps)
        .sum();
    let steps: usize = mixed_plain.iter().map(|o| o.finished.routing.steps).sum();
    assert!(
        llm_steps > 0 && llm_steps < steps,
        "a median tau routes some steps each way ({llm_steps}/{steps})"
    );
}

/// The tau that routes about half of the glimpses to the LLM.
fn median_h_init() -> f32 {
    median_of_h_init(&outputs(Policy::Glimp, 0.0, 0))
}

#[test]
fn lazy_and_eager_catch_up_give_identical_greedy_output() {
    let tau = median_h_init();
    for k in [0, 2] {
        let eager = outputs(Policy::Glimp, tau, k);
        let lazy = outputs_with(RoutingParams {
            eager_catch_up: false,
            ..routing(Policy::Glimp, tau, k)
        });
        assert_eq!(tokens(&eager), tokens(&lazy), "k = {k}");
        let writers = |o: &[Output]| o.iter().map(|o| o.writers.clone()).collect::<Vec<_>>();
        assert_eq!(writers(&eager), writers(&lazy));
        let llm_steps: usize = lazy.iter().map(|o| o.finished.routing.llm_steps).sum();
        let steps: usize = lazy.iter().map(|o| o.finished.routing.steps).sum();
        assert!(llm_steps > 0 && llm_steps < steps, "{llm_steps}/{steps}");
    }
}

#[test]
fn speculation_paused_by_load_gives_the_same_greedy_output() {
    // Four requests of different lengths against a limit of two: drafts
    // start only once two have finished.
    let run = |k: usize, limit: Option<usize>| {
        let mut c = config(pair());
        c.speculative_disable_by_batch_size = limit;
        run_prompts(&c, routing(Policy::Llm, 0.0, k), |i| 12 * (i + 1))
    };
    let plain = run(0, None);
    let paused = run(3, Some(2));
    let always = run(3, None);
    assert_eq!(tokens(&plain), tokens(&paused));
    let drafted = |o: &[Output]| -> Vec<usize> {
        o.iter().map(|o| o.finished.routing.draft_tokens).collect()
    };
    let (p, a) = (drafted(&paused), drafted(&always));
    assert_eq!(p[0], 0, "the shortest request finished under load: {p:?}");
    assert!(
        p[3] > 0 && p[3] < a[3],
        "the longest drafted once the load fell: {p:?} vs {a:?}"
    );
}

#[test]
fn a_request_gives_the_same_output_alone_and_among_31_others() {
    let engine = start(&config(pair()));
    let sampling = SamplingParams::greedy(40);
    let r = || routing(Policy::Glimp, 2.0, 2);
    let alone = run_all(
        &engine,
        vec![request(
            "alone",
            prompt(&engine, PROMPTS[3]),
            sampling.clone(),
            r(),
        )],
    );
    let mut reqs = vec![request(
        "target",
        prompt(&engine, PROMPTS[3]),
        sampling.clone(),
        r(),
    )];
    for i in 0..31 {
        let text = format!("Problem: start at {i}, add {}", i * 7 % 13);
        let s = SamplingParams::greedy(8 + i % 24);
        reqs.push(request(
            &format!("other{i}"),
            prompt(&engine, &text),
            s,
            r(),
        ));
    }
    let batched = run_all(&engine, reqs);
    assert_eq!(alone[0].tokens, batched[0].tokens);
    // H_init of each glimpse is the same batched as alone.
    let (a, b) = (
        &alone[0].finished.routing.h_init,
        &batched[0].finished.routing.h_init,
    );
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() < 1e-4, "H_init {x} alone vs {y} batched");
    }
    engine.shutdown();
}

#[test]
fn preemption_mid_step_does_not_change_the_output() {
    let mut small = config(pair());
    // 40 blocks of 4 positions per pool: two or three of these sequences fit
    // at full length, so the six of them preempt each other.
    small.block_size = 4;
    small.slm.num_blocks = Some(40);
    small.llm.num_blocks = Some(40);
    let roomy = start(&config(pair()));
    let reqs = |e: &glimprouter_engine::EngineHandle| -> Vec<_> {
        (0..6)
            .map(|i| {
                let p = prompt(
                    e,
                    &format!("Problem: start at {}, add 5, subtract 2", i + 10),
                );
                request(
                    &format!("p{i}"),
                    p,
                    SamplingParams::greedy(40),
                    routing(Policy::Glimp, 2.0, 2),
                )
            })
            .collect()
    };
    let expected = run_all(&roomy, reqs(&roomy));
    roomy.shutdown();
    let tight_engine = start(&small);
    let got = run_all(&tight_engine, reqs(&tight_engine));
    let preemptions = counter(&tight_engine, "glimp:num_preemptions_total");
    assert!(preemptions > 0.0, "the tight pool forced preemptions");
    assert_eq!(tokens(&expected), tokens(&got));
    tight_engine.shutdown();
}

#[test]
fn judged_policies_keep_or_rewrite_every_step_at_the_extremes() {
    let slm_only = tokens(&outputs(Policy::Slm, 0.0, 0));
    let llm_only = tokens(&outputs(Policy::Llm, 0.0, 0));
    // step-entropy / step-ppl rewrite when the SLM's step statistic exceeds
    // tau; specreason when the LLM's score falls below it.
    for (policy, keep, rewrite) in [
        (Policy::StepEntropy, f32::INFINITY, f32::NEG_INFINITY),
        (Policy::StepPpl, f32::INFINITY, f32::NEG_INFINITY),
        (Policy::Specreason, f32::NEG_INFINITY, f32::INFINITY),
    ] {
        let kept = outputs(policy, keep, 0);
        assert_eq!(
            tokens(&kept),
            slm_only,
            "{policy:?} keeping every step = SLM only"
        );
        assert!(kept.iter().all(|o| o.finished.routing.llm_steps == 0));
        let rewritten = outputs(policy, rewrite, 0);
        assert_eq!(
            tokens(&rewritten),
            llm_only,
            "{policy:?} rewriting every step = LLM only"
        );
        for o in &rewritten {
            let r = &o.finished.routing;
            assert_eq!(r.steps, r.llm_steps, "{policy:?}: every step rewritten");
            assert!(
                o.writers.iter().all(|&w| w == Model::Llm),
                "the rejected SLM text was never streamed"
            );
            assert_eq!(r.slm_tokens, 0);
        }
    }
}

/// glimp's LLM joins a request only when a step is handed to it; it then
/// reuses the prompt blocks an earlier request left in its prefix cache,
/// and writes exactly what it writes with nothing cached.
#[test]
fn lazy_llm_catch_up_reuses_a_cached_prompt_losslessly() {
    let pair = pair();
    let mut cfg = config(pair);
    cfg.routing.eager_catch_up = false;
    let engine = start(&cfg);
    let ids = three_block_prompt(&engine);
    let lazy_glimp = RoutingParams {
        eager_catch_up: false,
        ..routing(Policy::Glimp, f32::NEG_INFINITY, 0)
    };
    let glimp_request = |id: &str| {
        request(
            id,
            ids.clone(),
            SamplingParams::greedy(8),
            lazy_glimp.clone(),
        )
    };

    // Only the LLM has seen the prompt: the SLM opens the glimp request
    // without a hit, so every hit after this is the LLM's catch-up.
    run_all(
        &engine,
        vec![request(
            "seen",
            ids.clone(),
            SamplingParams::greedy(2),
            routing(Policy::Llm, 0.0, 0),
        )],
    );
    let before = counter(&engine, "glimp:prefix_cache_hits_total");
    let with_cache = run_all(&engine, vec![glimp_request("with-cache")]);
    let hits = counter(&engine, "glimp:prefix_cache_hits_total") - before;
    engine.shutdown();
    assert!(
        hits >= 32.0,
        "the catch-up found the prompt's blocks: {hits} tokens"
    );

    let fresh = start(&cfg);
    let without_cache = run_all(&fresh, vec![glimp_request("without-cache")]);
    fresh.shutdown();
    assert_eq!(with_cache[0].tokens, without_cache[0].tokens);
    assert!(with_cache[0].writers.iter().all(|w| *w == Model::Llm));
}
