//! Reasoning models: the thinking budget, and step ends found inside the
//! tokens of a real tokenizer (Qwen3's, from `.ci/run`'s cache) that carry a
//! paragraph break together with other text.

use glimprouter_core::params::Policy;
use glimprouter_core::{Model, RoutingParams, SamplingParams};
use glimprouter_engine::EngineConfig;
use glimprouter_models::test_files::{qwen3_tokenizer, require};
use glimprouter_models::{make_model, Arch, MakeModelSpec};

use crate::harness::*;

#[test]
fn past_the_thinking_budget_the_engine_ends_the_thinking_and_the_answer_model_answers() {
    let engine = start(&config(pair()));
    let marker = "Answer:";
    let marker_ids = engine.info().tokenizer.encode(marker, false).unwrap();
    let budget = 6;
    let routing = RoutingParams {
        answer_marker: Some(marker.into()),
        answer_model: Model::Slm,
        thinking_token_budget: Some(budget),
        ..routing(Policy::Glimp, 0.0, 0) // every step to the LLM
    };
    let sampling = SamplingParams {
        ignore_eos: true,
        ..SamplingParams::greedy(20)
    };
    let reqs = ["Problem: 3 plus 4", "Problem: start at 12, add 7"]
        .iter()
        .enumerate()
        .map(|(i, p)| {
            request(
                &format!("r{i}"),
                prompt(&engine, p),
                sampling.clone(),
                routing.clone(),
            )
        })
        .collect();
    for out in run_all(&engine, reqs) {
        let end = budget + marker_ids.len();
        assert_eq!(out.tokens.len(), 20, "{:?}", out.tokens);
        assert_eq!(out.tokens[budget..end], marker_ids, "{:?}", out.tokens);
        assert!(out.writers[..end].iter().all(|&w| w == Model::Llm));
        assert!(
            out.writers[end..].iter().all(|&w| w == Model::Slm),
            "{:?}",
            out.writers
        );
        let steps = out.finished.routing.steps;
        assert!(
            (1..=budget).contains(&steps),
            "steps only while thinking: {steps}"
        );
    }
    engine.shutdown();
}

/// A Qwen3-shaped pair with random weights and Qwen3's own tokenizer.
fn qwen3_pair(dir: &std::path::Path) -> Option<EngineConfig> {
    let tokenizer = require(qwen3_tokenizer())?;
    let spec = |seed| MakeModelSpec {
        layers: 1,
        hidden: 32,
        intermediate: 64,
        heads: 2,
        kv_heads: 1,
        vocab: 151_936,
        tie_embeddings: true,
        ..MakeModelSpec::tiny(Arch::Qwen3, seed)
    };
    let (slm, llm) = (dir.join("slm"), dir.join("llm"));
    make_model(&spec(1), &slm, Some(&tokenizer)).unwrap();
    make_model(&spec(2), &llm, Some(&tokenizer)).unwrap();
    let mut c = EngineConfig::for_models(&slm, &llm);
    c.slm.kv_cache_mb = 4;
    c.llm.kv_cache_mb = 4;
    c.device = glimprouter_models::device::test_device_name();
    Some(c)
}

#[test]
fn every_step_end_is_found_whatever_token_carries_the_break_and_every_step_gets_one_glimpse() {
    let dir = tempfile::tempdir().unwrap();
    let Some(config) = qwen3_pair(dir.path()) else {
        return;
    };
    let engine = start(&config);
    let tok = engine.info().tokenizer.clone();
    let text = |ids: &[u32]| tok.decode(ids, false).unwrap();
    // A token whose text goes on after the break ("\n\n" and spaces, say).
    let inside = (0..151_643u32)
        .find(|&id| {
            let t = text(&[id]);
            id != 1406 && t.find("\n\n").is_some_and(|at| at + 2 < t.len())
        })
        .expect("a token with text after a paragraph break");
    let words = prompt(&engine, "The cat sat on the mat and thought");
    let carriers = [271, 382, 1447, 1406, inside];
    let routing = RoutingParams {
        policy: Policy::Glimp,
        tau: 11.9, // near ln(vocab): random weights route both ways
        ..RoutingParams::default()
    };
    // Per carrier, two requests that may write only it and a few words; the
    // penalties keep the (very peaked) random models from repeating one token.
    let reqs = (0..carriers.len() * 2)
        .map(|i| {
            let carrier = carriers[i / 2];
            let mut allowed = words.clone();
            allowed.push(carrier);
            let s = SamplingParams {
                temperature: 1.0,
                seed: Some(i as u64),
                ignore_eos: true,
                allowed_token_ids: allowed,
                frequency_penalty: 2.0,
                presence_penalty: 2.0,
                ..SamplingParams::greedy(48)
            };
            request(
                &format!("q{i}"),
                prompt(&engine, "Think:"),
                s,
                routing.clone(),
            )
        })
        .collect();
    let mut ends_inside = [0usize; 5];
    for out in run_all(&engine, reqs) {
        // The tokens in which a break (left to right, without overlap) ends.
        let mut offsets = Vec::new();
        let mut all = String::new();
        for &id in &out.tokens {
            all.push_str(&text(&[id]));
            offsets.push(all.len());
        }
        let mut ending: Vec<usize> = all
            .match_indices("\n\n")
            .map(|(at, m)| offsets.iter().position(|&end| end >= at + m.len()).unwrap())
            .collect();
        ending.dedup();
        for &i in &ending {
            if let Some(k) = [271, 382, 1447, 1406, inside]
                .iter()
                .position(|&t| t == out.tokens[i])
            {
                ends_inside[k] += 1;
            }
        }
        // A step opens at the start and after every step end but a final one.
        let opened = 1 + ending.iter().filter(|&&i| i + 1 < out.tokens.len()).count();
        let r = &out.finished.routing;
        assert_eq!(r.steps, opened, "{all:?}");
        assert_eq!(r.h_init.len(), r.steps, "one glimpse per step");
    }
    assert!(
        ends_inside.iter().all(|&n| n > 0),
        "every kind of carrier ended a step: {ends_inside:?}"
    );
    engine.shutdown();
}
