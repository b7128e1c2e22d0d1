//! The eval's results: what goes into results.json, the acceptance checks
//! of the bundled pair, and the markdown table.

use std::fmt::Write;

use glimprouter_core::Model;
use glimprouter_models::task::TaskMix;
use serde::Serialize;

use crate::disagreement::DisagreementResult;
use crate::pareto::pareto_front;
use crate::plan::{LatencyMode, RUN_LABELS};
use crate::policy_run::PolicyResult;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvalMeta {
    pub seed: u64,
    /// The task mix the problems were drawn from.
    pub mix: TaskMix,
    pub num_problems: usize,
    pub mode: LatencyMode,
    pub quick: bool,
    pub temperature: f32,
    pub default_tau: f32,
    pub speculative_k: usize,
    pub slm: String,
    pub llm: String,
    /// Who writes the answer after the marker in the routed runs (the
    /// single-model baselines write their own).
    pub answer_model: Model,
    /// Whether the LLM caught up beside every glimpse (else on hand-over).
    pub eager_catch_up: bool,
    /// Speculation paused in iterations with more sequences than this.
    pub spec_paused_above: Option<usize>,
    /// Rounds of every run (rows are median rounds).
    pub repeats: usize,
    /// How the `specreason` baseline scored steps.
    pub specreason_judge: String,
    /// Baselines of the paper this eval does not run, and why.
    pub not_run: Vec<String>,
    /// Anything that makes the numbers suspect.
    pub warnings: Vec<String>,
    pub total_wall_s: f64,
}

/// One acceptance criterion of the bundled pair, measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Check {
    pub name: String,
    /// The measured value (`None` when a run it needs is missing).
    pub value: Option<f64>,
    /// `value <= bound` when `at_most`, else `value >= bound`.
    pub bound: f64,
    pub at_most: bool,
    pub passed: bool,
}

impl Check {
    fn new(name: &str, value: Option<f64>, bound: f64, at_most: bool) -> Self {
        let passed = value.is_some_and(|v| if at_most { v <= bound } else { v >= bound });
        Self {
            name: name.to_string(),
            value,
            bound,
            at_most,
            passed,
        }
    }
}

/// A point of the accuracy / latency plane that is on the front of all runs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FrontPoint {
    pub label: String,
    pub tau: Option<f32>,
    pub latency_vs_llm_only: f64,
    pub accuracy: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvalReport {
    pub meta: EvalMeta,
    pub policies: Vec<PolicyResult>,
    pub disagreement: DisagreementResult,
    /// The Pareto front over every run (latency relative to LLM-only).
    pub pareto_front: Vec<FrontPoint>,
    /// Runs that are at least as accurate as glimp at the default tau and
    /// faster (they beat it outright).
    pub beat_glimp_default: Vec<String>,
    pub checks: Vec<Check>,
}

/// The row label with its threshold, e.g. `glimp@1` or `llm-only`.
pub fn run_name(p: &PolicyResult) -> String {
    match p.tau {
        Some(t) => format!("{}@{}", p.label, t),
        None => p.label.clone(),
    }
}

/// The label a table row shows: with the draft depth for speculating runs.
fn table_name(p: &PolicyResult) -> String {
    if p.speculative_k > 0 {
        format!("{} (k={})", p.label, p.speculative_k)
    } else {
        p.label.clone()
    }
}

/// The first row with `label` (and `tau`, when given).
pub fn find<'a>(
    policies: &'a [PolicyResult],
    label: &str,
    tau: Option<f32>,
) -> Option<&'a PolicyResult> {
    policies
        .iter()
        .find(|p| p.label == label && (tau.is_none() || p.tau == tau))
}

/// Fills `latency_vs_llm_only` and `llm_forward_tokens_vs_llm_only` of
/// every row from the `llm-only` row.
pub fn set_ratios_to_llm_only(policies: &mut [PolicyResult]) {
    let llm_only = find(policies, "llm-only", None);
    let base = llm_only.map(|p| p.mean_latency_s).filter(|&l| l > 0.0);
    let base_tokens = llm_only.map(|p| p.forward.llm_tokens).filter(|&t| t > 0.0);
    for p in policies.iter_mut() {
        p.latency_vs_llm_only = base.map(|b| p.mean_latency_s / b);
        p.llm_forward_tokens_vs_llm_only = base_tokens.map(|b| p.forward.llm_tokens / b);
    }
}

pub fn front(policies: &[PolicyResult]) -> Vec<FrontPoint> {
    let points: Vec<(f64, f64)> = policies
        .iter()
        .map(|p| (p.latency_vs_llm_only.unwrap_or(f64::NAN), p.accuracy))
        .collect();
    pareto_front(&points)
        .into_iter()
        .map(|i| FrontPoint {
            label: policies[i].label.clone(),
            tau: policies[i].tau,
            latency_vs_llm_only: points[i].0,
            accuracy: points[i].1,
        })
        .collect()
}

pub fn beat_glimp(policies: &[PolicyResult], default_tau: f32) -> Vec<String> {
    let Some(g) = find(policies, "glimp", Some(default_tau)) else {
        return Vec::new();
    };
    policies
        .iter()
        .filter(|p| {
            // Rows may come from different rounds: compare their ratios to
            // their rounds' LLM-only when there are any.
            let faster = match (p.latency_vs_llm_only, g.latency_vs_llm_only) {
                (Some(a), Some(b)) => a < b,
                _ => p.mean_latency_s < g.mean_latency_s,
            };
            !std::ptr::eq(*p, g) && p.accuracy >= g.accuracy && faster
        })
        .map(run_name)
        .collect()
}

/// `a - b` in percentage points. Accuracies are counts over the problem
/// set, so the difference is rounded to a millionth of a point: in floating
/// point 0.99 - 1.0 is a hair under -1 point, which would fail a bound of
/// exactly -1 that the counts meet.
fn accuracy_points(a: f64, b: f64) -> f64 {
    ((a - b) * 100.0 * 1e6).round() / 1e6
}

/// The criteria for the bundled pair, from the measurements.
pub fn checks(
    policies: &[PolicyResult],
    disagreement: &DisagreementResult,
    default_tau: f32,
) -> Vec<Check> {
    let slm = find(policies, "slm-only", None);
    let llm = find(policies, "llm-only", None);
    let glimp = find(policies, "glimp", Some(default_tau));
    let spec = find(policies, "glimp+spec", Some(default_tau));
    let points = |a: Option<&PolicyResult>, b: Option<&PolicyResult>| {
        Some(accuracy_points(a?.accuracy, b?.accuracy))
    };
    let ratio = |p: Option<&PolicyResult>| p.and_then(|p| p.latency_vs_llm_only);
    vec![
        Check::new(
            "LLM-only minus SLM-only accuracy (points)",
            points(llm, slm),
            25.0,
            false,
        ),
        Check::new(
            "AUC of H_init for a differing SLM step",
            disagreement.auc,
            0.75,
            false,
        ),
        Check::new(
            "glimp (default tau) minus LLM-only accuracy (points)",
            points(glimp, llm),
            -1.0,
            false,
        ),
        Check::new(
            "glimp (default tau) mean latency / LLM-only",
            ratio(glimp),
            0.75,
            true,
        ),
        Check::new(
            "glimp+spec (default tau) minus LLM-only accuracy (points)",
            points(spec, llm),
            -1.0,
            false,
        ),
        Check::new(
            "glimp+spec (default tau) mean latency / LLM-only",
            ratio(spec),
            0.6,
            true,
        ),
    ]
}

/// The tokens each model's forwards processed per run: routing that hands
/// few steps to the LLM can still have it read most of every problem.
fn render_work(out: &mut String, rows: &[&PolicyResult]) {
    let _ = writeln!(out, "\n## Forward work per model\n");
    let _ = writeln!(
        out,
        "Tokens through each model's forwards (prompts, catch-ups, decodes, drafts and verifies) and those forwards' seconds, from the engine's metrics.\n"
    );
    let _ = writeln!(
        out,
        "| policy | tau | SLM forward tokens | LLM forward tokens | LLM forward tokens vs LLM-only | SLM forward s | LLM forward s |"
    );
    let _ = writeln!(out, "| --- | --- | --- | --- | --- | --- | --- |");
    for p in rows {
        let name = table_name(p);
        let tau = p.tau.map_or("-".to_string(), |t| t.to_string());
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} | {:.0} | {} | {:.2} | {:.2} |",
            name,
            tau,
            p.forward.slm_tokens,
            p.forward.llm_tokens,
            opt(p.llm_forward_tokens_vs_llm_only, |r| format!("{r:.2}x")),
            p.forward.slm_seconds,
            p.forward.llm_seconds
        );
    }
}

/// Where rows go in the table: the paper's order, baselines first.
fn row_order(label: &str) -> usize {
    RUN_LABELS
        .iter()
        .position(|l| *l == label)
        .unwrap_or(usize::MAX)
}

/// `0.57x`, or `0.57x (0.55-0.60)` with the range over several rounds.
fn ratio_with_range(p: &PolicyResult) -> String {
    let runs = &p.latency_vs_llm_only_runs;
    let median = opt(p.latency_vs_llm_only, |r| format!("{r:.2}x"));
    if runs.len() < 2 {
        return median;
    }
    let lo = runs.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = runs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{median} ({lo:.2}-{hi:.2})")
}

fn opt(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.map(f).unwrap_or_else(|| "n/a".to_string())
}

/// The markdown report: the results table in the paper's layout, then the
/// disagreement AUC, the acceptance checks and the runs beating glimp.
pub fn render_markdown(report: &EvalReport) -> String {
    let m = &report.meta;
    let mut out = String::new();
    let mode = match m.mode {
        LatencyMode::Batched => "all problems of a policy submitted at once (batched serving)",
        LatencyMode::Sequential => "one problem at a time",
    };
    let _ = writeln!(out, "# glimp eval\n");
    let _ = writeln!(
        out,
        "{} problems (seed {}{}), {}, temperature {}{}. SLM `{}`, LLM `{}`. Latency is wall clock per problem from submit to finish; compare ratios, not seconds.\n",
        m.num_problems,
        m.seed,
        if m.mix.max_share == 0.0 {
            "; additions and subtractions only".to_string()
        } else {
            format!(
                "; task mix: `max` share {}, tied share {}, in {} of the problems",
                m.mix.max_share, m.mix.tied_share, m.mix.max_problems
            )
        },
        mode,
        m.temperature,
        if m.quick { ", quick mode" } else { "" },
        m.slm,
        m.llm
    );
    let _ = writeln!(
        out,
        "Routed runs: the answer after the marker is written by the {}; the LLM catches up on the SLM's tokens {}.\n",
        m.answer_model.as_str().to_uppercase(),
        if m.eager_catch_up {
            "beside every glimpse (eager)"
        } else {
            "only when a step or the answer is handed to it (lazy)"
        }
    );
    if let Some(n) = m.spec_paused_above {
        let _ = writeln!(
            out,
            "The `+spec` runs draft only in iterations with at most {n} sequences running or waiting (`speculative_disable_by_batch_size`); with all problems submitted at once that is the tail of each run.\n"
        );
    }
    if m.repeats > 1 {
        let _ = writeln!(
            out,
            "Every run ran {} times, in rounds of all runs. A row is the run's median round by latency vs that round's LLM-only (bracketed: the range over rounds); its other columns are from the same round.\n",
            m.repeats
        );
    }
    for w in &m.warnings {
        let _ = writeln!(out, "**Warning: {w}.**\n");
    }
    let _ = writeln!(
        out,
        "| policy | tau | accuracy | mean latency | p90 latency | latency vs LLM-only | LLM step share | LLM token share |"
    );
    let _ = writeln!(out, "| --- | --- | --- | --- | --- | --- | --- | --- |");
    let mut rows: Vec<&PolicyResult> = report.policies.iter().collect();
    rows.sort_by(|a, b| {
        row_order(&a.label)
            .cmp(&row_order(&b.label))
            .then(a.tau.unwrap_or(0.0).total_cmp(&b.tau.unwrap_or(0.0)))
    });
    for &p in &rows {
        let tau = match (p.tau, p.random_p) {
            (Some(t), _) if p.label == "glimp" && t == m.default_tau => format!("{t} (default)"),
            (Some(t), _) => t.to_string(),
            (None, Some(rp)) => format!("p={rp:.2}"),
            (None, None) => "-".to_string(),
        };
        let name = table_name(p);
        let _ = writeln!(
            out,
            "| {} | {} | {:.1}% | {:.3} s | {:.3} s | {} | {:.2} | {:.2} |",
            name,
            tau,
            p.accuracy * 100.0,
            p.mean_latency_s,
            p.p90_latency_s,
            ratio_with_range(p),
            p.llm_step_share,
            p.llm_token_share
        );
    }
    let errors: usize = report.policies.iter().map(|p| p.errors).sum();
    let cut: usize = report.policies.iter().map(|p| p.length_finishes).sum();
    let _ = writeln!(
        out,
        "\nRequests that failed: {errors}. Problems cut off by the token budget (all runs together): {cut}."
    );
    let _ = writeln!(out, "`specreason` judge: {}.", m.specreason_judge);
    for line in &m.not_run {
        let _ = writeln!(out, "Not run: {line}.");
    }

    render_work(&mut out, &rows);

    let d = &report.disagreement;
    let _ = writeln!(out, "\n## H_init predicts disagreement\n");
    let _ = writeln!(
        out,
        "{} step starts sampled from the LLM-only traces ({} available); the SLM's greedy step differed from the LLM's at {}. AUC of H_init for \"differs\": **{}**. Mean H_init: {} where they agree, {} where they differ.",
        d.positions,
        d.candidate_positions,
        d.differing,
        opt(d.auc, |a| format!("{a:.3}")),
        opt(d.mean_h_init_agree, |h| format!("{h:.3} nats")),
        opt(d.mean_h_init_differ, |h| format!("{h:.3} nats")),
    );

    let _ = writeln!(out, "\n## Checks for the bundled pair\n");
    if report.meta.quick {
        let _ = writeln!(
            out,
            "Quick mode: {} problems, {}. A batched run this short lasts well under a second, and its latency ratios move by more than the bars' margins from one run to the next; the checks below are a smoke test, and the full eval is the measurement.\n",
            report.meta.num_problems,
            match report.meta.repeats {
                1 => "one round".to_string(),
                n => format!("{n} rounds"),
            }
        );
    }
    let _ = writeln!(out, "| criterion | measured | required | result |");
    let _ = writeln!(out, "| --- | --- | --- | --- |");
    for c in &report.checks {
        let _ = writeln!(
            out,
            "| {} | {} | {} {} | {} |",
            c.name,
            opt(c.value, |v| format!("{v:.3}")),
            if c.at_most { "<=" } else { ">=" },
            c.bound,
            if c.passed { "pass" } else { "FAIL" }
        );
    }
    let _ = writeln!(
        out,
        "\n## Pareto front (all runs, latency relative to LLM-only)\n"
    );
    for p in &report.pareto_front {
        let name = match p.tau {
            Some(t) => format!("{}@{}", p.label, t),
            None => p.label.clone(),
        };
        let _ = writeln!(
            out,
            "* {name}: {:.1}% at {:.2}x",
            p.accuracy * 100.0,
            p.latency_vs_llm_only
        );
    }
    if report.beat_glimp_default.is_empty() {
        let _ = writeln!(
            out,
            "\nNo run is both at least as accurate as glimp at the default tau and faster."
        );
    } else {
        let _ = writeln!(
            out,
            "\nRuns at least as accurate as glimp at the default tau and faster: {}.",
            report.beat_glimp_default.join(", ")
        );
    }
    let _ = writeln!(out, "\nTotal eval wall time: {:.1} s.", m.total_wall_s);
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::disagreement::summarize;
    use crate::policy_run::ForwardWork;

    pub(crate) fn row(
        label: &str,
        tau: Option<f32>,
        accuracy: f64,
        latency: f64,
        llm_step_share: f64,
    ) -> PolicyResult {
        PolicyResult {
            label: label.to_string(),
            policy: label
                .trim_end_matches("+spec")
                .trim_end_matches("-only")
                .to_string(),
            tau,
            random_p: (label == "random").then_some(0.25),
            speculative_k: if label.ends_with("+spec") { 3 } else { 0 },
            problems: 10,
            accuracy,
            mean_latency_s: latency,
            p90_latency_s: latency * 1.5,
            latency_vs_llm_only: None,
            latency_vs_llm_only_runs: Vec::new(),
            llm_step_share,
            llm_token_share: llm_step_share,
            mean_steps: 5.0,
            mean_completion_tokens: 60.0,
            draft_acceptance: None,
            errors: 0,
            length_finishes: 0,
            wall_s: 1.0,
            forward: ForwardWork {
                slm_tokens: 100.0 * (1.0 - llm_step_share),
                llm_tokens: 100.0 * llm_step_share,
                slm_seconds: 0.1,
                llm_seconds: 0.2,
            },
            llm_forward_tokens_vs_llm_only: None,
            per_problem: Vec::new(),
        }
    }

    fn report() -> EvalReport {
        let mut policies = vec![
            row("glimp", Some(1.0), 0.9, 1.2, 0.3),
            row("random", None, 0.7, 1.3, 0.3),
            row("slm-only", None, 0.5, 0.5, 0.0),
            row("llm-only", None, 0.9, 2.0, 1.0),
            row("glimp", Some(0.5), 0.95, 1.6, 0.5),
            row("glimp+spec", Some(1.0), 0.9, 1.0, 0.3),
            row("specreason", Some(7.0), 0.6, 2.4, 0.6),
        ];
        set_ratios_to_llm_only(&mut policies);
        let disagreement = summarize(0, Vec::new());
        EvalReport {
            meta: EvalMeta {
                mix: TaskMix::BUNDLED,
                seed: 7,
                num_problems: 10,
                mode: LatencyMode::Batched,
                quick: false,
                temperature: 0.0,
                default_tau: 1.0,
                speculative_k: 3,
                slm: "s".into(),
                llm: "l".into(),
                answer_model: Model::Slm,
                eager_catch_up: false,
                spec_paused_above: Some(8),
                repeats: 1,
                specreason_judge: "likelihood".into(),
                not_run: vec!["RSD".into()],
                warnings: vec!["stale tokenizer".into()],
                total_wall_s: 3.0,
            },
            pareto_front: front(&policies),
            beat_glimp_default: beat_glimp(&policies, 1.0),
            checks: checks(&policies, &disagreement, 1.0),
            policies,
            disagreement,
        }
    }

    #[test]
    fn an_accuracy_exactly_one_point_under_the_llm_meets_the_bound() {
        assert_eq!(accuracy_points(0.99, 1.0), -1.0);
        assert_eq!(accuracy_points(0.985, 1.0), -1.5);
        let mut policies = vec![
            row("slm-only", None, 0.75, 0.5, 0.0),
            row("llm-only", None, 1.0, 2.0, 1.0),
            row("glimp", Some(1.0), 0.99, 1.0, 0.2),
        ];
        set_ratios_to_llm_only(&mut policies);
        let checks = checks(&policies, &summarize(0, Vec::new()), 1.0);
        let glimp = &checks[2];
        assert_eq!(glimp.value, Some(-1.0));
        assert!(glimp.passed, "{glimp:?}");
        assert!(checks[0].passed, "a gap of exactly 25 points meets the bar");
    }

    #[test]
    fn ratios_checks_and_front() {
        let r = report();
        let ratio = |label: &str, tau: Option<f32>| {
            find(&r.policies, label, tau).and_then(|p| p.latency_vs_llm_only)
        };
        assert_eq!(ratio("llm-only", None), Some(1.0));
        assert_eq!(ratio("glimp", Some(1.0)), Some(0.6));
        let work = |label: &str, tau: Option<f32>| {
            find(&r.policies, label, tau).and_then(|p| p.llm_forward_tokens_vs_llm_only)
        };
        assert_eq!(work("llm-only", None), Some(1.0));
        assert_eq!(work("glimp", Some(0.5)), Some(0.5)); // 50 of 100 tokens
        assert_eq!(work("slm-only", None), Some(0.0));
        let c: Vec<(Option<f64>, bool)> = r
            .checks
            .iter()
            .map(|c| (c.value.map(|v| (v * 1e6).round() / 1e6), c.passed))
            .collect();
        assert_eq!(
            c,
            vec![
                (Some(40.0), true), // 90% - 50%
                (None, false),      // no AUC measured
                (Some(0.0), true),  // glimp as accurate as the LLM
                (Some(0.6), true),  // 1.2 s / 2.0 s
                (Some(0.0), true),
                (Some(0.5), true), // 1.0 s / 2.0 s
            ]
        );
        // glimp+spec is as accurate as glimp@1 and faster: it beats it; nothing else does.
        assert_eq!(r.beat_glimp_default, vec!["glimp+spec@1".to_string()]);
        let front: Vec<String> = r
            .pareto_front
            .iter()
            .map(|p| format!("{}@{:?}", p.label, p.tau))
            .collect();
        assert_eq!(
            front,
            vec!["slm-only@None", "glimp+spec@Some(1.0)", "glimp@Some(0.5)"]
        );
    }

    #[test]
    fn forward_work_section_lists_every_run_against_llm_only() {
        let md = render_markdown(&report());
        let section = md
            .split("## Forward work per model")
            .nth(1)
            .expect("section present");
        assert!(
            section.contains("| llm-only | - | 0 | 100 | 1.00x | 0.10 | 0.20 |"),
            "{section}"
        );
        assert!(
            section.contains("| glimp | 0.5 | 50 | 50 | 0.50x |"),
            "{section}"
        );
        assert!(
            section.contains("| glimp+spec (k=3) | 1 | 70 | 30 | 0.30x |"),
            "{section}"
        );
    }

    #[test]
    fn quick_mode_says_its_checks_are_a_smoke_test() {
        let mut r = report();
        assert!(!render_markdown(&r).contains("Quick mode:"));
        r.meta.quick = true;
        let md = render_markdown(&r);
        let checks = md.split("## Checks for the bundled pair").nth(1).unwrap();
        assert!(
            checks.contains("Quick mode: 10 problems, one round.")
                && checks.contains("the full eval is the measurement"),
            "{checks}"
        );
    }

    #[test]
    fn several_rounds_show_their_range_beside_the_median() {
        let mut r = report();
        r.meta.repeats = 3;
        for p in &mut r.policies {
            let m = p.latency_vs_llm_only.unwrap_or(1.0);
            p.latency_vs_llm_only_runs = vec![m + 0.05, m, m - 0.02];
        }
        let md = render_markdown(&r);
        assert!(md.contains("Every run ran 3 times"), "{md}");
        assert!(
            md.contains("| glimp | 1 (default) | 90.0% | 1.200 s | 1.800 s | 0.60x (0.58-0.65) |"),
            "{md}"
        );
    }

    #[test]
    fn markdown_table_in_paper_order() {
        let md = render_markdown(&report());
        assert!(
            md.contains("answer after the marker is written by the SLM")
                && md.contains("catches up on the SLM's tokens only when")
                && md.contains("at most 8 sequences running or waiting"),
            "{md}"
        );
        let rows: Vec<&str> = md
            .lines()
            .filter(|l| l.starts_with("| ") && !l.starts_with("| ---"))
            .collect();
        assert_eq!(
            rows[0],
            "| policy | tau | accuracy | mean latency | p90 latency | latency vs LLM-only | LLM step share | LLM token share |"
        );
        let firsts: Vec<&str> = rows[1..8]
            .iter()
            .map(|l| l.split(" | ").next().unwrap_or(""))
            .collect();
        assert_eq!(
            firsts,
            vec![
                "| slm-only",
                "| llm-only",
                "| random",
                "| specreason",
                "| glimp",
                "| glimp",
                "| glimp+spec (k=3)"
            ]
        );
        assert_eq!(
            rows[2],
            "| llm-only | - | 90.0% | 2.000 s | 3.000 s | 1.00x | 1.00 | 1.00 |"
        );
        assert_eq!(
            rows[3],
            "| random | p=0.25 | 70.0% | 1.300 s | 1.950 s | 0.65x | 0.30 | 0.30 |"
        );
        assert!(
            rows[5].starts_with("| glimp | 0.5 | 95.0% |"),
            "{}",
            rows[5]
        );
        assert!(
            rows[6].starts_with("| glimp | 1 (default) | 90.0% | 1.200 s |"),
            "{}",
            rows[6]
        );
        assert!(
            md.contains("| AUC of H_init for a differing SLM step | n/a | >= 0.75 | FAIL |"),
            "{md}"
        );
        assert!(md.contains("faster: glimp+spec@1."), "{md}");
        assert!(md.contains("Not run: RSD."), "{md}");
        assert!(md.contains("**Warning: stale tokenizer.**"), "{md}");
    }
}
