//! What the engine offers its callers (the server, the CLI, tests).
//!
//! A caller builds a [`GenerateRequest`], submits it through the
//! [`crate::EngineHandle`], and reads [`StreamEvent`]s from the returned
//! receiver until a `Finished` or `Error` event. Dropping the receiver (or
//! calling `abort`) cancels the request and frees its KV blocks.

use std::time::Instant;

use glimprouter_core::{Model, RoutingParams, SamplingParams, TokenId};
use serde::Serialize;

#[derive(Debug, Clone)]
pub struct GenerateRequest {
    /// Unique per request (the server makes it from X-Request-Id or a uuid).
    pub request_id: String,
    /// Tenant name; salts the prefix cache and drives fair admission.
    pub tenant: String,
    pub prompt_ids: Vec<TokenId>,
    pub sampling: SamplingParams,
    pub routing: RoutingParams,
    /// When the request reached the server (for queue-time and TTFT metrics).
    pub arrival: Instant,
}

/// One sampled token's log-probability and its most likely alternatives.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TokenLogprob {
    pub token_id: TokenId,
    pub logprob: f32,
    /// (token id, logprob), most likely first.
    pub top: Vec<(TokenId, f32)>,
}

/// New output of one request since the previous event.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenDelta {
    pub token_ids: Vec<TokenId>,
    /// Decoded text of these tokens (incremental detokenization; may be empty
    /// while a multi-byte character is incomplete).
    pub text: String,
    /// Which model wrote these tokens.
    pub writer: Model,
    /// Present when the request asked for logprobs; one entry per token.
    pub logprobs: Option<Vec<TokenLogprob>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// EOS or a stop string.
    Stop,
    /// max_tokens or the context limit.
    Length,
    Abort,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::Abort => "abort",
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
}

/// Per-request routing statistics, returned in the response's `routing` object.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RoutingStats {
    pub policy: String,
    pub steps: usize,
    pub llm_steps: usize,
    /// llm_steps / steps (0 when no step was taken).
    pub llm_step_ratio: f32,
    pub slm_tokens: usize,
    pub llm_tokens: usize,
    /// H_init of every glimpse, in order (nats).
    pub h_init: Vec<f32>,
    pub draft_tokens: usize,
    pub accepted_draft_tokens: usize,
}

/// What ended a choice that stopped for a reason other than EOS: vLLM's
/// `stop_reason`, a stop string or a token of `stop_token_ids`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum StopReason {
    String(String),
    TokenId(TokenId),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Finished {
    pub reason: FinishReason,
    /// The stop string or stop token that ended generation, if any.
    pub stop_reason: Option<StopReason>,
    pub usage: Usage,
    pub routing: RoutingStats,
}

#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    Token(TokenDelta),
    Finished(Finished),
    Error(EngineError),
}

/// Errors a request can meet. The server maps each to an HTTP status.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EngineError {
    /// The request itself is unacceptable (-> 400).
    #[error("{0}")]
    InvalidRequest(String),
    /// Prompt plus max_tokens exceed the context (-> 400, vLLM's wording).
    #[error("This model's maximum context length is {max_model_len} tokens. However, you requested {requested} tokens ({prompt_tokens} in the messages, {max_tokens} in the completion). Please reduce the length of the messages or completion.")]
    ContextLength {
        max_model_len: usize,
        prompt_tokens: usize,
        max_tokens: usize,
        requested: usize,
    },
    /// The engine already holds as many requests as it may (-> 503 with Retry-After).
    #[error(
        "The server is overloaded: {limit} requests are already waiting or running. Retry later."
    )]
    Overloaded { limit: usize },
    /// The engine is shutting down or its thread died (-> 503).
    #[error("the engine is not running: {0}")]
    Unavailable(String),
    /// A remote model tier failed past its retries (-> 502).
    #[error("the remote {model} tier failed: {message}")]
    Upstream {
        model: &'static str,
        message: String,
    },
    /// A model forward failed (-> 500).
    #[error("internal engine error: {0}")]
    Internal(String),
}

/// The engine's callers see the message; the server, which names the parameter in its
/// 400s, checks with `crate::validate` itself before submitting.
impl From<crate::validate::Invalid> for EngineError {
    fn from(e: crate::validate::Invalid) -> Self {
        EngineError::InvalidRequest(e.message)
    }
}
