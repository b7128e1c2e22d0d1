//! The GlimpRouter loop over GGUF files: the same weights from safetensors
//! folders and from F32 GGUF files give the same output token for token
//! (glimpse, routing, speculation), a quantized pair runs the whole loop,
//! and a pair whose vocabularies differ is refused at start-up.

use candle_core::quantized::GgmlDType;
use glimprouter_core::params::Policy;
use glimprouter_core::SamplingParams;
use glimprouter_engine::{EngineConfig, StartError};
use glimprouter_models::gguf_convert::{write_gguf, GgufTypes};

use crate::harness::*;

const PROMPTS: [&str; 3] = [
    "Problem: start at 12, add 7, then subtract 5",
    "Problem: 9",
    "Problem: start at 40, add 13, add 8, subtract 21, add 2",
];

/// The random pair as GGUF files of `dtype`, written inside each model's
/// folder so that the folder's tokenizer.json lies beside them.
fn gguf_pair(dtype: GgmlDType) -> EngineConfig {
    let pair = pair();
    let name = format!("model-{dtype:?}.gguf");
    let (slm, llm) = (pair.slm.join(&name), pair.llm.join(&name));
    for (dir, file) in [(&pair.slm, &slm), (&pair.llm, &llm)] {
        if !file.exists() {
            write_gguf(dir, file, GgufTypes::all(dtype)).expect("writes gguf");
        }
    }
    let mut c = config(pair);
    c.slm.path = Some(slm);
    c.llm.path = Some(llm);
    c
}

fn run(config: &EngineConfig, policy: Policy, tau: f32, k: usize) -> Vec<Output> {
    let engine = start(config);
    let reqs = PROMPTS
        .iter()
        .enumerate()
        .map(|(i, p)| {
            request(
                &format!("g{i}"),
                prompt(&engine, p),
                SamplingParams::greedy(40),
                routing(policy, tau, k),
            )
        })
        .collect();
    let out = run_all(&engine, reqs);
    engine.shutdown();
    out
}

fn median_h_init(config: &EngineConfig) -> f32 {
    median_of_h_init(&run(config, Policy::Glimp, 0.0, 0))
}

#[test]
fn f32_gguf_files_route_and_speculate_exactly_like_their_safetensors_folders() {
    let folders = config(pair());
    let files = gguf_pair(GgmlDType::F32);
    let tau = median_h_init(&folders);
    for k in [0, 2] {
        let a = run(&folders, Policy::Glimp, tau, k);
        let b = run(&files, Policy::Glimp, tau, k);
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(x.tokens, y.tokens, "k={k}");
            assert_eq!(x.writers, y.writers, "k={k}");
            assert_eq!(x.finished.routing, y.finished.routing, "k={k}");
        }
        let llm_steps: usize = a.iter().map(|o| o.finished.routing.llm_steps).sum();
        let steps: usize = a.iter().map(|o| o.finished.routing.steps).sum();
        assert!(
            llm_steps > 0 && llm_steps < steps,
            "both models write steps ({llm_steps}/{steps})"
        );
    }
}

#[test]
fn a_quantized_gguf_pair_runs_glimpse_routing_and_speculation() {
    let files = gguf_pair(GgmlDType::Q8_0);
    let out = run(&files, Policy::Glimp, median_h_init(&files), 2);
    let sum = |f: fn(&Output) -> usize| out.iter().map(f).sum::<usize>();
    let steps = sum(|o| o.finished.routing.steps);
    let llm_steps = sum(|o| o.finished.routing.llm_steps);
    assert!(llm_steps > 0 && llm_steps < steps, "{llm_steps}/{steps}");
    assert!(
        sum(|o| o.finished.routing.draft_tokens) > 0,
        "speculation ran"
    );
    assert!(out.iter().all(|o| !o.tokens.is_empty()));
}

#[test]
fn a_folder_and_a_file_with_different_vocabularies_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other");
    let spec = glimprouter_models::MakeModelSpec::tiny(glimprouter_models::Arch::Llama, 3);
    glimprouter_models::make_model(&spec, &other, None).unwrap();
    let file = other.join("m.gguf");
    write_gguf(&other, &file, GgufTypes::all(GgmlDType::Q8_0)).unwrap();
    let mut c = config(pair());
    c.llm.path = Some(file);
    match glimprouter_engine::Engine::start(&c, Default::default()) {
        Err(StartError::TokenizerMismatch(msg)) => eprintln!("refused: {msg}"),
        Err(other) => panic!("wrong error: {other}"),
        Ok(_) => panic!("a pair with different vocabularies started"),
    }
}
