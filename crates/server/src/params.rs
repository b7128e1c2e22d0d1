//! Request fields parsed into the engine's parameters. The shapes and integer
//! conversions are checked here; the value ranges are the engine's
//! (`glimprouter_engine::validate`), applied here too so a bad value is a 400 naming its
//! field before anything else happens.

use glimprouter_core::{RoutingParams, SamplingParams};
use glimprouter_engine::validate::{self, Invalid};
use serde_json::Value;

use crate::backend::{ChatTurn, TextCodec};
use crate::error::ApiError;
use crate::protocol::chat::{ChatMessageIn, MessageContent};
use crate::protocol::RoutingOverrides;

pub const MAX_N: usize = 16;
/// Roles a chat template can be expected to know.
pub const CHAT_ROLES: [&str; 5] = ["system", "developer", "user", "assistant", "tool"];

/// The sampling fields common to completions and chat, as they arrived.
#[derive(Debug, Clone, Default)]
pub struct SamplingInput {
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<i64>,
    pub min_p: Option<f32>,
    pub seed: Option<i64>,
    pub max_tokens: Option<i64>,
    /// The field name `max_tokens` came from (chat also has `max_completion_tokens`).
    pub max_tokens_param: &'static str,
    pub stop: Option<Value>,
    pub n: Option<i64>,
    pub ignore_eos: Option<bool>,
    /// Alternatives per token to return; `Some(0)` = only the sampled token's logprob.
    pub logprobs: Option<i64>,
    pub logprobs_param: &'static str,
}

/// Checked sampling parameters. `sampling.max_tokens` is still to be set from
/// `max_tokens` (or the endpoint's default, which may depend on the prompt).
#[derive(Debug, Clone, PartialEq)]
pub struct Checked {
    pub sampling: SamplingParams,
    pub max_tokens: Option<usize>,
    pub n: usize,
}

fn in_range<T: PartialOrd + Copy + std::fmt::Display>(
    param: &str,
    value: Option<T>,
    ok: impl Fn(T) -> bool,
    range: &str,
) -> Result<Option<T>, ApiError> {
    match value {
        Some(v) if !ok(v) => Err(ApiError::invalid(
            param,
            format!("`{param}` must be {range}, got {v}."),
        )),
        other => Ok(other),
    }
}

pub fn check_sampling(input: SamplingInput) -> Result<Checked, ApiError> {
    let defaults = SamplingParams::default();
    // vLLM's -1 means "off", like 0.
    let top_k = in_range(
        "top_k",
        input.top_k,
        |k| k >= -1,
        "-1, 0 (off) or a positive number",
    )?;
    let max_tokens = in_range(
        input.max_tokens_param,
        input.max_tokens,
        |m| m >= 1,
        "at least 1",
    )?;
    let n = in_range(
        "n",
        input.n,
        |n| (1..=MAX_N as i64).contains(&n),
        "in [1, 16]",
    )?;
    let logprobs = in_range(
        input.logprobs_param,
        input.logprobs,
        |l| l >= 0,
        "at least 0",
    )?;
    let sampling = SamplingParams {
        temperature: input.temperature.unwrap_or(defaults.temperature),
        top_p: input.top_p.unwrap_or(defaults.top_p),
        top_k: top_k.map(|k| k.max(0) as usize).unwrap_or(defaults.top_k),
        min_p: input.min_p.unwrap_or(defaults.min_p),
        // Any 64-bit pattern is a fine seed; negative ones keep their bits.
        seed: input.seed.map(|s| s as u64),
        max_tokens: 0,
        stop: stop_strings(input.stop)?,
        ignore_eos: input.ignore_eos.unwrap_or(false),
        logprobs: logprobs.map(|l| l as usize),
        ..defaults
    };
    validate::check_sampling(&sampling).map_err(|e| {
        let param = if e.param == "logprobs" {
            input.logprobs_param
        } else {
            e.param
        };
        ApiError::invalid(param, e.message)
    })?;
    Ok(Checked {
        sampling,
        max_tokens: max_tokens.map(|m| m as usize),
        n: n.unwrap_or(1) as usize,
    })
}

fn stop_strings(stop: Option<Value>) -> Result<Vec<String>, ApiError> {
    let invalid = |msg: &str| ApiError::invalid("stop", msg);
    let strings = match stop {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::String(s)) => vec![s],
        Some(Value::Array(items)) => items
            .into_iter()
            .map(|v| match v {
                Value::String(s) => Ok(s),
                _ => Err(invalid("`stop` must be a string or a list of strings.")),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(invalid("`stop` must be a string or a list of strings.")),
    };
    Ok(strings)
}

/// The request's routing merged over the server's default, then checked (the tiers'
/// limits are checked when the engine takes the request).
pub fn routing_params(
    overrides: Option<RoutingOverrides>,
    thinking_token_budget: Option<i64>,
    default: &RoutingParams,
) -> Result<RoutingParams, ApiError> {
    let mut routing = overrides.unwrap_or_default().apply(default);
    if let Some(budget) = thinking_token_budget {
        let budget = usize::try_from(budget).map_err(|_| {
            ApiError::invalid(
                "thinking_token_budget",
                format!("`thinking_token_budget` must be at least 0, got {budget}."),
            )
        })?;
        routing.thinking_token_budget = Some(budget);
    }
    validate::check_routing_values(&routing).map_err(api_invalid)?;
    Ok(routing)
}

fn api_invalid(e: Invalid) -> ApiError {
    ApiError::invalid(e.param, e.message)
}

/// A completions `prompt` as token ids, one list per prompt, with the text of
/// each prompt (for `echo`).
pub fn prompts(prompt: &Value, codec: &dyn TextCodec) -> Result<Vec<(Vec<u32>, String)>, ApiError> {
    let shape = || {
        ApiError::invalid(
            "prompt",
            "`prompt` must be a string, a list of strings, a list of token ids or a list of lists of token ids.",
        )
    };
    let encode = |text: &str| -> Result<(Vec<u32>, String), ApiError> {
        if text.is_empty() {
            return Err(ApiError::invalid("prompt", "`prompt` must not be empty."));
        }
        let ids = codec
            .encode(text, true)
            .map_err(|e| ApiError::invalid("prompt", format!("cannot tokenize the prompt: {e}")))?;
        Ok((ids, text.to_string()))
    };
    let token_list = |items: &[Value]| -> Result<(Vec<u32>, String), ApiError> {
        if items.is_empty() {
            return Err(ApiError::invalid("prompt", "`prompt` must not be empty."));
        }
        let vocab = codec.vocab_size() as u64;
        let ids = items
            .iter()
            .map(|v| match v.as_u64() {
                Some(id) if id < vocab => Ok(id as u32),
                Some(id) => Err(ApiError::invalid(
                    "prompt",
                    format!("token id {id} is out of the vocabulary (size {vocab})."),
                )),
                None => Err(shape()),
            })
            .collect::<Result<Vec<u32>, _>>()?;
        let text = codec.decode(&ids).map_err(ApiError::internal)?;
        Ok((ids, text))
    };
    match prompt {
        Value::String(text) => Ok(vec![encode(text)?]),
        Value::Array(items) if items.is_empty() => {
            Err(ApiError::invalid("prompt", "`prompt` must not be empty."))
        }
        Value::Array(items) if items.iter().all(Value::is_string) => items
            .iter()
            .map(|v| encode(v.as_str().unwrap_or_default()))
            .collect(),
        Value::Array(items) if items.iter().all(Value::is_number) => Ok(vec![token_list(items)?]),
        Value::Array(items) if items.iter().all(Value::is_array) => items
            .iter()
            .map(|v| token_list(v.as_array().map(Vec::as_slice).unwrap_or_default()))
            .collect(),
        _ => Err(shape()),
    }
}

/// Chat messages flattened to (role, text) turns.
pub fn chat_turns(messages: &[ChatMessageIn]) -> Result<Vec<ChatTurn>, ApiError> {
    if messages.is_empty() {
        return Err(ApiError::invalid(
            "messages",
            "`messages` must contain at least one message.",
        ));
    }
    messages
        .iter()
        .enumerate()
        .map(|(i, message)| {
            let param = format!("messages[{i}]");
            if !CHAT_ROLES.contains(&message.role.as_str()) {
                return Err(ApiError::invalid(
                    &param,
                    format!("unknown role `{}`; expected one of {}.", message.role, CHAT_ROLES.join(", ")),
                ));
            }
            let content = match &message.content {
                None => String::new(),
                Some(MessageContent::Text(text)) => text.clone(),
                Some(MessageContent::Parts(parts)) => {
                    let mut text = String::new();
                    for part in parts {
                        match (part.kind.as_str(), &part.text) {
                            ("text", Some(t)) => text.push_str(t),
                            (kind, _) => {
                                return Err(ApiError::invalid(
                                    &param,
                                    format!("content parts of type `{kind}` are not supported; only `text` is."),
                                ))
                            }
                        }
                    }
                    text
                }
            };
            Ok(ChatTurn { role: message.role.clone(), content })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;
    use serde_json::json;

    use super::*;
    use crate::testing::ByteCodec;

    fn input() -> SamplingInput {
        SamplingInput {
            max_tokens_param: "max_tokens",
            logprobs_param: "logprobs",
            ..Default::default()
        }
    }

    fn refused(input: SamplingInput, param: &str) {
        let error = check_sampling(input).unwrap_err();
        assert_eq!(error.status, StatusCode::BAD_REQUEST);
        assert_eq!(error.param.as_deref(), Some(param), "{}", error.message);
    }

    #[test]
    fn defaults_follow_openai() {
        let checked = check_sampling(input()).unwrap();
        assert_eq!(checked.n, 1);
        assert_eq!(checked.max_tokens, None);
        assert_eq!(
            checked.sampling,
            SamplingParams {
                max_tokens: 0,
                ..SamplingParams::default()
            }
        );
    }

    #[test]
    fn given_values_are_carried() {
        let checked = check_sampling(SamplingInput {
            temperature: Some(0.0),
            top_p: Some(0.9),
            top_k: Some(-1),
            min_p: Some(0.05),
            seed: Some(-1),
            max_tokens: Some(5),
            stop: Some(json!(["\n", "END"])),
            n: Some(3),
            ignore_eos: Some(true),
            logprobs: Some(2),
            ..input()
        })
        .unwrap();
        assert_eq!(checked.n, 3);
        assert_eq!(checked.max_tokens, Some(5));
        let s = checked.sampling;
        assert_eq!(
            (s.temperature, s.top_p, s.top_k, s.min_p),
            (0.0, 0.9, 0, 0.05)
        );
        assert_eq!(s.seed, Some(u64::MAX));
        assert_eq!(s.stop, vec!["\n".to_string(), "END".to_string()]);
        assert!(s.ignore_eos);
        assert_eq!(s.logprobs, Some(2));
        let single = check_sampling(SamplingInput {
            stop: Some(json!("###")),
            top_k: Some(40),
            ..input()
        })
        .unwrap();
        assert_eq!(single.sampling.stop, vec!["###".to_string()]);
        assert_eq!(single.sampling.top_k, 40);
    }

    #[test]
    fn out_of_range_values_name_their_field() {
        refused(
            SamplingInput {
                temperature: Some(-0.1),
                ..input()
            },
            "temperature",
        );
        refused(
            SamplingInput {
                temperature: Some(f32::NAN),
                ..input()
            },
            "temperature",
        );
        refused(
            SamplingInput {
                top_p: Some(0.0),
                ..input()
            },
            "top_p",
        );
        refused(
            SamplingInput {
                top_p: Some(1.01),
                ..input()
            },
            "top_p",
        );
        refused(
            SamplingInput {
                top_k: Some(-2),
                ..input()
            },
            "top_k",
        );
        refused(
            SamplingInput {
                min_p: Some(1.5),
                ..input()
            },
            "min_p",
        );
        refused(
            SamplingInput {
                max_tokens: Some(0),
                ..input()
            },
            "max_tokens",
        );
        refused(
            SamplingInput {
                max_tokens: Some(0),
                max_tokens_param: "max_completion_tokens",
                ..input()
            },
            "max_completion_tokens",
        );
        refused(
            SamplingInput {
                n: Some(0),
                ..input()
            },
            "n",
        );
        refused(
            SamplingInput {
                n: Some(17),
                ..input()
            },
            "n",
        );
        refused(
            SamplingInput {
                logprobs: Some(21),
                ..input()
            },
            "logprobs",
        );
        refused(
            SamplingInput {
                logprobs: Some(-1),
                logprobs_param: "top_logprobs",
                ..input()
            },
            "top_logprobs",
        );
        refused(
            SamplingInput {
                stop: Some(json!(5)),
                ..input()
            },
            "stop",
        );
        refused(
            SamplingInput {
                stop: Some(json!(["a", 1])),
                ..input()
            },
            "stop",
        );
        refused(
            SamplingInput {
                stop: Some(json!([""])),
                ..input()
            },
            "stop",
        );
        refused(
            SamplingInput {
                stop: Some(json!(vec!["x"; 17])),
                ..input()
            },
            "stop",
        );
        // The edges themselves are fine.
        check_sampling(SamplingInput {
            top_p: Some(1.0),
            min_p: Some(1.0),
            n: Some(16),
            logprobs: Some(20),
            max_tokens: Some(1),
            ..input()
        })
        .unwrap();
    }

    #[test]
    fn routing_is_checked_after_merging() {
        let base = RoutingParams::default();
        assert_eq!(routing_params(None, None, &base).unwrap(), base);
        let merged = routing_params(
            Some(RoutingOverrides {
                tau: Some(f32::INFINITY),
                ..Default::default()
            }),
            None,
            &base,
        )
        .unwrap();
        assert_eq!(merged.tau, f32::INFINITY);
        for (bad, param) in [
            (
                RoutingOverrides {
                    tau: Some(f32::NAN),
                    ..Default::default()
                },
                "routing.tau",
            ),
            (
                RoutingOverrides {
                    random_p: Some(1.5),
                    ..Default::default()
                },
                "routing.random_p",
            ),
            (
                RoutingOverrides {
                    speculative_k: Some(1000),
                    ..Default::default()
                },
                "routing.speculative_k",
            ),
            (
                RoutingOverrides {
                    delimiter: Some(String::new()),
                    ..Default::default()
                },
                "routing.delimiter",
            ),
            (
                RoutingOverrides {
                    max_steps: Some(0),
                    ..Default::default()
                },
                "routing.max_steps",
            ),
        ] {
            assert_eq!(
                routing_params(Some(bad), None, &base)
                    .unwrap_err()
                    .param
                    .as_deref(),
                Some(param)
            );
        }
    }

    #[test]
    fn prompts_take_every_openai_shape() {
        let codec = ByteCodec;
        let bos = ByteCodec::BOS;
        let one = prompts(&json!("hi"), &codec).unwrap();
        assert_eq!(one, vec![(vec![bos, 104, 105], "hi".to_string())]);
        let two = prompts(&json!(["a", "b"]), &codec).unwrap();
        assert_eq!(two.len(), 2);
        assert_eq!(two[1].0, vec![bos, 98]);
        let ids = prompts(&json!([104, 105]), &codec).unwrap();
        assert_eq!(ids, vec![(vec![104, 105], "hi".to_string())]);
        let batch = prompts(&json!([[104], [105, 105]]), &codec).unwrap();
        assert_eq!(
            batch.iter().map(|p| p.0.len()).collect::<Vec<_>>(),
            vec![1, 2]
        );
    }

    #[test]
    fn bad_prompts_are_400() {
        let codec = ByteCodec;
        for bad in [
            json!(""),
            json!([]),
            json!([""]),
            json!([[]]),
            json!(7),
            json!(null),
            json!([1, "a"]),
            json!([-1]),
            json!([1.5]),
            json!([100000]),
            json!({"text": "x"}),
        ] {
            let error = prompts(&bad, &codec).unwrap_err();
            assert_eq!(error.status, StatusCode::BAD_REQUEST, "{bad}");
            assert_eq!(error.param.as_deref(), Some("prompt"));
        }
    }

    fn message(value: Value) -> ChatMessageIn {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn chat_messages_flatten_to_turns() {
        let turns = chat_turns(&[
            message(json!({"role": "system", "content": "be brief"})),
            message(json!({"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]})),
            message(json!({"role": "assistant", "content": null})),
        ])
        .unwrap();
        assert_eq!(
            turns[0],
            ChatTurn {
                role: "system".into(),
                content: "be brief".into()
            }
        );
        assert_eq!(turns[1].content, "ab");
        assert_eq!(turns[2].content, "");
    }

    #[test]
    fn bad_chat_messages_are_400() {
        assert_eq!(
            chat_turns(&[]).unwrap_err().param.as_deref(),
            Some("messages")
        );
        let error = chat_turns(&[message(json!({"role": "wizard", "content": "x"}))]).unwrap_err();
        assert_eq!(error.param.as_deref(), Some("messages[0]"));
        let error = chat_turns(&[
            message(json!({"role": "user", "content": "x"})),
            message(json!({"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]})),
        ])
        .unwrap_err();
        assert_eq!(error.param.as_deref(), Some("messages[1]"));
    }
}
