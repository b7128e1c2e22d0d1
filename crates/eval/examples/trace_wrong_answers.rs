//! Where glimp's wrong answers first go wrong, request by request.
//!
//! ```text
//! cargo run --release -p glimprouter-eval --example trace_wrong_answers -- [TAU] [TEMPERATURE] [SEED]
//! ```
//!
//! Runs the bundled pair on 200 problems of `SEED` (default: the validation
//! seed 20261129) one at a time, glimp at `TAU` (0.4) and `TEMPERATURE`
//! (0.6), each problem with the eval's sampling seed, and for every wrong
//! answer prints its first step that differs from the reference: which
//! model wrote it, whether the first word already differs (what H_init can
//! see) or only a later token, and the H_init of every glimpse. README's
//! temperature-0.6 paragraph was measured with it.

use glimprouter_core::params::Policy;
use glimprouter_core::{Model, RoutingParams, SamplingParams};
use glimprouter_engine::{Engine, EngineConfig, GenerateRequest, StreamEvent};
use glimprouter_models::task::{
    check_answer, generate_problems, SOLUTION_MAX_TOKENS, STEP_SEPARATOR,
};

fn arg<T: std::str::FromStr>(i: usize, default: T) -> T {
    std::env::args()
        .nth(i)
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let (tau, temperature, seed) = (arg(1, 0.4f32), arg(2, 0.6f32), arg(3, 20261129u64));
    let engine = Engine::start(
        &EngineConfig::for_models("models/slm", "models/llm"),
        Default::default(),
    )
    .expect("engine starts");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let tokenizer = engine.info().tokenizer.clone();
    let routing = RoutingParams {
        policy: Policy::Glimp,
        tau,
        speculative_k: 0,
        delimiter: STEP_SEPARATOR.into(),
        answer_marker: Some("Answer:".into()),
        answer_model: Model::Slm,
        eager_catch_up: false,
        ..RoutingParams::default()
    };
    let problems = generate_problems(seed, 200);
    let (mut wrong, mut in_first_word, mut by_llm) = (0, 0, 0);
    for (i, problem) in problems.iter().enumerate() {
        let request = GenerateRequest {
            request_id: format!("trace-{i}"),
            tenant: "trace".into(),
            prompt_ids: tokenizer.encode(&problem.prompt, false).expect("encode"),
            sampling: SamplingParams {
                temperature,
                seed: Some(seed.wrapping_add(i as u64)),
                max_tokens: SOLUTION_MAX_TOKENS,
                ..SamplingParams::default()
            },
            routing: routing.clone(),
            arrival: std::time::Instant::now(),
        };
        let mut events = engine.submit(request).expect("submit");
        // The text, which model wrote each byte of it, and the glimpses' H_init.
        let (mut text, mut writer_of_byte, mut h_init) = (String::new(), Vec::new(), Vec::new());
        runtime.block_on(async {
            while let Some(event) = events.recv().await {
                match event {
                    StreamEvent::Token(d) => {
                        writer_of_byte.extend(std::iter::repeat_n(d.writer, d.text.len()));
                        text.push_str(&d.text);
                    }
                    StreamEvent::Finished(f) => {
                        h_init = f.routing.h_init;
                        break;
                    }
                    StreamEvent::Error(e) => panic!("problem {i}: {e}"),
                }
            }
        });
        if check_answer(problem, &text) {
            continue;
        }
        wrong += 1;
        let mut start = 0;
        for (k, step) in text.split(STEP_SEPARATOR).enumerate() {
            let writers = &writer_of_byte[start..start + step.len()];
            start += step.len() + STEP_SEPARATOR.len();
            let want = problem.solution_steps.get(k).map_or("", |s| s.trim());
            if step.trim() == want {
                continue;
            }
            let first_word = step.split_whitespace().next() != want.split_whitespace().next();
            let llm = writers.contains(&Model::Llm);
            in_first_word += usize::from(first_word);
            by_llm += usize::from(llm);
            println!(
                "problem {i}, step {k} ({}; {}): got {:?}, want {want:?}; H_init {h_init:.2?}",
                if llm { "LLM wrote part" } else { "SLM" },
                if first_word {
                    "first word"
                } else {
                    "a later token"
                },
                step.trim()
            );
            break;
        }
    }
    println!(
        "{wrong} wrong: the first wrong step differs in its first word in {in_first_word}, \
         was written (at least partly) by the LLM in {by_llm}"
    );
    engine.shutdown();
}
