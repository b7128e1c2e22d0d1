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
    answer_line, check_answer, digits, generate_problems, Chain, Op, OpKind, Problem, StepClaim,
    ANSWER_PREFIX, STEP_SEPARATOR,
};
pub use tokenizer_builder::{
    build_task_tokenizer, token_id, write_tokenizer_files, CHAT_TEMPLATE, EOS_TOKEN, IM_END_TOKEN,
    IM_START_TOKEN, UNK_TOKEN,
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
