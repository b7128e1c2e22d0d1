//! The endpoints.

pub mod chat;
pub mod completions;
pub mod models;

use std::future::Future;

use axum::response::Response;
use tracing::Instrument;

use glimprouter_core::{RoutingParams, SamplingParams};
use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::generation::RequestCtx;
use crate::params::{check_sampling, routing_params, SamplingInput};
use crate::protocol::common::SharedFields;
use crate::state::AppState;
use crate::{logits_fields, unsupported_fields};

/// Runs a request's handler inside the request's tracing span (id and
/// tenant), and logs why the request was refused if it was.
pub async fn in_request_span<F, Fut>(ctx: RequestCtx, handle: F) -> Result<Response, ApiError>
where
    F: FnOnce(RequestCtx, tracing::Span) -> Fut,
    Fut: Future<Output = Result<Response, ApiError>>,
{
    let span = tracing::info_span!("request", id = %ctx.id, tenant = %ctx.tenant.0);
    let result = handle(ctx, span.clone()).instrument(span.clone()).await;
    if let Err(error) = &result {
        span.in_scope(|| tracing::info!(status = error.status.as_u16(), error = %error.message, "request refused"));
    }
    result
}

/// 404 unless `model` is absent or the served model's name.
pub fn check_model(state: &AppState, model: Option<&str>) -> Result<(), ApiError> {
    match model {
        Some(name) if name != state.backend.model_name() => Err(ApiError::unknown_model(name)),
        _ => Ok(()),
    }
}

/// `stream_options` only makes sense with `stream: true` (as vLLM says).
pub fn check_stream_options(stream: bool, has_options: bool) -> Result<(), ApiError> {
    if has_options && !stream {
        return Err(ApiError::invalid(
            "stream_options",
            "Stream options can only be defined when `stream=True`.",
        ));
    }
    Ok(())
}

/// The fields both generation endpoints read the same way.
pub struct CommonFields<'a> {
    pub shared: &'a SharedFields,
    /// `max_tokens` and the field it came from (chat also has `max_completion_tokens`).
    pub max_tokens: (Option<i64>, &'static str),
    /// Alternatives per token to return and the field they came from;
    /// `Some(0)` = only the sampled token's logprob.
    pub logprobs: (Option<i64>, &'static str),
    /// The fields the endpoint's body type did not name.
    pub other: &'a Map<String, Value>,
}

/// What they become once checked.
pub struct Checked {
    pub stream: bool,
    /// `max_tokens` still to be set from `max_tokens` (or the endpoint's default).
    pub sampling: SamplingParams,
    pub max_tokens: Option<usize>,
    pub n: usize,
    pub routing: RoutingParams,
}

/// Checks the common fields in one order for both endpoints: the model, the stream
/// options, the sampling values, the fields refused unless no-ops, the routing.
pub fn check_common(state: &AppState, fields: CommonFields) -> Result<Checked, ApiError> {
    let shared = fields.shared;
    check_model(state, shared.model.as_deref())?;
    let stream = shared.stream.unwrap_or(false);
    check_stream_options(stream, shared.stream_options.is_some())?;
    let mut checked = check_sampling(SamplingInput {
        temperature: shared.temperature,
        top_p: shared.top_p,
        top_k: shared.top_k,
        min_p: shared.min_p,
        seed: shared.seed,
        max_tokens: fields.max_tokens.0,
        max_tokens_param: fields.max_tokens.1,
        stop: shared.stop.clone(),
        n: shared.n,
        ignore_eos: shared.ignore_eos,
        logprobs: fields.logprobs.0,
        logprobs_param: fields.logprobs.1,
    })?;
    let vocab_size = state.backend.codec().vocab_size();
    logits_fields::apply(fields.other, &mut checked.sampling, vocab_size)?;
    unsupported_fields::check(fields.other, checked.n)?;
    Ok(Checked {
        stream,
        sampling: checked.sampling,
        max_tokens: checked.max_tokens,
        n: checked.n,
        routing: routing_params(
            shared.routing.clone(),
            shared.thinking_token_budget,
            &state.default_routing,
        )?,
    })
}
