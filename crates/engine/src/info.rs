//! Static facts about the served models, shared with the server.

use std::sync::Arc;

use glimprouter_models::tokenizer::ModelTokenizer;

use crate::api::{EngineError, GenerateRequest};
use crate::config::check_routing_with_remote;

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
}

impl EngineInfo {
    pub fn validate(&self, request: &GenerateRequest) -> Result<(), EngineError> {
        check_routing_with_remote(&request.routing, self.remote)
            .map_err(EngineError::InvalidRequest)?;
        if self.remote.contains(&true) && request.sampling.logprobs.is_some() {
            return Err(EngineError::InvalidRequest(
                "logprobs are not available while a model tier is remote".into(),
            ));
        }
        check_length(request, self.max_model_len)
    }
}

/// vLLM's `max_tokens` for a request that names none (chat, and
/// `glimp generate`): the rest of the context, at least one token, so an
/// overlong prompt still meets `check_length`'s error.
pub fn rest_of_context(max_model_len: usize, prompt_tokens: usize) -> usize {
    max_model_len.saturating_sub(prompt_tokens).max(1)
}

/// A non-empty prompt that leaves room for `max_tokens` in the context
/// (vLLM's wording on overflow). Any backend of the server applies it.
pub fn check_length(request: &GenerateRequest, max_model_len: usize) -> Result<(), EngineError> {
    let prompt_tokens = request.prompt_ids.len();
    let max_tokens = request.sampling.max_tokens;
    if prompt_tokens == 0 {
        return Err(EngineError::InvalidRequest(
            "the prompt must contain at least one token".into(),
        ));
    }
    if prompt_tokens + max_tokens > max_model_len {
        return Err(EngineError::ContextLength {
            max_model_len,
            prompt_tokens,
            max_tokens,
            requested: prompt_tokens + max_tokens,
        });
    }
    Ok(())
}
