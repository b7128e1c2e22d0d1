//! Per-request layers: the request id and the tenant (authentication plus the
//! requests-per-minute limit).

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::limits::LimitExceeded;
use crate::state::AppState;

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const MAX_REQUEST_ID_LEN: usize = 128;

/// The request id without its `cmpl-` / `chatcmpl-` prefix (the client's
/// `X-Request-Id` when usable, else a fresh uuid), and when the request came in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId {
    pub id: String,
    pub arrival: Instant,
}

fn usable_request_id(value: &HeaderValue) -> Option<String> {
    let text = value.to_str().ok()?.trim();
    let ok = !text.is_empty()
        && text.len() <= MAX_REQUEST_ID_LEN
        && text.chars().all(|c| c.is_ascii_graphic());
    ok.then(|| text.to_string())
}

/// Sets the request id and echoes it in the response's `X-Request-Id`.
pub async fn request_id(mut request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(&X_REQUEST_ID)
        .and_then(usable_request_id)
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    request.extensions_mut().insert(RequestId {
        id: id.clone(),
        arrival: Instant::now(),
    });
    let mut response = next.run(request).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(X_REQUEST_ID.clone(), value);
    }
    response
}

/// Finds the tenant from the API key and counts the request against its
/// requests-per-minute limit.
pub async fn tenant(
    State(state): State<Arc<AppState>>,
    mut request: Request,
    next: Next,
) -> Response {
    let tenant = match state.auth.authenticate(request.headers()) {
        Ok(tenant) => tenant,
        Err(error) => return error.into_response(),
    };
    if let Err(exceeded) = state.limits.check_request(&tenant.0) {
        return refuse(&state, &tenant.0, exceeded).into_response();
    }
    request.extensions_mut().insert(tenant);
    next.run(request).await
}

/// A 429 for `exceeded`, counted in the metrics.
pub fn refuse(state: &AppState, tenant: &str, exceeded: LimitExceeded) -> ApiError {
    state
        .metrics
        .record_rate_limited(tenant, exceeded.kind.as_str());
    tracing::info!(
        tenant,
        limit = exceeded.kind.as_str(),
        "request refused by a rate limit"
    );
    ApiError::rate_limited(exceeded.message, exceeded.retry_after_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_must_be_short_visible_ascii() {
        assert_eq!(
            usable_request_id(&HeaderValue::from_static("abc-123")),
            Some("abc-123".into())
        );
        assert_eq!(usable_request_id(&HeaderValue::from_static("")), None);
        assert_eq!(usable_request_id(&HeaderValue::from_static("a b")), None);
        let long = "x".repeat(MAX_REQUEST_ID_LEN + 1);
        assert_eq!(
            usable_request_id(&HeaderValue::from_str(&long).unwrap()),
            None
        );
    }
}
