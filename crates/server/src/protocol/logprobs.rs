//! The two logprobs shapes: the legacy completions one and chat's.

use glimprouter_engine::TokenLogprob;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::backend::TextCodec;

/// Completions: parallel arrays.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CompletionLogprobs {
    pub tokens: Vec<String>,
    pub token_logprobs: Vec<f32>,
    /// Per token: token text -> logprob of the top alternatives and the sampled token.
    pub top_logprobs: Vec<Map<String, Value>>,
    /// Character offset of each token in the choice's text.
    pub text_offset: Vec<usize>,
}

impl CompletionLogprobs {
    /// Appends `entries`; `offset` is the length (in chars) of the text before them.
    pub fn extend(&mut self, codec: &dyn TextCodec, entries: &[TokenLogprob], mut offset: usize) {
        for entry in entries {
            let text = codec.token_text(entry.token_id);
            let mut top = Map::new();
            for &(id, logprob) in &entry.top {
                top.entry(codec.token_text(id))
                    .or_insert_with(|| logprob_value(logprob));
            }
            top.entry(text.clone())
                .or_insert_with(|| logprob_value(entry.logprob));
            self.text_offset.push(offset);
            offset += text.chars().count();
            self.tokens.push(text);
            self.token_logprobs.push(entry.logprob);
            self.top_logprobs.push(top);
        }
    }
}

fn logprob_value(logprob: f32) -> Value {
    serde_json::Number::from_f64(f64::from(logprob))
        .map(Value::Number)
        .unwrap_or(Value::Null)
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TopLogprob {
    pub token: String,
    pub logprob: f32,
    pub bytes: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatTokenLogprob {
    pub token: String,
    pub logprob: f32,
    pub bytes: Vec<u8>,
    pub top_logprobs: Vec<TopLogprob>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ChatLogprobs {
    pub content: Vec<ChatTokenLogprob>,
}

impl ChatLogprobs {
    /// `top_n`: how many alternatives the client asked for (`top_logprobs`).
    pub fn extend(&mut self, codec: &dyn TextCodec, entries: &[TokenLogprob], top_n: usize) {
        for entry in entries {
            let token = codec.token_text(entry.token_id);
            let top_logprobs = entry
                .top
                .iter()
                .take(top_n)
                .map(|&(id, logprob)| {
                    let token = codec.token_text(id);
                    TopLogprob {
                        bytes: token.as_bytes().to_vec(),
                        token,
                        logprob,
                    }
                })
                .collect();
            self.content.push(ChatTokenLogprob {
                bytes: token.as_bytes().to_vec(),
                token,
                logprob: entry.logprob,
                top_logprobs,
            });
        }
    }
}
