//! Reasoning formats (vLLM's reasoning parsers): where a model's thinking
//! block starts and ends, and the streaming split of a choice's text into
//! its thoughts (`reasoning`) and its answer (`content`).
//!
//! Steps are routed inside the thinking block; its end marker plays the
//! part of the answer marker (the engine's `routing.answer_marker`).

use serde::{Deserialize, Serialize};

/// A model family's thinking markers, by vLLM's `--reasoning-parser` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReasoningParser {
    /// Qwen3: the model opens `<think>` itself (unless the template did) and
    /// closes it with `</think>`; with `enable_thinking: false` the template
    /// writes an empty block, so the output is all answer.
    Qwen3,
    /// DeepSeek-R1 and its distills: the template opens `<think>`, so the
    /// output is thinking from its first token until `</think>`.
    DeepseekR1,
}

impl ReasoningParser {
    pub fn start(self) -> &'static str {
        "<think>"
    }

    pub fn end(self) -> &'static str {
        "</think>"
    }

    /// Where a choice's output starts, given the rendered prompt: in the
    /// answer when the template closed the block (thinking off), in the
    /// thoughts when it opened it or the family always thinks, else
    /// undecided until the output does or does not open the block.
    pub fn opening(self, prompt_text: &str) -> Opening {
        let tail = prompt_text.trim_end();
        if tail.ends_with(self.end()) {
            Opening::Answer
        } else if tail.ends_with(self.start()) || self == ReasoningParser::DeepseekR1 {
            Opening::Thinking
        } else {
            Opening::Undecided
        }
    }
}

/// Where a choice's output starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opening {
    Thinking,
    Answer,
    /// Thinking iff the output opens with the start marker.
    Undecided,
}

/// A piece of a choice's text, split.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Split {
    pub reasoning: String,
    pub content: String,
}

/// Splits a choice's text, pushed piece by piece, into thoughts and answer,
/// dropping the markers. Holds back only what may still turn out to be a
/// marker, so the result does not depend on how the text was cut.
#[derive(Debug, Clone)]
pub struct ReasoningSplitter {
    parser: ReasoningParser,
    state: Opening,
    /// Text not yet given out: a possible start of the next marker.
    held: String,
    /// Nothing of the thoughts given out yet (a start marker there is dropped).
    at_thoughts_start: bool,
}

impl ReasoningSplitter {
    pub fn new(parser: ReasoningParser, opening: Opening) -> Self {
        Self {
            parser,
            state: opening,
            held: String::new(),
            at_thoughts_start: true,
        }
    }

    pub fn push(&mut self, text: &str) -> Split {
        self.held.push_str(text);
        let mut out = Split::default();
        loop {
            match self.state {
                Opening::Answer => {
                    out.content.push_str(&std::mem::take(&mut self.held));
                    return out;
                }
                Opening::Undecided => {
                    let trimmed = self.held.trim_start();
                    let start = self.parser.start();
                    if trimmed.starts_with(start) {
                        let from = self.held.len() - trimmed.len() + start.len();
                        self.held.drain(..from);
                        self.state = Opening::Thinking;
                        self.at_thoughts_start = false;
                    } else if start.starts_with(trimmed) {
                        return out; // whitespace or a part of the start marker so far
                    } else {
                        self.state = Opening::Answer;
                    }
                }
                Opening::Thinking => {
                    if self.at_thoughts_start {
                        let start = self.parser.start();
                        if self.held.starts_with(start) {
                            self.held.drain(..start.len());
                        } else if start.starts_with(self.held.as_str()) {
                            return out;
                        }
                        self.at_thoughts_start = false;
                    }
                    let end = self.parser.end();
                    if let Some(at) = self.held.find(end) {
                        out.reasoning.push_str(&self.held[..at]);
                        self.held.drain(..at + end.len());
                        self.state = Opening::Answer;
                        continue;
                    }
                    let keep = marker_prefix_len(&self.held, end);
                    let give = self.held.len() - keep;
                    out.reasoning.push_str(&self.held[..give]);
                    self.held.drain(..give);
                    return out;
                }
            }
        }
    }

    /// The last piece of a choice's text: it and what was held back, final.
    pub fn push_last(&mut self, text: &str) -> Split {
        let mut split = self.push(text);
        let rest = self.finish();
        split.reasoning.push_str(&rest.reasoning);
        split.content.push_str(&rest.content);
        split
    }

    /// The text still held back, once the choice has ended: it is final.
    fn finish(&mut self) -> Split {
        let held = std::mem::take(&mut self.held);
        match self.state {
            Opening::Thinking => Split {
                reasoning: held,
                content: String::new(),
            },
            Opening::Answer | Opening::Undecided => Split {
                reasoning: String::new(),
                content: held,
            },
        }
    }
}

/// Length of the longest tail of `text` that is a proper prefix of `marker`.
fn marker_prefix_len(text: &str, marker: &str) -> usize {
    (1..marker.len().min(text.len() + 1))
        .rev()
        .find(|&n| {
            text.is_char_boundary(text.len() - n) && marker.starts_with(&text[text.len() - n..])
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn split_all(parser: ReasoningParser, opening: Opening, pieces: &[&str]) -> Split {
        let mut s = ReasoningSplitter::new(parser, opening);
        let mut all = Split::default();
        for p in pieces {
            let part = s.push(p);
            all.reasoning += &part.reasoning;
            all.content += &part.content;
        }
        let last = s.push_last("");
        all.reasoning += &last.reasoning;
        all.content += &last.content;
        all
    }

    #[test]
    fn the_prompt_says_where_the_output_starts() {
        use ReasoningParser::*;
        let user = "<|im_start|>assistant\n";
        assert_eq!(Qwen3.opening(user), Opening::Undecided);
        assert_eq!(
            Qwen3.opening(&format!("{user}<think>\n\n</think>\n\n")),
            Opening::Answer
        );
        assert_eq!(
            Qwen3.opening(&format!("{user}<think>\n")),
            Opening::Thinking
        );
        assert_eq!(
            DeepseekR1.opening("<｜Assistant｜><think>\n"),
            Opening::Thinking
        );
        assert_eq!(DeepseekR1.opening("<｜Assistant｜>"), Opening::Thinking);
    }

    #[test]
    fn thoughts_and_answer_split_at_the_markers_whatever_the_cuts() {
        let text = "<think>\nStep one.\n\nStep two.\n</think>\n\nThe answer is 4.";
        let want = Split {
            reasoning: "\nStep one.\n\nStep two.\n".into(),
            content: "\n\nThe answer is 4.".into(),
        };
        let q = ReasoningParser::Qwen3;
        assert_eq!(split_all(q, Opening::Undecided, &[text]), want);
        let chars: Vec<String> = text.chars().map(String::from).collect();
        let pieces: Vec<&str> = chars.iter().map(String::as_str).collect();
        assert_eq!(split_all(q, Opening::Undecided, &pieces), want);
        assert_eq!(
            split_all(
                q,
                Opening::Undecided,
                &[
                    "<th",
                    "ink>\nStep one.\n\nStep two.\n</",
                    "think>\n\nThe answer is 4."
                ]
            ),
            want
        );
        // No block: all answer. Thinking opened by the prompt: no start marker.
        assert_eq!(
            split_all(q, Opening::Undecided, &["Hello", " there"]).content,
            "Hello there"
        );
        let r1 = split_all(
            ReasoningParser::DeepseekR1,
            Opening::Thinking,
            &["a\n\nb</think>c"],
        );
        assert_eq!(
            (r1.reasoning.as_str(), r1.content.as_str()),
            ("a\n\nb", "c")
        );
        // Cut off inside the thoughts: all of it is reasoning.
        let cut = split_all(q, Opening::Undecided, &["<think>still thinking </thi"]);
        assert_eq!(
            (cut.reasoning.as_str(), cut.content.as_str()),
            ("still thinking </thi", "")
        );
    }

    proptest! {
        #[test]
        fn any_cut_gives_the_same_split(cuts in prop::collection::vec(0usize..60, 0..8)) {
            let text = "<think>\nA <b> c </think\n d</think>\n\nans</think>wer";
            let mut bounds: Vec<usize> = cuts.into_iter().map(|c| c.min(text.len())).collect();
            bounds.sort_unstable();
            let mut pieces = Vec::new();
            let mut from = 0;
            for b in bounds {
                pieces.push(&text[from..b]);
                from = b;
            }
            pieces.push(&text[from..]);
            let whole = split_all(ReasoningParser::Qwen3, Opening::Undecided, &[text]);
            prop_assert_eq!(split_all(ReasoningParser::Qwen3, Opening::Undecided, &pieces), whole.clone());
            prop_assert_eq!(whole.reasoning, "\nA <b> c </think\n d");
            prop_assert_eq!(whole.content, "\n\nans</think>wer");
        }
    }
}
