//! What an eval runs: its options and the list of policy runs they imply.

use glimprouter_core::params::Policy;
use glimprouter_core::{Model, RoutingParams};
use glimprouter_models::task::{TaskMix, SOLUTION_MAX_TOKENS};
use serde::Serialize;

/// Held-out seed of the problem set. The trainer draws its documents from
/// its own seeded stream, so this fixed seed gives problems it did not see
/// in this order (the task space is small enough that some may coincide).
pub const DEFAULT_SEED: u64 = 0x6576_616c_2d31;

/// Problems submitted at once (batched serving) or one after another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LatencyMode {
    Batched,
    Sequential,
}

#[derive(Debug, Clone, Serialize)]
pub struct EvalOptions {
    pub seed: u64,
    /// The task mix the problems are drawn from.
    pub mix: TaskMix,
    pub num_problems: usize,
    pub mode: LatencyMode,
    /// Routing every run starts from (the config's `[engine.routing]`):
    /// delimiter, answer marker and answer model come from here.
    pub base_routing: RoutingParams,
    /// The glimp threshold the acceptance checks use.
    pub default_tau: f32,
    /// glimp thresholds of the Pareto sweep (the default is added if missing).
    pub glimp_taus: Vec<f32>,
    /// Draft tokens per verify for the `+spec` runs.
    pub speculative_k: usize,
    /// Run glimp+spec at every sweep threshold, not only the default.
    pub spec_sweep: bool,
    /// Thresholds of the judging baselines.
    pub step_entropy_taus: Vec<f32>,
    pub step_ppl_taus: Vec<f32>,
    pub specreason_taus: Vec<f32>,
    /// Completion budget per problem (clamped to the context).
    pub max_tokens: usize,
    /// Step positions sampled for the H_init disagreement AUC.
    pub auc_positions: usize,
    /// Token budget of one step in the AUC measurement.
    pub step_max_tokens: usize,
    /// 0 = greedy. Each problem gets its own sampling seed either way
    /// (random routing draws from it).
    pub temperature: f32,
    /// Seconds one policy run may take before the eval gives up on it.
    pub run_timeout_s: u64,
    /// The engine's `speculative_disable_by_batch_size`, for the report.
    pub spec_paused_above: Option<usize>,
    /// Rounds of every run; each row is its median round (see
    /// [`crate::rounds`]).
    pub repeats: usize,
}

impl EvalOptions {
    /// The full eval: at least 200 problems and sweeps of every threshold.
    pub fn full(base_routing: RoutingParams) -> Self {
        let default_tau = base_routing.tau;
        Self {
            seed: DEFAULT_SEED,
            mix: TaskMix::BUNDLED,
            num_problems: 200,
            mode: LatencyMode::Batched,
            default_tau,
            glimp_taus: vec![0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5],
            speculative_k: base_routing.speculative_k.max(1),
            spec_sweep: true,
            step_entropy_taus: vec![0.05, 0.1, 0.2, 0.4],
            step_ppl_taus: vec![1.05, 1.1, 1.25, 1.5],
            specreason_taus: vec![6.0, 7.0, 8.0, 8.5],
            max_tokens: SOLUTION_MAX_TOKENS,
            auc_positions: 600,
            step_max_tokens: 32,
            temperature: 0.0,
            run_timeout_s: 1800,
            spec_paused_above: None,
            repeats: 3,
            base_routing,
        }
    }

    /// `--quick`: few problems and one threshold per baseline, for CI.
    pub fn quick(base_routing: RoutingParams) -> Self {
        Self {
            num_problems: 40,
            glimp_taus: vec![0.25, 0.5],
            spec_sweep: false,
            step_entropy_taus: vec![0.1],
            step_ppl_taus: vec![1.1],
            specreason_taus: vec![7.0],
            auc_positions: 120,
            run_timeout_s: 600,
            repeats: 1,
            ..Self::full(base_routing)
        }
    }

    /// The sweep's thresholds, the default included, ascending, deduplicated.
    pub fn sweep_taus(&self) -> Vec<f32> {
        let mut taus = self.glimp_taus.clone();
        taus.push(self.default_tau);
        taus.retain(|t| !t.is_nan());
        taus.sort_by(f32::total_cmp);
        taus.dedup();
        taus
    }
}

/// Every run label the eval plans, in the paper's table order (baselines
/// first).
pub const RUN_LABELS: [&str; 9] = [
    "slm-only",
    "llm-only",
    "llm+spec",
    "random",
    "step-entropy",
    "step-ppl",
    "specreason",
    "glimp",
    "glimp+spec",
];

/// One policy run of the eval.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyRun {
    /// Row label, one of [`RUN_LABELS`].
    pub label: String,
    pub routing: RoutingParams,
    /// The threshold when the policy has one.
    pub tau: Option<f32>,
}

impl PolicyRun {
    fn new(label: &str, routing: RoutingParams, tau: Option<f32>) -> Self {
        Self {
            label: label.to_string(),
            routing,
            tau,
        }
    }
}

fn with(base: &RoutingParams, policy: Policy, tau: f32, speculative_k: usize) -> RoutingParams {
    RoutingParams {
        policy,
        tau,
        speculative_k,
        ..base.clone()
    }
}

/// The glimp run at the default threshold; the random baseline is matched
/// to its LLM step share, so it runs first.
pub fn glimp_default(opts: &EvalOptions) -> PolicyRun {
    PolicyRun::new(
        "glimp",
        with(&opts.base_routing, Policy::Glimp, opts.default_tau, 0),
        Some(opts.default_tau),
    )
}

/// Random routing sending each step to the LLM with probability `random_p`.
pub fn random_at(opts: &EvalOptions, random_p: f32) -> PolicyRun {
    let routing = RoutingParams {
        random_p,
        ..with(&opts.base_routing, Policy::Random, opts.default_tau, 0)
    };
    PolicyRun::new("random", routing, None)
}

/// Every run but `glimp_default` and `random`, in the order they run.
pub fn other_runs(opts: &EvalOptions) -> Vec<PolicyRun> {
    let base = &opts.base_routing;
    // The single-model baselines write their answers too: "SLM only" means it.
    let slm = RoutingParams {
        answer_model: Model::Slm,
        ..with(base, Policy::Slm, opts.default_tau, 0)
    };
    let llm = RoutingParams {
        answer_model: Model::Llm,
        ..with(base, Policy::Llm, opts.default_tau, 0)
    };
    let llm_spec = RoutingParams {
        speculative_k: opts.speculative_k,
        ..llm.clone()
    };
    let mut runs = vec![
        PolicyRun::new("slm-only", slm, None),
        PolicyRun::new("llm-only", llm, None),
        PolicyRun::new("llm+spec", llm_spec, None),
    ];
    for tau in opts.sweep_taus() {
        if tau != opts.default_tau {
            runs.push(PolicyRun::new(
                "glimp",
                with(base, Policy::Glimp, tau, 0),
                Some(tau),
            ));
        }
    }
    for tau in opts.sweep_taus() {
        if tau == opts.default_tau || opts.spec_sweep {
            let spec = with(base, Policy::Glimp, tau, opts.speculative_k);
            runs.push(PolicyRun::new("glimp+spec", spec, Some(tau)));
        }
    }
    let judges = [
        ("step-entropy", Policy::StepEntropy, &opts.step_entropy_taus),
        ("step-ppl", Policy::StepPpl, &opts.step_ppl_taus),
        ("specreason", Policy::Specreason, &opts.specreason_taus),
    ];
    for (label, policy, taus) in judges {
        for &tau in taus {
            runs.push(PolicyRun::new(label, with(base, policy, tau, 0), Some(tau)));
        }
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_policy_of_the_issue_is_planned() {
        let base = RoutingParams {
            speculative_k: 3,
            tau: 1.0,
            ..RoutingParams::default()
        };
        let opts = EvalOptions::full(base);
        assert!(opts.num_problems >= 200);
        let mut runs = vec![glimp_default(&opts), random_at(&opts, 0.3)];
        runs.extend(other_runs(&opts));
        let labels: Vec<&str> = runs.iter().map(|r| r.label.as_str()).collect();
        for want in RUN_LABELS {
            assert!(labels.contains(&want), "{want} missing from {labels:?}");
        }
        let glimp_taus: Vec<f32> = runs
            .iter()
            .filter(|r| r.label == "glimp")
            .filter_map(|r| r.tau)
            .collect();
        assert_eq!(
            glimp_taus.len(),
            opts.sweep_taus().len(),
            "each sweep tau once"
        );
        assert!(glimp_taus.len() >= 3);
        let spec_taus: Vec<f32> = runs
            .iter()
            .filter(|r| r.label == "glimp+spec")
            .filter_map(|r| r.tau)
            .collect();
        assert_eq!(
            spec_taus,
            opts.sweep_taus(),
            "the full eval sweeps glimp+spec too"
        );
        let quick = EvalOptions::quick(opts.base_routing.clone());
        let quick_spec: Vec<f32> = other_runs(&quick)
            .iter()
            .filter(|r| r.label == "glimp+spec")
            .filter_map(|r| r.tau)
            .collect();
        assert_eq!(quick_spec, vec![quick.default_tau]);
        // Speculation only where the label says so.
        for r in &runs {
            assert_eq!(
                r.routing.speculative_k > 0,
                r.label.ends_with("+spec"),
                "{}",
                r.label
            );
        }
        assert_eq!(runs[1].routing.random_p, 0.3);
        let slm = runs
            .iter()
            .find(|r| r.label == "slm-only")
            .map(|r| r.routing.answer_model);
        assert_eq!(slm, Some(Model::Slm));
    }

    #[test]
    fn sweep_includes_the_default_once() {
        let base = RoutingParams {
            tau: 0.5,
            ..RoutingParams::default()
        };
        let mut opts = EvalOptions::quick(base);
        opts.glimp_taus = vec![1.5, 0.5, 0.25];
        assert_eq!(opts.sweep_taus(), vec![0.25, 0.5, 1.5]);
    }
}
