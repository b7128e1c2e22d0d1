//! Does H_init predict where the SLM would write a different step than the
//! LLM? At sampled step starts of the LLM-only traces, both models write the
//! next step greedily from the same context; the label is whether the two
//! texts differ, the score the SLM's entropy over that step's first token.

use std::time::Duration;

use glimprouter_core::params::Policy;
use glimprouter_core::{RoutingParams, SamplingParams};
use glimprouter_engine::EngineHandle;
use glimprouter_models::task::Problem;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::Serialize;

use crate::driver::run_requests;
use crate::plan::{EvalOptions, LatencyMode};
use crate::policy_run::{encode, request};
use crate::stats::{auc, mean};
use crate::EvalError;

/// One sampled step position.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepSample {
    pub problem: usize,
    /// Index of the step in the LLM's trace (0 = first step).
    pub step: usize,
    /// The SLM's first-token entropy at the step start (nats).
    pub h_init: f64,
    pub slm_step: String,
    pub llm_step: String,
    pub differs: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DisagreementResult {
    /// Step starts available in the LLM-only traces.
    pub candidate_positions: usize,
    /// Positions measured (both requests finished, H_init present).
    pub positions: usize,
    pub differing: usize,
    /// AUC of H_init for "the SLM's step differs"; `None` without both classes.
    pub auc: Option<f64>,
    pub mean_h_init_agree: Option<f64>,
    pub mean_h_init_differ: Option<f64>,
    pub samples: Vec<StepSample>,
}

/// Every step start of a trace: the context before step `k` (the prompt and
/// steps `0..k`, each closed by the delimiter). Empty steps are skipped.
pub fn step_contexts(prompt: &str, trace: &str, delimiter: &str) -> Vec<(usize, String)> {
    if delimiter.is_empty() {
        return vec![(0, prompt.to_string())];
    }
    let mut contexts = Vec::new();
    let mut context = prompt.to_string();
    for (k, step) in trace.split(delimiter).enumerate() {
        if step.is_empty() {
            continue;
        }
        contexts.push((k, context.clone()));
        context.push_str(step);
        context.push_str(delimiter);
    }
    contexts
}

/// Measures the disagreement AUC at up to `opts.auc_positions` step starts
/// of `llm_traces` (the LLM-only completions, one per problem).
pub fn measure_disagreement(
    engine: &EngineHandle,
    problems: &[Problem],
    llm_traces: &[String],
    opts: &EvalOptions,
) -> Result<DisagreementResult, EvalError> {
    let delimiter = opts.base_routing.delimiter.as_str();
    let mut candidates: Vec<(usize, usize, String)> = problems
        .iter()
        .zip(llm_traces)
        .enumerate()
        .flat_map(|(i, (p, trace))| {
            step_contexts(&p.prompt, trace, delimiter)
                .into_iter()
                .map(move |(k, ctx)| (i, k, ctx))
        })
        .collect();
    let candidate_positions = candidates.len();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(opts.seed ^ 0x0041_5543);
    candidates.shuffle(&mut rng);
    candidates.truncate(opts.auc_positions);
    candidates.sort_by_key(|&(i, k, _)| (i, k));

    let max_len = engine.info().max_model_len;
    let mut positions = Vec::new();
    let mut requests = Vec::new();
    for (i, k, context) in candidates {
        let ids = encode(engine, &context)?;
        let room = max_len.saturating_sub(ids.len());
        if room == 0 {
            continue;
        }
        let sampling = SamplingParams {
            stop: vec![delimiter.to_string()],
            ..SamplingParams::greedy(opts.step_max_tokens.min(room).max(1))
        };
        for policy in [Policy::Slm, Policy::Llm] {
            // One step by one model: no answer hand-over, no speculation.
            let routing = RoutingParams {
                policy,
                speculative_k: 0,
                answer_marker: None,
                max_steps: None,
                ..opts.base_routing.clone()
            };
            requests.push(request(ids.clone(), sampling.clone(), routing));
        }
        positions.push((i, k));
    }
    let timeout = Duration::from_secs(opts.run_timeout_s);
    let outcomes = run_requests(engine, requests, LatencyMode::Batched, timeout)
        .map_err(|e| e.during("H_init disagreement"))?;
    let mut samples = Vec::new();
    for (&(problem, step), pair) in positions.iter().zip(outcomes.chunks(2)) {
        let [slm, llm] = pair else { continue };
        let (Ok(slm_finished), Ok(_)) = (&slm.result, &llm.result) else {
            continue;
        };
        let Some(&h) = slm_finished.routing.h_init.first() else {
            continue;
        };
        samples.push(StepSample {
            problem,
            step,
            h_init: f64::from(h),
            differs: slm.text != llm.text,
            slm_step: slm.text.clone(),
            llm_step: llm.text.clone(),
        });
    }
    Ok(summarize(candidate_positions, samples))
}

/// AUC and class means of the samples (pure, for testing).
pub fn summarize(candidate_positions: usize, samples: Vec<StepSample>) -> DisagreementResult {
    let scores: Vec<f64> = samples.iter().map(|s| s.h_init).collect();
    let labels: Vec<bool> = samples.iter().map(|s| s.differs).collect();
    let class_mean = |differs: bool| {
        let v: Vec<f64> = samples
            .iter()
            .filter(|s| s.differs == differs)
            .map(|s| s.h_init)
            .collect();
        mean(&v)
    };
    DisagreementResult {
        candidate_positions,
        positions: samples.len(),
        differing: labels.iter().filter(|&&l| l).count(),
        auc: auc(&scores, &labels),
        mean_h_init_agree: class_mean(false),
        mean_h_init_differ: class_mean(true),
        samples,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contexts_close_every_previous_step() {
        let got = step_contexts("P\n\n", "a b\n\nc\n\nAnswer: 4", "\n\n");
        assert_eq!(
            got,
            vec![
                (0, "P\n\n".to_string()),
                (1, "P\n\na b\n\n".to_string()),
                (2, "P\n\na b\n\nc\n\n".to_string())
            ]
        );
        // A trace ending in the delimiter has no empty last step.
        assert_eq!(step_contexts("P\n\n", "a\n\n", "\n\n").len(), 1);
        assert!(step_contexts("P\n\n", "", "\n\n").is_empty());
    }

    #[test]
    fn summary_counts_classes() {
        let s = |h: f64, differs: bool| StepSample {
            problem: 0,
            step: 0,
            h_init: h,
            slm_step: String::new(),
            llm_step: String::new(),
            differs,
        };
        let r = summarize(
            10,
            vec![s(0.1, false), s(0.2, false), s(1.5, true), s(0.15, true)],
        );
        assert_eq!(
            (r.candidate_positions, r.positions, r.differing),
            (10, 4, 2)
        );
        assert_eq!(r.auc, Some(0.75));
        assert!((r.mean_h_init_agree.unwrap_or(f64::NAN) - 0.15).abs() < 1e-12);
        assert!((r.mean_h_init_differ.unwrap_or(f64::NAN) - 0.825).abs() < 1e-12);
    }
}
