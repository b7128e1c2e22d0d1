//! One policy over the whole problem set: accuracy, latency and the share
//! of the work the LLM did.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use glimprouter_core::SamplingParams;
use glimprouter_engine::{EngineHandle, GenerateRequest};
use glimprouter_models::task::{check_answer, Problem};
use serde::Serialize;

use crate::driver::{run_requests, RequestOutcome};
use crate::plan::{EvalOptions, PolicyRun};
use crate::stats::{mean, percentile};
use crate::EvalError;

/// Tenant every eval request runs as.
pub const EVAL_TENANT: &str = "eval";

/// One problem under one policy.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProblemRecord {
    pub correct: bool,
    pub latency_s: f64,
    pub steps: usize,
    pub llm_steps: usize,
    pub slm_tokens: usize,
    pub llm_tokens: usize,
    /// `stop`, `length`, `abort`, or `error`.
    pub finish: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One row of the results table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PolicyResult {
    pub label: String,
    /// The engine's policy name.
    pub policy: String,
    pub tau: Option<f32>,
    /// Set for random routing only.
    pub random_p: Option<f32>,
    pub speculative_k: usize,
    pub problems: usize,
    /// Fraction of problems answered right (0..=1).
    pub accuracy: f64,
    pub mean_latency_s: f64,
    pub p90_latency_s: f64,
    /// Mean latency over the LLM-only run's mean latency (of the same
    /// round; with several rounds, the median round's).
    pub latency_vs_llm_only: Option<f64>,
    /// That ratio in every round, in round order.
    pub latency_vs_llm_only_runs: Vec<f64>,
    /// LLM-written steps over all steps, pooled over problems.
    pub llm_step_share: f64,
    /// LLM-written output tokens over all output tokens, pooled.
    pub llm_token_share: f64,
    pub mean_steps: f64,
    pub mean_completion_tokens: f64,
    /// Accepted over proposed draft tokens, when speculation ran.
    pub draft_acceptance: Option<f64>,
    pub errors: usize,
    /// Problems cut off by the token budget.
    pub length_finishes: usize,
    /// Wall clock of the whole run (first submit to last finish).
    pub wall_s: f64,
    /// What each local model's forwards processed during the run.
    pub forward: ForwardWork,
    /// LLM forward tokens over the LLM-only run's.
    pub llm_forward_tokens_vs_llm_only: Option<f64>,
    pub per_problem: Vec<ProblemRecord>,
}

/// Tokens fed through each model's forwards (prompts, catch-ups, decodes,
/// drafts and verifies alike) and the seconds those forwards took, read
/// from the engine's `glimp:iteration_tokens_total` and
/// `glimp:forward_seconds`. The written-token shares say who wrote the
/// answer; these say who did the work, which on a compute-bound device is
/// what latency follows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct ForwardWork {
    pub slm_tokens: f64,
    pub llm_tokens: f64,
    pub slm_seconds: f64,
    pub llm_seconds: f64,
}

impl ForwardWork {
    /// The engine's totals so far.
    pub fn read(engine: &EngineHandle) -> Self {
        let m = engine.metrics();
        let tokens = |model: &str| {
            m.iteration_tokens
                .with_label_values(&[model])
                .get_sample_sum()
        };
        let seconds = |model: &str| {
            m.forward_seconds
                .with_label_values(&[model])
                .get_sample_sum()
        };
        Self {
            slm_tokens: tokens("slm"),
            llm_tokens: tokens("llm"),
            slm_seconds: seconds("slm"),
            llm_seconds: seconds("llm"),
        }
    }

    /// The work done between `earlier` and `self`.
    pub fn since(&self, earlier: &Self) -> Self {
        Self {
            slm_tokens: self.slm_tokens - earlier.slm_tokens,
            llm_tokens: self.llm_tokens - earlier.llm_tokens,
            slm_seconds: self.slm_seconds - earlier.slm_seconds,
            llm_seconds: self.llm_seconds - earlier.llm_seconds,
        }
    }
}

/// Runs `run` over `problems`; returns its row and every completion text.
pub fn evaluate_policy(
    engine: &EngineHandle,
    problems: &[Problem],
    run: &PolicyRun,
    opts: &EvalOptions,
) -> Result<(PolicyResult, Vec<String>), EvalError> {
    let requests = problems
        .iter()
        .enumerate()
        .map(|(i, problem)| {
            let prompt_ids = encode(engine, &problem.prompt)?;
            let room = engine.info().max_model_len.saturating_sub(prompt_ids.len());
            let sampling = SamplingParams {
                temperature: opts.temperature,
                seed: Some(opts.seed.wrapping_add(i as u64)),
                max_tokens: opts.max_tokens.min(room).max(1),
                ..SamplingParams::default()
            };
            Ok(request(prompt_ids, sampling, run.routing.clone()))
        })
        .collect::<Result<Vec<_>, EvalError>>()?;
    // Every run starts cold: the runs share the problems, and a prompt cached
    // by the run before would spare a later run its prefill.
    engine
        .reset_prefix_cache()
        .map_err(|e| EvalError::Engine(e.to_string()))?
        .blocking_recv()
        .map_err(|_| {
            EvalError::Engine("engine stopped before resetting its prefix cache".into())
        })?;
    let work_before = ForwardWork::read(engine);
    let started = Instant::now();
    let outcomes = run_requests(
        engine,
        requests,
        opts.mode,
        Duration::from_secs(opts.run_timeout_s),
    )
    .map_err(|e| e.during(&run.label))?;
    let wall_s = started.elapsed().as_secs_f64();
    let mut result = summarize(run, problems, &outcomes, wall_s);
    result.forward = ForwardWork::read(engine).since(&work_before);
    let texts = outcomes.into_iter().map(|o| o.text).collect();
    Ok((result, texts))
}

pub(crate) fn encode(engine: &EngineHandle, text: &str) -> Result<Vec<u32>, EvalError> {
    engine
        .info()
        .tokenizer
        .encode(text, false)
        .map_err(|e| EvalError::Tokenizer(e.to_string()))
}

pub(crate) fn request(
    prompt_ids: Vec<u32>,
    sampling: SamplingParams,
    routing: glimprouter_core::RoutingParams,
) -> GenerateRequest {
    static NEXT_ID: AtomicU64 = AtomicU64::new(0);
    GenerateRequest {
        request_id: format!("eval-{}", NEXT_ID.fetch_add(1, Ordering::Relaxed)),
        tenant: EVAL_TENANT.to_string(),
        prompt_ids,
        sampling,
        routing,
        arrival: Instant::now(),
    }
}

/// The table row from the per-request outcomes (pure, for testing).
pub fn summarize(
    run: &PolicyRun,
    problems: &[Problem],
    outcomes: &[RequestOutcome],
    wall_s: f64,
) -> PolicyResult {
    let per_problem: Vec<ProblemRecord> = problems
        .iter()
        .zip(outcomes)
        .map(|(p, o)| record(p, o))
        .collect();
    let n = per_problem.len();
    let sum = |f: fn(&ProblemRecord) -> usize| per_problem.iter().map(f).sum::<usize>();
    let ratio = |num: usize, den: usize| {
        if den == 0 {
            0.0
        } else {
            num as f64 / den as f64
        }
    };
    let latencies: Vec<f64> = per_problem.iter().map(|r| r.latency_s).collect();
    let (drafts, accepted) =
        outcomes
            .iter()
            .filter_map(|o| o.result.as_ref().ok())
            .fold((0, 0), |(d, a), f| {
                (
                    d + f.routing.draft_tokens,
                    a + f.routing.accepted_draft_tokens,
                )
            });
    let tokens = sum(|r| r.slm_tokens + r.llm_tokens);
    PolicyResult {
        label: run.label.clone(),
        policy: run.routing.policy.as_str().to_string(),
        tau: run.tau,
        random_p: (run.routing.policy == glimprouter_core::params::Policy::Random)
            .then_some(run.routing.random_p),
        speculative_k: run.routing.speculative_k,
        problems: n,
        accuracy: ratio(per_problem.iter().filter(|r| r.correct).count(), n),
        mean_latency_s: mean(&latencies).unwrap_or(0.0),
        p90_latency_s: percentile(&latencies, 0.9).unwrap_or(0.0),
        latency_vs_llm_only: None,
        latency_vs_llm_only_runs: Vec::new(),
        llm_step_share: ratio(sum(|r| r.llm_steps), sum(|r| r.steps)),
        llm_token_share: ratio(sum(|r| r.llm_tokens), tokens),
        mean_steps: ratio(sum(|r| r.steps), n),
        mean_completion_tokens: ratio(tokens, n),
        draft_acceptance: (drafts > 0).then(|| ratio(accepted, drafts)),
        errors: per_problem.iter().filter(|r| r.error.is_some()).count(),
        length_finishes: per_problem.iter().filter(|r| r.finish == "length").count(),
        wall_s,
        forward: ForwardWork::default(),
        llm_forward_tokens_vs_llm_only: None,
        per_problem,
    }
}

fn record(problem: &Problem, outcome: &RequestOutcome) -> ProblemRecord {
    match &outcome.result {
        Ok(f) => ProblemRecord {
            correct: check_answer(problem, &outcome.text),
            latency_s: outcome.latency_s,
            steps: f.routing.steps,
            llm_steps: f.routing.llm_steps,
            slm_tokens: f.routing.slm_tokens,
            llm_tokens: f.routing.llm_tokens,
            finish: f.reason.as_str().to_string(),
            error: None,
        },
        Err(e) => ProblemRecord {
            correct: false,
            latency_s: outcome.latency_s,
            steps: 0,
            llm_steps: 0,
            slm_tokens: 0,
            llm_tokens: 0,
            finish: "error".to_string(),
            error: Some(e.clone()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use glimprouter_core::params::Policy;
    use glimprouter_core::RoutingParams;
    use glimprouter_engine::{FinishReason, Finished, RoutingStats, Usage};
    use glimprouter_models::task::generate_problems;

    fn finished(steps: usize, llm_steps: usize, slm_tokens: usize, llm_tokens: usize) -> Finished {
        Finished {
            reason: FinishReason::Stop,
            stop_reason: None,
            usage: Usage {
                prompt_tokens: 5,
                completion_tokens: slm_tokens + llm_tokens,
            },
            routing: RoutingStats {
                steps,
                llm_steps,
                slm_tokens,
                llm_tokens,
                ..RoutingStats::default()
            },
        }
    }

    #[test]
    fn summary_pools_shares_and_checks_answers() {
        let problems = generate_problems(1, 3);
        let right = format!("some steps\n\nAnswer: {}", problems[0].answer);
        let outcomes = vec![
            RequestOutcome {
                text: right,
                latency_s: 1.0,
                result: Ok(finished(4, 1, 30, 10)),
            },
            RequestOutcome {
                text: "Answer: 1000".into(),
                latency_s: 3.0,
                result: Ok(finished(0, 0, 0, 0)),
            },
            RequestOutcome {
                text: String::new(),
                latency_s: 2.0,
                result: Err("boom".into()),
            },
        ];
        let run = PolicyRun {
            label: "glimp".into(),
            routing: RoutingParams {
                policy: Policy::Glimp,
                ..RoutingParams::default()
            },
            tau: Some(1.0),
        };
        let r = summarize(&run, &problems, &outcomes, 3.5);
        assert!((r.accuracy - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(r.mean_latency_s, 2.0);
        assert!((r.p90_latency_s - 2.8).abs() < 1e-12);
        assert_eq!(r.llm_step_share, 0.25);
        assert_eq!(r.llm_token_share, 0.25);
        assert_eq!(r.errors, 1);
        assert_eq!(r.per_problem[2].finish, "error");
        assert_eq!(r.random_p, None);
        assert_eq!(r.draft_acceptance, None);
    }
}
