//! Training texts (with injected slips and their corrections) and the prompt
//! file the load tester replays.

use std::io::Write;
use std::ops::Range;
use std::path::Path;

use rand::Rng;

use super::generator::{answer_line, Chain, StepClaim, TaskMix, STEP_SEPARATOR};
use super::TaskError;

/// Probability that a training solution contains one slip followed by a
/// `Wait ,` correction.
pub const DEFAULT_SLIP_PROBABILITY: f64 = 0.2;

/// One training document: the prompt and a full solution, and the byte
/// ranges of `text` whose tokens the loss is computed on. The prompt (random
/// operands, not worth predicting) and injected slips (which the models must
/// not learn to make, only to correct) are left out of those ranges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrainingText {
    pub text: String,
    pub trained: Vec<Range<usize>>,
}

impl TrainingText {
    pub fn is_trained(&self, byte_offset: usize) -> bool {
        self.trained.iter().any(|r| r.contains(&byte_offset))
    }
}

/// A random training document of `mix`; with probability `slip_probability`
/// one step is replaced by a slipped version, immediately followed by its
/// correction.
pub fn training_text(rng: &mut impl Rng, slip_probability: f64, mix: &TaskMix) -> TrainingText {
    let chain = Chain::random(rng, mix);
    let steps = chain.correct_steps();
    let slip_at = if rng.random_bool(slip_probability) {
        let at = rng.random_range(0..steps.len());
        StepClaim::slipped(steps[at].total, steps[at].op).map(|slip| (at, slip))
    } else {
        None
    };

    let mut text = chain.prompt();
    let mut trained = Vec::new();
    let mut trained_from = text.len();
    for (i, step) in steps.iter().enumerate() {
        if i > 0 {
            text.push_str(STEP_SEPARATOR);
        }
        match slip_at {
            Some((at, slip)) if at == i => {
                trained.push(trained_from..text.len());
                text.push_str(&slip.render());
                trained_from = text.len();
                text.push_str(STEP_SEPARATOR);
                text.push_str(&step.render_correction());
            }
            _ => text.push_str(&step.render()),
        }
    }
    text.push_str(STEP_SEPARATOR);
    text.push_str(&answer_line(chain.answer()));
    trained.push(trained_from..text.len());
    trained.retain(|r| !r.is_empty());
    TrainingText { text, trained }
}

/// Writes `n` prompts from `seed` as JSON lines `{"prompt": ...}`.
pub fn write_prompts_jsonl(path: &Path, seed: u64, n: usize) -> Result<(), TaskError> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    for problem in super::generate_problems(seed, n) {
        let line = serde_json::json!({ "prompt": problem.prompt });
        writeln!(out, "{line}")?;
    }
    out.flush()?;
    Ok(())
}
