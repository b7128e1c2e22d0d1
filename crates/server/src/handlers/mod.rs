//! The endpoints.

pub mod chat;
pub mod completions;
pub mod models;

use std::future::Future;

use axum::response::Response;
use tracing::Instrument;

use crate::error::ApiError;
use crate::generation::RequestCtx;
use crate::state::AppState;

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
