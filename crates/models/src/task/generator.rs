//! Seeded generator of the synthetic step-by-step reasoning task.
//!
//! A problem is a chain of additions and subtractions on two-digit numbers
//! (digits are separate words, so the tokenizer stays tiny). Each solution
//! step opens with a *decision word* that fixes both which operation comes
//! next and whether it carries or borrows:
//!
//! | word       | meaning                        |
//! |------------|--------------------------------|
//! | `add`      | addition without carry         |
//! | `carry`    | addition with a carry          |
//! | `subtract` | subtraction without borrow     |
//! | `borrow`   | subtraction with a borrow      |
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
        }
    }

    /// Whether the ones digits force a carry (addition) or borrow (subtraction).
    pub fn carries(&self, total: u32) -> bool {
        match self.kind {
            OpKind::Add => total % 10 + self.operand % 10 >= 10,
            OpKind::Subtract => total % 10 < self.operand % 10,
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
        let result = match (op.kind, right.claims_carry) {
            (OpKind::Add, true) | (OpKind::Subtract, false) => right.result.checked_sub(10)?,
            (OpKind::Add, false) | (OpKind::Subtract, true) => right.result + 10,
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
        }
    }

    /// e.g. `carry 5 8 : 3 7 + 5 8 = 9 5`
    pub fn render(&self) -> String {
        let sign = match self.op.kind {
            OpKind::Add => "+",
            OpKind::Subtract => "-",
        };
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
    pub fn random(rng: &mut impl Rng) -> Self {
        let n_ops = rng.random_range(MIN_OPS..=MAX_OPS);
        let start = rng.random_range(0..=MAX_VALUE);
        let mut total = start;
        let mut ops = Vec::with_capacity(n_ops);
        for _ in 0..n_ops {
            let op = random_op(rng, total);
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
            let verb = match op.kind {
                OpKind::Add => "add",
                OpKind::Subtract => "subtract",
            };
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

/// An operation whose result stays within 0..=99; about half of them carry
/// or borrow, since the ones digits are uniform.
fn random_op(rng: &mut impl Rng, total: u32) -> Op {
    let kind = if total == 0 {
        OpKind::Add
    } else if total == MAX_VALUE || rng.random_bool(0.5) {
        OpKind::Subtract
    } else {
        OpKind::Add
    };
    let operand = match kind {
        OpKind::Add => rng.random_range(1..=MAX_VALUE - total),
        OpKind::Subtract => rng.random_range(1..=total),
    };
    Op { kind, operand }
}

/// `n` problems, the same for the same seed.
pub fn generate_problems(seed: u64, n: usize) -> Vec<Problem> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| Chain::random(&mut rng).to_problem())
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
