//! A whole (tiny) eval through the real engine on random-weight models that
//! share the task tokenizer: every policy must be in the report, every
//! number in range and consistent with the others.

use std::path::{Path, PathBuf};

use glimprouter_core::RoutingParams;
use glimprouter_engine::{Engine, EngineConfig};
use glimprouter_eval::plan::RUN_LABELS;
use glimprouter_eval::{run_eval, write_outputs, EvalOptions};
use glimprouter_models::task::write_random_pair;

fn make_pair(dir: &Path) -> (PathBuf, PathBuf) {
    write_random_pair(dir, 512, [11, 12]).expect("random pair")
}

#[test]
fn tiny_eval_reports_every_policy_with_consistent_numbers() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (slm, llm) = make_pair(dir.path());
    let mut config = EngineConfig::for_models(&slm, &llm);
    config.slm.kv_cache_mb = 8;
    config.llm.kv_cache_mb = 8;
    config.max_num_batched_tokens = 512;
    let engine = Engine::start(&config, Default::default()).expect("engine starts");

    // Random weights rarely write "\n\n"; a space delimiter gives many steps.
    let base = RoutingParams {
        delimiter: " ".into(),
        answer_marker: Some("Answer:".into()),
        ..RoutingParams::default()
    };
    let mut opts = EvalOptions::quick(base);
    opts.num_problems = 4;
    opts.max_tokens = 16;
    opts.default_tau = 1.0;
    opts.glimp_taus = vec![0.5];
    opts.speculative_k = 2;
    opts.auc_positions = 6;
    opts.step_max_tokens = 4;
    opts.run_timeout_s = 120;
    opts.repeats = 2;

    let report = run_eval(&engine, &opts, true).expect("eval runs");
    engine.shutdown();
    assert_eq!(report.meta.repeats, 2);

    let labels: Vec<&str> = report.policies.iter().map(|p| p.label.as_str()).collect();
    for want in RUN_LABELS {
        assert!(labels.contains(&want), "{want} missing from {labels:?}");
    }
    let glimp_taus: Vec<f32> = report
        .policies
        .iter()
        .filter(|p| p.label == "glimp")
        .filter_map(|p| p.tau)
        .collect();
    assert_eq!(glimp_taus, vec![1.0, 0.5]);

    for p in &report.policies {
        let name = format!("{}@{:?}", p.label, p.tau);
        assert_eq!(p.problems, 4, "{name}");
        assert_eq!(p.per_problem.len(), 4, "{name}");
        assert_eq!(p.errors, 0, "{name}: {:?}", p.per_problem);
        for share in [p.accuracy, p.llm_step_share, p.llm_token_share] {
            assert!((0.0..=1.0).contains(&share), "{name}: {share}");
        }
        assert!(p.mean_latency_s > 0.0 && p.p90_latency_s >= 0.0, "{name}");
        let max = p
            .per_problem
            .iter()
            .map(|r| r.latency_s)
            .fold(0.0, f64::max);
        assert!(
            p.p90_latency_s <= max + 1e-12 && p.mean_latency_s <= max + 1e-12,
            "{name}"
        );
        // The pooled shares are the per-problem counts pooled.
        let steps: usize = p.per_problem.iter().map(|r| r.steps).sum();
        let llm_steps: usize = p.per_problem.iter().map(|r| r.llm_steps).sum();
        assert!(llm_steps <= steps, "{name}");
        if steps > 0 {
            assert!(
                (p.llm_step_share - llm_steps as f64 / steps as f64).abs() < 1e-12,
                "{name}"
            );
        }
        let ratio = p.latency_vs_llm_only.expect("llm-only ran");
        assert!(ratio > 0.0, "{name}");
        // Two rounds, and the row is one of them (the lower middle).
        let runs = &p.latency_vs_llm_only_runs;
        assert_eq!(runs.len(), 2, "{name}");
        assert_eq!(ratio, runs[0].min(runs[1]), "{name}");
        assert!(
            p.per_problem
                .iter()
                .all(|r| r.slm_tokens + r.llm_tokens <= 16),
            "{name}: budget"
        );
    }
    let by = |label: &str| {
        report
            .policies
            .iter()
            .find(|p| p.label == label)
            .expect("row")
    };
    // Single-model baselines write every token with their own model.
    assert_eq!(by("slm-only").llm_token_share, 0.0);
    assert_eq!(by("llm-only").llm_token_share, 1.0);
    assert_eq!(by("llm-only").latency_vs_llm_only, Some(1.0));
    // Forward work: each baseline runs only its own model, which reads a
    // prompt and all but the last written token, so at least as many tokens
    // as it wrote.
    let written = |label: &str| -> usize {
        by(label)
            .per_problem
            .iter()
            .map(|r| r.slm_tokens + r.llm_tokens)
            .sum()
    };
    let llm_only = by("llm-only").forward;
    assert_eq!(llm_only.slm_tokens, 0.0, "{llm_only:?}");
    assert!(
        llm_only.llm_tokens >= written("llm-only") as f64,
        "{llm_only:?}"
    );
    assert!(llm_only.llm_seconds > 0.0);
    assert_eq!(by("llm-only").llm_forward_tokens_vs_llm_only, Some(1.0));
    let slm_only = by("slm-only").forward;
    assert_eq!(slm_only.llm_tokens, 0.0, "{slm_only:?}");
    assert!(
        slm_only.slm_tokens >= written("slm-only") as f64,
        "{slm_only:?}"
    );
    assert_eq!(by("slm-only").llm_forward_tokens_vs_llm_only, Some(0.0));
    assert!(by("llm-only")
        .per_problem
        .iter()
        .all(|r| r.llm_steps == r.steps));
    // Random routing is matched to glimp's LLM step share at the default tau.
    let glimp = report
        .policies
        .iter()
        .find(|p| p.label == "glimp" && p.tau == Some(1.0))
        .expect("glimp row");
    assert_eq!(by("random").random_p, Some(glimp.llm_step_share as f32));
    assert!(by("glimp+spec").draft_acceptance.is_some() || by("glimp+spec").llm_token_share == 0.0);

    let d = &report.disagreement;
    assert!(d.positions > 0 && d.positions <= 6, "{d:?}");
    assert_eq!(d.samples.len(), d.positions);
    assert_eq!(d.differing, d.samples.iter().filter(|s| s.differs).count());
    for s in &d.samples {
        assert!(s.h_init.is_finite() && s.h_init >= 0.0);
        assert_eq!(s.differs, s.slm_step != s.llm_step);
    }
    if let Some(auc) = d.auc {
        assert!((0.0..=1.0).contains(&auc));
    }
    assert_eq!(report.checks.len(), 6);
    assert!(
        report.meta.warnings.is_empty(),
        "{:?}",
        report.meta.warnings
    );

    let out = dir.path().join("out");
    let written = write_outputs(&report, &out).expect("outputs written");
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("results.json")).expect("json file"),
    )
    .expect("json");
    let policies = json["policies"].as_array().expect("policies array");
    assert_eq!(policies.len(), report.policies.len());
    for p in policies {
        for key in [
            "accuracy",
            "mean_latency_s",
            "p90_latency_s",
            "llm_step_share",
            "llm_token_share",
        ] {
            assert!(p[key].as_f64().is_some(), "{key} in {p}");
        }
        assert!(p["forward"]["llm_tokens"].as_f64().is_some(), "{p}");
    }
    let md = std::fs::read_to_string(out.join("results.md")).expect("markdown");
    assert!(md.contains("| policy | tau | accuracy |"), "{md}");
    let (table, work) = md
        .split_once("## Forward work per model")
        .expect("forward work section");
    for section in [table, work] {
        assert_eq!(
            section
                .lines()
                .filter(|l| l.starts_with("| glimp |"))
                .count(),
            2,
            "{md}"
        );
    }
    // Figures are drawn unless this machine has no fonts (then they are reported).
    for name in ["pareto.png", "h_init_hist.png"] {
        let drawn = out.join(name).exists();
        let reported = written.plot_errors.iter().any(|e| e.starts_with(name));
        assert!(
            drawn != reported,
            "{name}: drawn {drawn}, errors {:?}",
            written.plot_errors
        );
    }
}
