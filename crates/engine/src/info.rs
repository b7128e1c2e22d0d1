//! Static facts about the served models, shared with the server.

use std::sync::Arc;

use glimprouter_models::tokenizer::ModelTokenizer;

use crate::api::{EngineError, GenerateRequest};
use crate::validate::{check_request, Limits};

pub struct EngineInfo {
    /// The name clients pass as `model`.
    pub served_model_name: String,
    pub slm_name: String,
    pub llm_name: String,
    /// Smallest context of the two models (prompt + max_tokens must fit).
    pub max_model_len: usize,
    /// Shared by both models (speculation and catch-up need one vocabulary).
    pub tokenizer: Arc<ModelTokenizer>,
    /// Routing the server applies when a request names none.
    pub default_routing: glimprouter_core::RoutingParams,
    /// Which models (by `Model::idx`) a remote engine serves.
    pub remote: [bool; 2],
    /// The models' reasoning format, if they think in a marked block.
    pub reasoning_parser: Option<glimprouter_core::reasoning::ReasoningParser>,
}

impl EngineInfo {
    /// Every rule of `crate::validate` against these models.
    pub fn validate(&self, request: &GenerateRequest) -> Result<(), EngineError> {
        check_request(request, &self.limits())
    }

    pub fn limits(&self) -> Limits {
        Limits {
            max_model_len: self.max_model_len,
            vocab_size: self.tokenizer.vocab_size(),
            remote: self.remote,
        }
    }
}

/// vLLM's `max_tokens` for a request that names none (chat, and
/// `glimp generate`): the rest of the context, at least one token, so an
/// overlong prompt still meets `validate::check_length`'s error.
pub fn rest_of_context(max_model_len: usize, prompt_tokens: usize) -> usize {
    max_model_len.saturating_sub(prompt_tokens).max(1)
}
