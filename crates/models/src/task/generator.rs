//! Seeded generator of the synthetic step-by-step reasoning task.
//!
//! A problem is a chain of operations on two-digit numbers (digits are
//! separate words, so the tokenizer stays tiny): additions, subtractions
//! and, in a share set by [`TaskMix`], `max N` (the total becomes the larger
//! of itself and N). Each solution step opens with a *decision word* that
//! fixes both which operation comes next and how it turns out:
//!
//! | word       | meaning                        |
//! |------------|--------------------------------|
//! | `add`      | addition without carry         |
//! | `carry`    | addition with a carry          |
//! | `subtract` | subtraction without borrow     |
//! | `borrow`   | subtraction with a borrow      |
//! | `hold`     | `max N` keeps the total        |
//! | `raise`    | `max N` takes N                |
//! | `Wait`     | the previous step was wrong    |
//!
//! The rest of the step is a formula that follows mechanically from the
//! decision (`carry 5 8 : 3 7 + 5 8 = 9 5`), so, as in the GlimpRouter paper,
//! the first token of a step carries almost all of its information.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Steps are separated by this string, as the router expects.
pub const STEP_SEPARATOR: &str = "\n\n";
/// Prefix of the last line of every solution.
pub const ANSWER_PREFIX: &str = "Answer:";

/// Largest value any number in a problem can take (two digits).
const MAX_VALUE: u32 = 99;
/// Operations per problem.
pub const MIN_OPS: usize = 3;
pub const MAX_OPS: usize = 6;
/// A completion budget that fits any solution with room to spare: up to
/// MAX_OPS steps of 13 tokens, a slip and its correction, the answer line.
pub const SOLUTION_MAX_TOKENS: usize = 200;

/// One problem of the task, in the form the eval and load tester consume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The text a model is prompted with, ending in the step separator.
    pub prompt: String,
    /// The reference solution: the steps, the last one being the answer line.
    pub solution_steps: Vec<String>,
    /// The exact final value, as a plain decimal number.
    pub answer: String,
}

impl Problem {
    /// The reference solution as one text (steps joined by the separator).
    pub fn solution_text(&self) -> String {
        self.solution_steps.join(STEP_SEPARATOR)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    Add,
    Subtract,
    Max,
}

/// How often each kind of operation is drawn.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TaskMix {
    /// Share of operations that are `max N`; the rest are additions and
    /// subtractions, half and half where the total allows both.
    pub max_share: f64,
    /// Share of `max N` operands whose tens digit equals the total's, so
    /// that the ones digits decide; in the rest the tens digits differ and
    /// decide. At 0.5 a rule that reads only one of the two digits is right
    /// on three steps in four.
    pub tied_share: f64,
    /// Share of problems that may have `max` at all (then at `max_share` of
    /// their operations); the rest are additions and subtractions only. Below
    /// 1 this bunches the `max` steps into fewer problems.
    #[serde(default = "all_problems")]
    pub max_problems: f64,
}

fn all_problems() -> f64 {
    1.0
}

impl TaskMix {
    /// Additions and subtractions only.
    pub const ADD_SUBTRACT: TaskMix = TaskMix {
        max_share: 0.0,
        tied_share: 0.5,
        max_problems: 1.0,
    };
    /// The task `glimp eval` measures by default and the bundled SLM was
    /// finished on: `max` in 45% of the problems, at half of their
    /// operations. The comparison is a skill the LLM learns in its budget
    /// and the SLM does not, and bunching it leaves the LLM out of the other
    /// problems entirely (docs/TRAINING.md).
    pub const BUNDLED: TaskMix = TaskMix {
        max_share: 0.5,
        tied_share: 0.2,
        max_problems: 0.45,
    };
    /// What the bundled LLM was trained on: more `max` than the task, so
    /// that the comparison gets enough practice in its budget (chosen
    /// before the SLM was measured; docs/TRAINING.md).
    pub const LLM_TRAINING: TaskMix = TaskMix {
        max_share: 0.7,
        tied_share: 0.2,
        max_problems: 0.4,
    };

    /// The first share outside [0, 1], by field name, with its value: the
    /// generator draws with these as probabilities.
    pub fn out_of_range(&self) -> Option<(&'static str, f64)> {
        [
            ("max_share", self.max_share),
            ("tied_share", self.tied_share),
            ("max_problems", self.max_problems),
        ]
        .into_iter()
        .find(|(_, share)| !(0.0..=1.0).contains(share))
    }
}

/// One operation applied to the running total.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Op {
    pub kind: OpKind,
    pub operand: u32,
}

impl Op {
    pub fn apply(&self, total: u32) -> u32 {
        match self.kind {
            OpKind::Add => total + self.operand,
            OpKind::Subtract => total - self.operand,
            OpKind::Max => total.max(self.operand),
        }
    }

    /// Whether the ones digits force a carry (addition) or borrow
    /// (subtraction), or the operand replaces the total (`max`).
    pub fn carries(&self, total: u32) -> bool {
        match self.kind {
            OpKind::Add => total % 10 + self.operand % 10 >= 10,
            OpKind::Subtract => total % 10 < self.operand % 10,
            OpKind::Max => self.operand > total,
        }
    }

    /// The word the prompt names the operation by, and the formula's sign.
    fn verb_and_sign(&self) -> (&'static str, &'static str) {
        match self.kind {
            OpKind::Add => ("add", "+"),
            OpKind::Subtract => ("subtract", "-"),
            OpKind::Max => ("max", "max"),
        }
    }
}

/// The structured form of a problem: a start value and a chain of operations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub start: u32,
    pub ops: Vec<Op>,
}

/// What a single solution step states; `claims_carry` and `result` may be
/// wrong when a slip is rendered on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepClaim {
    pub total: u32,
    pub op: Op,
    pub claims_carry: bool,
    pub result: u32,
}

impl StepClaim {
    /// The correct step for applying `op` to `total`.
    pub fn correct(total: u32, op: Op) -> Self {
        Self {
            total,
            op,
            claims_carry: op.carries(total),
            result: op.apply(total),
        }
    }

    /// The step a solver writes when it misjudges the carry: the decision word
    /// is flipped and the tens digit follows the wrong decision. `None` when
    /// the wrong result would leave the two-digit range.
    pub fn slipped(total: u32, op: Op) -> Option<Self> {
        let right = Self::correct(total, op);
        // Forgetting a carry loses ten, inventing one adds ten; for a borrow
        // it is the other way round.
        // A wrong `max` keeps the value it should have dropped.
        let result = match (op.kind, right.claims_carry) {
            (OpKind::Add, true) | (OpKind::Subtract, false) => right.result.checked_sub(10)?,
            (OpKind::Add, false) | (OpKind::Subtract, true) => right.result + 10,
            (OpKind::Max, true) => total,
            (OpKind::Max, false) => op.operand,
        };
        if result > MAX_VALUE {
            return None;
        }
        Some(Self {
            claims_carry: !right.claims_carry,
            result,
            ..right
        })
    }

    pub fn decision_word(&self) -> &'static str {
        match (self.op.kind, self.claims_carry) {
            (OpKind::Add, false) => "add",
            (OpKind::Add, true) => "carry",
            (OpKind::Subtract, false) => "subtract",
            (OpKind::Subtract, true) => "borrow",
            (OpKind::Max, false) => "hold",
            (OpKind::Max, true) => "raise",
        }
    }

    /// e.g. `carry 5 8 : 3 7 + 5 8 = 9 5`, `raise 4 2 : 3 7 max 4 2 = 4 2`
    pub fn render(&self) -> String {
        let (_, sign) = self.op.verb_and_sign();
        format!(
            "{} {} : {} {} {} = {}",
            self.decision_word(),
            digits(self.op.operand),
            digits(self.total),
            sign,
            digits(self.op.operand),
            digits(self.result)
        )
    }

    /// The step that corrects a slip: the right step, introduced by `Wait ,`.
    pub fn render_correction(&self) -> String {
        format!("Wait , {}", self.render())
    }
}

/// A number as two space-separated digits (`7` -> `0 7`), so every number
/// has the same shape and the vocabulary needs only ten digit words.
pub fn digits(value: u32) -> String {
    format!("{} {}", value / 10 % 10, value % 10)
}

impl Chain {
    pub fn random(rng: &mut impl Rng, mix: &TaskMix) -> Self {
        // No draw unless `max` is bunched, so other mixes keep their problems.
        let bunched = mix.max_share > 0.0 && mix.max_problems < 1.0;
        let mix = if bunched && !rng.random_bool(mix.max_problems.max(0.0)) {
            &TaskMix::ADD_SUBTRACT
        } else {
            mix
        };
        let n_ops = rng.random_range(MIN_OPS..=MAX_OPS);
        let start = rng.random_range(0..=MAX_VALUE);
        let mut total = start;
        let mut ops = Vec::with_capacity(n_ops);
        for _ in 0..n_ops {
            let op = random_op(rng, total, mix);
            total = op.apply(total);
            ops.push(op);
        }
        Self { start, ops }
    }

    /// The correct step claims, in order.
    pub fn correct_steps(&self) -> Vec<StepClaim> {
        let mut total = self.start;
        self.ops
            .iter()
            .map(|op| {
                let step = StepClaim::correct(total, *op);
                total = step.result;
                step
            })
            .collect()
    }

    pub fn answer(&self) -> u32 {
        self.ops
            .iter()
            .fold(self.start, |total, op| op.apply(total))
    }

    /// e.g. `Problem: start with 3 7 , add 5 8 , subtract 1 9 . What is the result ?\n\n`
    pub fn prompt(&self) -> String {
        let mut text = format!("Problem: start with {}", digits(self.start));
        for op in &self.ops {
            let (verb, _) = op.verb_and_sign();
            text.push_str(&format!(" , {verb} {}", digits(op.operand)));
        }
        text.push_str(" . What is the result ?");
        text.push_str(STEP_SEPARATOR);
        text
    }

    pub fn to_problem(&self) -> Problem {
        let mut solution_steps: Vec<String> =
            self.correct_steps().iter().map(StepClaim::render).collect();
        solution_steps.push(answer_line(self.answer()));
        Problem {
            prompt: self.prompt(),
            solution_steps,
            answer: self.answer().to_string(),
        }
    }
}

pub fn answer_line(value: u32) -> String {
    format!("{ANSWER_PREFIX} {}", digits(value))
}

/// An operation whose result stays within 0..=99; about half of the
/// additions and subtractions carry or borrow, since the ones digits are
/// uniform.
fn random_op(rng: &mut impl Rng, total: u32, mix: &TaskMix) -> Op {
    // No draw at all when the mix has no `max`, so the add/subtract task's
    // problems stay those of its seed.
    if mix.max_share > 0.0 && rng.random_bool(mix.max_share) {
        return Op {
            kind: OpKind::Max,
            operand: max_operand(rng, total, mix.tied_share),
        };
    }
    if total == 0 || (total < MAX_VALUE && !rng.random_bool(0.5)) {
        Op {
            kind: OpKind::Add,
            operand: rng.random_range(1..=MAX_VALUE - total),
        }
    } else {
        Op {
            kind: OpKind::Subtract,
            operand: rng.random_range(1..=total),
        }
    }
}

/// A `max` operand: with probability `tied_share` in the total's decade,
/// otherwise in another one, and never 0 (operands are at least 1).
fn max_operand(rng: &mut impl Rng, total: u32, tied_share: f64) -> u32 {
    let tens = total / 10;
    if rng.random_bool(tied_share) {
        let low = (tens * 10).max(1);
        return rng.random_range(low..=tens * 10 + 9);
    }
    loop {
        let operand = rng.random_range(1..=MAX_VALUE);
        if operand / 10 != tens {
            return operand;
        }
    }
}

/// `n` problems of the bundled task mix, the same for the same seed.
pub fn generate_problems(seed: u64, n: usize) -> Vec<Problem> {
    generate_problems_with(&TaskMix::BUNDLED, seed, n)
}

/// `n` problems of `mix`, the same for the same seed.
pub fn generate_problems_with(mix: &TaskMix, seed: u64, n: usize) -> Vec<Problem> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| Chain::random(&mut rng, mix).to_problem())
        .collect()
}

/// Whether `output_text` (a model's completion, or prompt plus completion)
/// ends its reasoning with the right answer. The last `Answer:` line counts;
/// its digits are read with spaces ignored, so `0 7` and `7` both mean 7.
pub fn check_answer(problem: &Problem, output_text: &str) -> bool {
    let Some(at) = output_text.rfind(ANSWER_PREFIX) else {
        return false;
    };
    let line = output_text[at + ANSWER_PREFIX.len()..]
        .lines()
        .next()
        .unwrap_or("");
    let compact: String = line.chars().filter(|c| !c.is_whitespace()).collect();
    if compact.is_empty() || !compact.chars().all(|c| c.is_ascii_digit()) {
        return false;
    }
    match (compact.parse::<u64>(), problem.answer.parse::<u64>()) {
        (Ok(got), Ok(want)) => got == want,
        _ => false,
    }
}
