//! Trains a preset outside the `glimp` binary, and checks a checkpoint:
//!
//! cargo run --release -p glimprouter-models --example train -- train slm models/slm [steps [checkpoint_every [time_budget_s]]]
//! cargo run --release -p glimprouter-models --example train -- eval models/slm [n]
//! cargo run --release -p glimprouter-models --example train -- steps models/slm [n]     (per-step disagreement, also by first word; H_init AUC)
//! cargo run --release -p glimprouter-models --example train -- failures models/slm [n]  (the problems it gets wrong)
//! cargo run -p glimprouter-models --example train -- prompts benches/task_prompts.jsonl
//! cargo run -p glimprouter-models --example train -- tokenizer models/slm   (rewrites the tokenizer files)

use std::path::PathBuf;

use glimprouter_models::task::{
    build_task_tokenizer, generate_problems_with, write_prompts_jsonl, write_tokenizer_files,
    Problem, TaskMix, MAX_OPS, SOLUTION_MAX_TOKENS,
};
use glimprouter_models::train::check::{auc, load_checkpoint};
use glimprouter_models::train::{train, TrainConfig};

/// Problems the accuracy check uses; a seed the training stream never starts from.
const EVAL_SEED: u64 = 424_242;
/// Seed and size of the load tester's prompt file.
const PROMPTS_SEED: u64 = 2026;
const PROMPTS: usize = 500;
/// model_max_length written to tokenizer_config.json (the presets' context).
const MAX_LENGTH: usize = 256;

/// The task mix a checkpoint was trained on (its training_state.json), so
/// that it is checked on that task; add/subtract for runs that predate the
/// setting or folders without the file.
fn trained_mix(dir: &str) -> TaskMix {
    let state = std::fs::read_to_string(PathBuf::from(dir).join("training_state.json"));
    state
        .ok()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .and_then(|state| serde_json::from_value(state["config"]["mix"].clone()).ok())
        .unwrap_or(TaskMix::ADD_SUBTRACT)
}

/// `n` held-out problems of the task the checkpoint in `dir` was trained on.
fn held_out_problems(dir: &str, n: usize) -> Vec<Problem> {
    generate_problems_with(&trained_mix(dir), EVAL_SEED, n)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("train") if args.len() >= 3 => {
            let mut config = TrainConfig::preset(&args[1])?;
            if let Some(steps) = args.get(3) {
                config.steps = steps.parse()?;
            }
            if let Some(every) = args.get(4) {
                config.checkpoint_every = every.parse()?;
            }
            if let Some(budget) = args.get(5) {
                config.time_budget_s = Some(budget.parse()?);
            }
            let report = train(&config, &PathBuf::from(&args[2]), true)?;
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
        Some("eval") if args.len() >= 2 => {
            let n: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(200);
            let ckpt = load_checkpoint(&PathBuf::from(&args[1]))?;
            let problems = held_out_problems(&args[1], n);
            if let Some(p) = problems.first() {
                println!(
                    "{}{}",
                    p.prompt,
                    ckpt.greedy(&p.prompt, SOLUTION_MAX_TOKENS)?
                );
            }
            println!("accuracy {:.3} over {n}", ckpt.greedy_accuracy(&problems)?);
        }
        Some("failures") if args.len() >= 2 => {
            let n: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(200);
            let ckpt = load_checkpoint(&PathBuf::from(&args[1]))?;
            let problems = held_out_problems(&args[1], n);
            for (p, out) in ckpt.wrong_answers(&problems)? {
                println!(
                    "=== {:?}\nref {:?}\ngot {:?}",
                    p.prompt,
                    p.solution_text(),
                    out
                );
            }
        }
        Some("steps") if args.len() >= 2 => {
            let n: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(100);
            let ckpt = load_checkpoint(&PathBuf::from(&args[1]))?;
            let checks = ckpt.step_agreement(&held_out_problems(&args[1], n))?;
            for c in checks.iter().filter(|c| c.differs()).take(6) {
                println!("H={:.3} ref {:?} got {:?}", c.entropy, c.reference, c.mine);
            }
            // [differing, total] by the step's index in its solution.
            let mut by_index = [[0usize; 2]; MAX_OPS + 1];
            for c in &checks {
                by_index[c.index][0] += usize::from(c.differs());
                by_index[c.index][1] += 1;
            }
            let by_index: Vec<String> = by_index
                .iter()
                .map(|[differ, total]| format!("{differ}/{total}"))
                .collect();
            println!("differing by step index: {}", by_index.join(" "));
            // [differing, total, sum of H_init where the step agrees] by the
            // reference step's first word.
            let mut by_word: std::collections::BTreeMap<String, [f64; 3]> = Default::default();
            for c in &checks {
                let word = c
                    .reference
                    .split_whitespace()
                    .next()
                    .unwrap_or("")
                    .to_string();
                let entry = by_word.entry(word).or_default();
                entry[0] += f64::from(u8::from(c.differs()));
                entry[1] += 1.0;
                if !c.differs() {
                    entry[2] += f64::from(c.entropy);
                }
            }
            let by_word: Vec<String> = by_word
                .iter()
                .map(|(w, [d, t, h])| format!("{w} {d}/{t} (H agree {:.2})", h / (t - d).max(1.0)))
                .collect();
            println!("differing by first word: {}", by_word.join(", "));
            let rows: Vec<(f32, bool)> = checks.iter().map(|c| (c.entropy, c.differs())).collect();
            let differ = checks.iter().filter(|c| c.differs()).count();
            let first_word_differs = checks.iter().filter(|c| c.first_word_differs()).count();
            println!(
                "steps {} differing from reference {differ} ({:.3}), {first_word_differs} of them in the first word; AUC of first-token entropy {:?}",
                rows.len(),
                differ as f64 / rows.len().max(1) as f64,
                auc(&rows)
            );
        }
        Some("tokenizer") if args.len() >= 2 => {
            let tokenizer = build_task_tokenizer()?;
            write_tokenizer_files(&PathBuf::from(&args[1]), &tokenizer, MAX_LENGTH)?;
        }
        Some("prompts") if args.len() >= 2 => {
            write_prompts_jsonl(&PathBuf::from(&args[1]), PROMPTS_SEED, PROMPTS)?;
        }
        _ => {
            eprintln!("usage: train train slm|llm OUT [STEPS [CHECKPOINT_EVERY [TIME_BUDGET_S]]] | train eval DIR [N] | train steps DIR [N] | train failures DIR [N] | train prompts FILE | train tokenizer DIR");
            std::process::exit(2);
        }
    }
    Ok(())
}
