//! Errors in OpenAI's JSON shape: `{"error": {"message", "type", "param", "code"}}`
//! with `code` the HTTP status.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use glimprouter_engine::EngineError;
use serde::Serialize;

#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub param: Option<String>,
    /// Seconds, sent as `Retry-After` (429, and 503 for an overloaded engine).
    pub retry_after: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize)]
pub struct ErrorDetail {
    pub message: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: u16,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            param: None,
            retry_after: None,
        }
    }

    /// 400 about one request field.
    pub fn invalid(param: &str, message: impl Into<String>) -> Self {
        Self {
            param: Some(param.to_string()),
            ..Self::new(StatusCode::BAD_REQUEST, message)
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn unknown_model(model: &str) -> Self {
        Self {
            param: Some("model".into()),
            ..Self::new(
                StatusCode::NOT_FOUND,
                format!("The model `{model}` does not exist."),
            )
        }
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message)
    }

    pub fn rate_limited(message: impl Into<String>, retry_after_secs: u64) -> Self {
        Self {
            retry_after: Some(retry_after_secs.max(1)),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, message)
        }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    /// The OpenAI `type` for this status.
    pub fn kind(&self) -> &'static str {
        match self.status {
            StatusCode::UNAUTHORIZED => "authentication_error",
            StatusCode::NOT_FOUND => "not_found_error",
            StatusCode::TOO_MANY_REQUESTS => "rate_limit_error",
            status if status.is_server_error() => "server_error",
            _ => "invalid_request_error",
        }
    }

    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                message: self.message.clone(),
                kind: self.kind(),
                param: self.param.clone(),
                code: self.status.as_u16(),
            },
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status.as_u16(), self.message)
    }
}

impl From<EngineError> for ApiError {
    fn from(error: EngineError) -> Self {
        let status = match &error {
            EngineError::InvalidRequest(_) | EngineError::ContextLength { .. } => {
                StatusCode::BAD_REQUEST
            }
            EngineError::Unavailable(_) | EngineError::Overloaded { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            EngineError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            EngineError::Upstream { .. } => StatusCode::BAD_GATEWAY,
        };
        let retry_after = matches!(error, EngineError::Overloaded { .. }).then_some(1);
        Self {
            retry_after,
            ..Self::new(status, error.to_string())
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body())).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// The answer to a request whose handler panicked (`CatchPanicLayer`): an
/// OpenAI-shaped 500, the panic logged. Without it the client's connection
/// would just be dropped.
pub fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let detail = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string panic payload".into());
    tracing::error!(panic = %detail, "a request handler panicked");
    ApiError::internal("Internal server error: the request's handler failed.").into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body_json(response: Response) -> serde_json::Value {
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn error_body_has_openai_shape() {
        let response = ApiError::invalid("top_p", "top_p must be in (0, 1], got 2").into_response();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let body = body_json(response).await;
        assert_eq!(
            body,
            serde_json::json!({"error": {
                "message": "top_p must be in (0, 1], got 2",
                "type": "invalid_request_error",
                "param": "top_p",
                "code": 400
            }})
        );
    }

    #[tokio::test]
    async fn rate_limit_sets_retry_after() {
        let response = ApiError::rate_limited("slow down", 7).into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "7");
        assert_eq!(body_json(response).await["error"]["code"], 429);
        // A zero wait still tells the client to wait a little.
        let response = ApiError::rate_limited("slow down", 0).into_response();
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
    }

    #[test]
    fn engine_errors_map_to_statuses() {
        let context = EngineError::ContextLength {
            max_model_len: 64,
            prompt_tokens: 60,
            max_tokens: 10,
            requested: 70,
        };
        let error = ApiError::from(context.clone());
        assert_eq!(error.status, StatusCode::BAD_REQUEST);
        assert_eq!(error.message, context.to_string());
        assert!(error
            .message
            .starts_with("This model's maximum context length is 64 tokens."));
        assert_eq!(
            ApiError::from(EngineError::InvalidRequest("x".into())).status,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            ApiError::from(EngineError::Unavailable("x".into())).status,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            ApiError::from(EngineError::Internal("x".into())).status,
            StatusCode::INTERNAL_SERVER_ERROR
        );
        let upstream = EngineError::Upstream {
            model: "llm",
            message: "timed out".into(),
        };
        assert_eq!(ApiError::from(upstream).status, StatusCode::BAD_GATEWAY);
    }

    #[test]
    fn unknown_model_uses_openai_wording() {
        let error = ApiError::unknown_model("gpt-9");
        assert_eq!(error.status, StatusCode::NOT_FOUND);
        assert_eq!(error.message, "The model `gpt-9` does not exist.");
        assert_eq!(error.kind(), "not_found_error");
    }
}
