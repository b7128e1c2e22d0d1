//! Request fields vLLM honours on the OpenAI endpoints that this server does not: each is
//! refused with a 400 naming it unless it carries its no-op value, so a client relying on
//! one never gets different output with no word said. Fields nobody knows are still
//! ignored, as vLLM does, so newer clients keep working.

use serde_json::{Map, Value};

use crate::error::ApiError;

/// A field's values that change nothing (`null` always does).
#[derive(Clone, Copy)]
enum NoOp {
    Number(f64),
    /// An empty list, map or string.
    Empty,
    Bool(bool),
    /// Only `null` (or leaving the field out).
    Null,
    /// `{"type": "text"}`.
    TextFormat,
    /// `"none"`.
    NoTool,
}

impl NoOp {
    fn accepts(self, value: &Value) -> bool {
        value.is_null()
            || match self {
                NoOp::Number(n) => value.as_f64() == Some(n),
                NoOp::Empty => match value {
                    Value::Array(a) => a.is_empty(),
                    Value::Object(o) => o.is_empty(),
                    Value::String(s) => s.is_empty(),
                    _ => false,
                },
                NoOp::Bool(b) => value.as_bool() == Some(b),
                NoOp::Null => false,
                NoOp::TextFormat => value.get("type").and_then(Value::as_str) == Some("text"),
                NoOp::NoTool => value.as_str() == Some("none"),
            }
    }

    fn describe(self) -> String {
        match self {
            NoOp::Number(n) => n.to_string(),
            NoOp::Empty => "an empty value".into(),
            NoOp::Bool(b) => b.to_string(),
            NoOp::Null => "null".into(),
            NoOp::TextFormat => "{\"type\": \"text\"}".into(),
            NoOp::NoTool => "\"none\"".into(),
        }
    }
}

const FIELDS: &[(&str, NoOp)] = &[
    ("length_penalty", NoOp::Number(1.0)),
    ("bad_words", NoOp::Empty),
    ("logits_processors", NoOp::Empty),
    ("prompt_logprobs", NoOp::Null),
    ("truncate_prompt_tokens", NoOp::Null),
    ("use_beam_search", NoOp::Bool(false)),
    ("include_stop_str_in_output", NoOp::Bool(false)),
    ("skip_special_tokens", NoOp::Bool(true)),
    ("spaces_between_special_tokens", NoOp::Bool(true)),
    ("continue_final_message", NoOp::Bool(false)),
    ("guided_json", NoOp::Null),
    ("guided_regex", NoOp::Null),
    ("guided_choice", NoOp::Null),
    ("guided_grammar", NoOp::Null),
    ("structured_outputs", NoOp::Null),
    ("response_format", NoOp::TextFormat),
    ("suffix", NoOp::Empty),
    ("tools", NoOp::Empty),
    ("tool_choice", NoOp::NoTool),
    ("chat_template", NoOp::Null),
];

/// Refuses the first field of `fields` (a request's fields this server did not parse)
/// that vLLM would honour and that is not at its no-op value. `best_of` is checked
/// against `n`: equal, it changes nothing.
pub fn check(fields: &Map<String, Value>, n: usize) -> Result<(), ApiError> {
    if let Some(best_of) = fields.get("best_of") {
        if !NoOp::Number(n as f64).accepts(best_of) {
            return Err(ApiError::invalid(
                "best_of",
                format!(
                    "`best_of` is not supported by this server (only `best_of` equal to `n`, \
                     here {n}, or no `best_of`): it would return a different choice than asked."
                ),
            ));
        }
    }
    for &(name, no_op) in FIELDS {
        let Some(value) = fields.get(name) else {
            continue;
        };
        if !no_op.accepts(value) {
            return Err(ApiError::invalid(
                name,
                format!(
                    "`{name}` is not supported by this server; leave it out or send {} (got {value}).",
                    no_op.describe()
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn fields(v: Value) -> Map<String, Value> {
        v.as_object().expect("an object").clone()
    }

    #[test]
    fn no_op_values_and_unknown_fields_pass() {
        let ok = fields(json!({
            "bad_words": [], "best_of": 2,
            "skip_special_tokens": true, "response_format": {"type": "text"},
            "tool_choice": "none", "tools": null, "some_future_field": 7,
        }));
        assert!(check(&ok, 2).is_ok());
    }

    #[test]
    fn each_field_that_would_change_the_output_is_named() {
        let cases = [
            json!({"skip_special_tokens": false}),
            json!({"bad_words": ["no"]}),
            json!({"response_format": {"type": "json_object"}}),
            json!({"guided_choice": ["a", "b"]}),
            json!({"tools": [{"type": "function"}]}),
        ];
        for case in cases {
            let name = case.as_object().unwrap().keys().next().unwrap().clone();
            let err = check(&fields(case), 1).expect_err(&name);
            assert_eq!(err.param.as_deref(), Some(name.as_str()), "{name}");
            assert_eq!(err.status, axum::http::StatusCode::BAD_REQUEST);
            assert!(
                err.message.contains(&format!("`{name}`")),
                "{}",
                err.message
            );
        }
        let err = check(&fields(json!({"best_of": 3})), 1).unwrap_err();
        assert_eq!(err.param.as_deref(), Some("best_of"));
    }
}
