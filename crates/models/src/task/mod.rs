//! The synthetic reasoning task the bundled SLM/LLM pair is trained on: the
//! problem generator, the answer checker, the shared tokenizer and the
//! training corpus.

mod corpus;
mod generator;
mod tokenizer_builder;

#[cfg(test)]
mod tests;

pub use corpus::{training_text, write_prompts_jsonl, TrainingText, DEFAULT_SLIP_PROBABILITY};
pub use generator::{
    answer_line, check_answer, digits, generate_problems, generate_problems_with, Chain, Op,
    OpKind, Problem, StepClaim, TaskMix, ANSWER_PREFIX, MAX_OPS, MIN_OPS, SOLUTION_MAX_TOKENS,
    STEP_SEPARATOR,
};
pub use tokenizer_builder::{
    build_task_tokenizer, build_task_tokenizer_for, token_id, write_tokenizer_files, CHAT_TEMPLATE,
    EOS_TOKEN, IM_END_TOKEN, IM_START_TOKEN, UNK_TOKEN,
};

#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
}

/// Writes a random-weight Qwen3 pair (SLM: 1 layer, hidden 32; LLM: 2
/// layers, hidden 64) sharing the task tokenizer into `dir/slm` and
/// `dir/llm`, for tests of the engine, server and eval that need real
/// models but not trained ones.
pub fn write_random_pair(
    dir: &std::path::Path,
    max_position: usize,
    seeds: [u64; 2],
) -> Result<(std::path::PathBuf, std::path::PathBuf), crate::ModelError> {
    use crate::{make_model, Arch, MakeModelSpec};
    let tok_err = |e: TaskError| crate::ModelError::Tokenizer(e.to_string());
    let tok_dir = dir.join("tokenizer");
    let tokenizer = build_task_tokenizer().map_err(tok_err)?;
    write_tokenizer_files(&tok_dir, &tokenizer, max_position).map_err(tok_err)?;
    let vocab = tokenizer.get_vocab_size(true);
    let make = |name: &str, hidden: usize, layers: usize, seed: u64| {
        let out = dir.join(name);
        let spec = MakeModelSpec {
            layers,
            hidden,
            intermediate: hidden * 2,
            heads: 4,
            kv_heads: 2,
            vocab,
            max_position,
            ..MakeModelSpec::tiny(Arch::Qwen3, seed)
        };
        make_model(&spec, &out, Some(&tok_dir.join("tokenizer.json"))).map(|()| out)
    };
    Ok((make("slm", 32, 1, seeds[0])?, make("llm", 64, 2, seeds[1])?))
}
