//! The endpoints.

pub mod chat;
pub mod completions;
pub mod models;

use crate::error::ApiError;
use crate::state::AppState;

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
