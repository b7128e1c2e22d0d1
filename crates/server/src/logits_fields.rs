//! vLLM's logits-processor and penalty fields (`presence_penalty`,
//! `frequency_penalty`, `repetition_penalty`, `logit_bias`, `allowed_token_ids`,
//! `min_tokens`, `stop_token_ids`), read from the fields the endpoint's body
//! type does not name, into the request's sampling parameters. The engine
//! applies them (`glimprouter_core::logits_processors`); their ranges are the
//! engine's rules (`glimprouter_engine::validate`).

use glimprouter_core::{SamplingParams, TokenId};
use glimprouter_engine::validate;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::error::ApiError;

/// The field `name` as a `T`; absent or `null` is `None`.
fn field<T: DeserializeOwned>(
    fields: &Map<String, Value>,
    name: &str,
    shape: &str,
) -> Result<Option<T>, ApiError> {
    match fields.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => serde_json::from_value(value.clone())
            .map(Some)
            .map_err(|_| {
                ApiError::invalid(name, format!("`{name}` must be {shape}, got {value}."))
            }),
    }
}

const TOKEN_IDS: &str = "a list of token ids (integers from 0)";

/// Sets the fields present in `fields` on `sampling` and checks their ranges
/// and token ids (against a vocabulary of `vocab_size`), naming the field.
pub fn apply(
    fields: &Map<String, Value>,
    sampling: &mut SamplingParams,
    vocab_size: usize,
) -> Result<(), ApiError> {
    if let Some(p) = field::<f32>(fields, "presence_penalty", "a number")? {
        sampling.presence_penalty = p;
    }
    if let Some(p) = field::<f32>(fields, "frequency_penalty", "a number")? {
        sampling.frequency_penalty = p;
    }
    if let Some(p) = field::<f32>(fields, "repetition_penalty", "a number")? {
        sampling.repetition_penalty = p;
    }
    if let Some(n) = field::<usize>(fields, "min_tokens", "an integer from 0")? {
        sampling.min_tokens = n;
    }
    if let Some(ids) = field::<Vec<TokenId>>(fields, "stop_token_ids", TOKEN_IDS)? {
        sampling.stop_token_ids = ids;
    }
    if let Some(ids) = field::<Vec<TokenId>>(fields, "allowed_token_ids", TOKEN_IDS)? {
        sampling.allowed_token_ids = ids;
    }
    if let Some(bias) = field::<Map<String, Value>>(fields, "logit_bias", "an object")? {
        sampling.logit_bias = logit_bias(&bias)?;
    }
    validate::check_sampling(sampling)
        .and_then(|()| validate::check_token_ids(sampling, vocab_size))
        .map_err(|e| ApiError::invalid(e.param, e.message))
}

/// OpenAI's shape: token ids as strings, each mapped to a number.
fn logit_bias(bias: &Map<String, Value>) -> Result<Vec<(TokenId, f32)>, ApiError> {
    let mut out = Vec::with_capacity(bias.len());
    for (key, value) in bias {
        let token = key.parse::<TokenId>().map_err(|_| {
            ApiError::invalid(
                "logit_bias",
                format!("`logit_bias` keys must be token ids, got {key:?}."),
            )
        })?;
        let value = value.as_f64().ok_or_else(|| {
            ApiError::invalid(
                "logit_bias",
                format!("`logit_bias` values must be numbers, got {value} for token {key}."),
            )
        })?;
        out.push((token, value as f32));
    }
    out.sort_by_key(|&(t, _)| t);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn applied(v: Value) -> Result<SamplingParams, ApiError> {
        let mut s = SamplingParams::default();
        apply(v.as_object().expect("an object"), &mut s, 100).map(|()| s)
    }

    #[test]
    fn fields_are_read_into_the_sampling_params() {
        let s = applied(json!({
            "presence_penalty": 0.5, "frequency_penalty": -1, "repetition_penalty": 1.2,
            "min_tokens": 3, "stop_token_ids": [7, 2], "allowed_token_ids": null,
            "logit_bias": {"12": -100, "3": 5.5},
        }))
        .unwrap();
        assert_eq!(
            (
                s.presence_penalty,
                s.frequency_penalty,
                s.repetition_penalty,
                s.min_tokens
            ),
            (0.5, -1.0, 1.2, 3)
        );
        assert_eq!(s.stop_token_ids, vec![7, 2]);
        assert!(s.allowed_token_ids.is_empty());
        assert_eq!(s.logit_bias, vec![(3, 5.5), (12, -100.0)]);
        assert_eq!(applied(json!({})).unwrap(), SamplingParams::default());
    }

    #[test]
    fn bad_shapes_and_ranges_name_the_field() {
        for (body, param) in [
            (json!({"presence_penalty": "a lot"}), "presence_penalty"),
            (json!({"presence_penalty": 2.5}), "presence_penalty"),
            (json!({"frequency_penalty": -3}), "frequency_penalty"),
            (json!({"repetition_penalty": 0}), "repetition_penalty"),
            (json!({"min_tokens": -1}), "min_tokens"),
            (json!({"stop_token_ids": [1, -2]}), "stop_token_ids"),
            (json!({"allowed_token_ids": "1"}), "allowed_token_ids"),
            (json!({"logit_bias": {"x": 1}}), "logit_bias"),
            (json!({"logit_bias": {"1": "up"}}), "logit_bias"),
            (json!({"logit_bias": {"1": 101}}), "logit_bias"),
            (json!({"logit_bias": {"100": 1}}), "logit_bias"),
            (json!({"stop_token_ids": [100]}), "stop_token_ids"),
            (json!({"allowed_token_ids": [5, 100]}), "allowed_token_ids"),
        ] {
            let err = applied(body.clone()).unwrap_err();
            assert_eq!(err.param.as_deref(), Some(param), "{body}: {}", err.message);
        }
    }
}
