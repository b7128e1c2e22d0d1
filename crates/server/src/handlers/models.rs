//! `GET /v1/models`, `GET /health` and the JSON 404 for unknown routes.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use axum::Json;
use serde::Serialize;

use crate::error::ApiError;
use crate::protocol::common::unix_now;
use crate::state::AppState;

#[derive(Debug, Serialize)]
pub struct ModelCard {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub owned_by: &'static str,
    pub root: String,
    pub max_model_len: usize,
}

#[derive(Debug, Serialize)]
pub struct ModelList {
    pub object: &'static str,
    pub data: Vec<ModelCard>,
}

pub async fn list_models(State(state): State<Arc<AppState>>) -> Json<ModelList> {
    let name = state.backend.model_name().to_string();
    Json(ModelList {
        object: "list",
        data: vec![ModelCard {
            root: name.clone(),
            id: name,
            object: "model",
            created: unix_now(),
            owned_by: "glimprouter",
            max_model_len: state.backend.max_model_len(),
        }],
    })
}

/// 200 while the engine runs; 503 once its thread has ended (shut down,
/// or killed by a panic), so a load balancer or a liveness probe takes the
/// server out instead of sending it requests that cannot be served.
pub async fn health(State(state): State<Arc<AppState>>) -> Result<StatusCode, ApiError> {
    if state.backend.is_running() {
        Ok(StatusCode::OK)
    } else {
        Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "The engine has stopped; this server cannot generate.",
        ))
    }
}

pub async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed on {}.", uri.path()),
    )
}

pub async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("No route for {method} {}.", uri.path()),
    )
}
