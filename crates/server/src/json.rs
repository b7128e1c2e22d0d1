//! A JSON body extractor whose rejections are OpenAI-shaped 400s (not axum's
//! 422) and 413 for bodies over the size limit.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                let status = rejection.status();
                if status == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::new(
                        status,
                        "The request body is larger than the server accepts.",
                    )
                } else {
                    ApiError::new(status, rejection.body_text())
                }
            })?;
        parse(&bytes).map(ApiJson)
    }
}

pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|error| {
        let what = if error.is_data() {
            "Invalid request"
        } else {
            "Malformed JSON body"
        };
        ApiError::bad_request(format!("{what}: {error}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::completions::CompletionRequest;

    #[test]
    fn syntax_and_type_errors_are_400_with_a_reason() {
        let error = parse::<CompletionRequest>(b"{\"prompt\": ").unwrap_err();
        assert_eq!(error.status, StatusCode::BAD_REQUEST);
        assert!(
            error.message.starts_with("Malformed JSON body"),
            "{}",
            error.message
        );
        let error =
            parse::<CompletionRequest>(br#"{"prompt": "x", "temperature": "hot"}"#).unwrap_err();
        assert_eq!(error.status, StatusCode::BAD_REQUEST);
        assert!(
            error.message.starts_with("Invalid request") && error.message.contains("invalid type"),
            "{}",
            error.message
        );
        let error = parse::<CompletionRequest>(br#"{"temperature": 1}"#).unwrap_err();
        assert!(
            error.message.contains("missing field `prompt`"),
            "{}",
            error.message
        );
    }

    #[test]
    fn unknown_fields_are_ignored_but_known_ones_parsed() {
        let request: CompletionRequest =
            parse(br#"{"prompt": "x", "presence_penalty": 0, "n": 2}"#).unwrap();
        assert_eq!(request.shared.n, Some(2));
    }
}
