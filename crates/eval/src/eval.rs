//! The whole eval: every policy over the problem set, then the
//! disagreement AUC, then the report and its files.

use std::path::{Path, PathBuf};
use std::time::Instant;

use glimprouter_engine::EngineHandle;
use glimprouter_models::task::{generate_problems_with, Problem, UNK_TOKEN};

use crate::disagreement::measure_disagreement;
use crate::plan::{glimp_default, other_runs, random_at, EvalOptions};
use crate::plots::{plot_h_init_histogram, plot_pareto};
use crate::policy_run::{encode, evaluate_policy, PolicyResult};
use crate::report::{beat_glimp, checks, front, render_markdown, EvalMeta, EvalReport};
use crate::rounds::median_rounds;
use crate::EvalError;

/// Runs the eval on a started engine. `quick` is only recorded.
pub fn run_eval(
    engine: &EngineHandle,
    opts: &EvalOptions,
    quick: bool,
) -> Result<EvalReport, EvalError> {
    let started = Instant::now();
    let problems = generate_problems_with(&opts.mix, opts.seed, opts.num_problems);
    let warnings = tokenizer_warnings(engine, &problems)?;
    for w in &warnings {
        tracing::warn!("{w}");
    }

    let record = |round: usize, result: &PolicyResult| {
        tracing::info!(
            round = round + 1,
            run = %crate::report::run_name(result),
            accuracy = format!("{:.3}", result.accuracy),
            mean_latency_s = format!("{:.3}", result.mean_latency_s),
            llm_step_share = format!("{:.3}", result.llm_step_share),
            wall_s = format!("{:.1}", result.wall_s),
            "policy done"
        );
    };

    // glimp at the default tau runs first: random routing is matched to
    // its LLM step share (of the first round).
    let glimp_run = glimp_default(opts);
    let (glimp, _) = evaluate_policy(engine, &problems, &glimp_run, opts)?;
    record(0, &glimp);
    let share = glimp.llm_step_share as f32;
    let mut runs = vec![glimp_run, random_at(opts, share)];
    runs.extend(other_runs(opts));

    let mut llm_traces: Vec<String> = Vec::new();
    let mut rounds: Vec<Vec<PolicyResult>> = Vec::new();
    for r in 0..opts.repeats.max(1) {
        let mut round = Vec::with_capacity(runs.len());
        for (i, run) in runs.iter().enumerate() {
            let result = if r == 0 && i == 0 {
                glimp.clone()
            } else {
                let (result, texts) = evaluate_policy(engine, &problems, run, opts)?;
                if r == 0 && run.label == "llm-only" {
                    llm_traces = texts;
                }
                record(r, &result);
                result
            };
            round.push(result);
        }
        rounds.push(round);
    }
    let policies = median_rounds(rounds);

    tracing::info!(
        positions = opts.auc_positions,
        "measuring H_init against step disagreement"
    );
    let disagreement = measure_disagreement(engine, &problems, &llm_traces, opts)?;
    tracing::info!(auc = ?disagreement.auc, positions = disagreement.positions, "disagreement done");

    let info = engine.info();
    let meta = EvalMeta {
        seed: opts.seed,
        mix: opts.mix,
        num_problems: problems.len(),
        mode: opts.mode,
        quick,
        temperature: opts.temperature,
        default_tau: opts.default_tau,
        speculative_k: opts.speculative_k,
        slm: info.slm_name.clone(),
        llm: info.llm_name.clone(),
        answer_model: opts.base_routing.answer_model,
        eager_catch_up: opts.base_routing.eager_catch_up,
        spec_paused_above: opts.spec_paused_above,
        repeats: opts.repeats.max(1),
        specreason_judge: "LLM likelihood: score 9 * exp(mean LLM token log-probability of the SLM's step), \
                           rewritten by the LLM when below tau (the small models cannot follow a 0-9 scoring prompt)"
            .to_string(),
        not_run: vec![
            "RSD (needs a trained process reward model)".to_string(),
            "SpecCoT (the engine has no multi-candidate step policy)".to_string(),
        ],
        warnings,
        total_wall_s: started.elapsed().as_secs_f64(),
    };
    Ok(EvalReport {
        pareto_front: front(&policies),
        beat_glimp_default: beat_glimp(&policies, opts.default_tau),
        checks: checks(&policies, &disagreement, opts.default_tau),
        meta,
        policies,
        disagreement,
    })
}

/// A tokenizer that does not know the task's words (a stale
/// tokenizer.json, say) turns prompts into `<unk>`s and every accuracy into
/// noise: say so in the report.
fn tokenizer_warnings(
    engine: &EngineHandle,
    problems: &[Problem],
) -> Result<Vec<String>, EvalError> {
    let tokenizer = &engine.info().tokenizer;
    let Some(unk) = tokenizer.token_id(UNK_TOKEN) else {
        return Ok(Vec::new());
    };
    let mut affected = 0;
    for problem in problems {
        if encode(engine, &problem.prompt)?.contains(&unk) {
            affected += 1;
        }
    }
    Ok((affected > 0)
        .then(|| {
            format!(
                "{affected} of {} prompts contain the unknown token {UNK_TOKEN}: the models' tokenizer does not match the task",
                problems.len()
            )
        })
        .into_iter()
        .collect())
}

/// The files an eval wrote, and the figures it could not draw.
#[derive(Debug, Default)]
pub struct WrittenFiles {
    pub files: Vec<PathBuf>,
    pub plot_errors: Vec<String>,
}

/// Writes `results.json`, `results.md`, `pareto.png` and `h_init_hist.png`
/// into `dir`. A figure that cannot be drawn (no fonts, say) is reported in
/// `plot_errors`, not an error: the numbers are already written.
pub fn write_outputs(report: &EvalReport, dir: &Path) -> Result<WrittenFiles, EvalError> {
    std::fs::create_dir_all(dir).map_err(|e| EvalError::Io {
        path: dir.to_path_buf(),
        source: e,
    })?;
    let mut written = WrittenFiles::default();
    let json_path = dir.join("results.json");
    let json = serde_json::to_string_pretty(report).map_err(EvalError::Json)?;
    write(&json_path, json.as_bytes())?;
    written.files.push(json_path);
    let md_path = dir.join("results.md");
    write(&md_path, render_markdown(report).as_bytes())?;
    written.files.push(md_path);
    let pareto = dir.join("pareto.png");
    match plot_pareto(&report.policies, &pareto) {
        Ok(()) => written.files.push(pareto),
        Err(e) => written.plot_errors.push(format!("pareto.png: {e}")),
    }
    let hist = dir.join("h_init_hist.png");
    match plot_h_init_histogram(&report.disagreement, &hist) {
        Ok(()) => written.files.push(hist),
        Err(e) => written.plot_errors.push(format!("h_init_hist.png: {e}")),
    }
    Ok(written)
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), EvalError> {
    std::fs::write(path, bytes).map_err(|e| EvalError::Io {
        path: path.to_path_buf(),
        source: e,
    })
}
