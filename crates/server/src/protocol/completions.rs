//! `POST /v1/completions` bodies.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::common::{RoutingSummary, SharedFields, UsageOut};
use super::logprobs::CompletionLogprobs;

/// Fields nobody knows are ignored (as vLLM does), so newer clients keep working.
#[derive(Debug, Clone, Deserialize)]
pub struct CompletionRequest {
    /// A string, a list of strings, a list of token ids or a list of such lists;
    /// checked by `params::prompts`.
    pub prompt: Value,
    pub max_tokens: Option<i64>,
    pub logprobs: Option<i64>,
    pub echo: Option<bool>,
    /// vLLM's extension: each choice also carries its generated token ids.
    pub return_token_ids: Option<bool>,
    /// The fields both generation endpoints share (before `other`, which
    /// takes what no field above claimed).
    #[serde(flatten)]
    pub shared: SharedFields,
    /// Every other field: the ones vLLM would honour are refused unless they are no-ops
    /// (`unsupported_fields`), the rest ignored.
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CompletionChoice {
    pub index: usize,
    pub text: String,
    pub logprobs: Option<CompletionLogprobs>,
    pub finish_reason: Option<&'static str>,
    /// The stop string or stop token id that ended the choice (vLLM's extension).
    pub stop_reason: Option<glimprouter_engine::StopReason>,
    /// Every generated token id, stop string and EOS included (vLLM's
    /// `return_token_ids`); a remote tier reads them instead of re-encoding.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_ids: Option<Vec<u32>>,
}

/// The whole response, and also each streamed chunk (same `object`, as OpenAI does).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CompletionResponse {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub choices: Vec<CompletionChoice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<UsageOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routing: Option<RoutingSummary>,
}

pub const COMPLETION_OBJECT: &str = "text_completion";
