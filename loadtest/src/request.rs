//! Request bodies: the OpenAI streaming payload vLLM's benchmark sends,
//! plus the user's `--extra-body` merged on top.

use serde_json::{json, Map, Value};

use crate::config::{Endpoint, DEFAULT_MAX_TOKENS};
use crate::error::LoadError;
use crate::prompts::{Prompt, PromptInput};

/// Builds the body of the i-th request (prompts are cycled in order).
#[derive(Debug, Clone)]
pub struct RequestFactory {
    endpoint: Endpoint,
    model: String,
    max_tokens: Option<u32>,
    ignore_eos: bool,
    extra_body: Option<Map<String, Value>>,
    prompts: Vec<Prompt>,
}

impl RequestFactory {
    pub fn new(
        endpoint: Endpoint,
        model: String,
        max_tokens: Option<u32>,
        ignore_eos: bool,
        extra_body: Option<Map<String, Value>>,
        prompts: Vec<Prompt>,
    ) -> Result<Self, LoadError> {
        if prompts.is_empty() {
            return Err(LoadError::Config("no prompts to send".into()));
        }
        if endpoint == Endpoint::Completions
            && prompts
                .iter()
                .any(|p| matches!(p.input, PromptInput::Messages(_)))
        {
            return Err(LoadError::Config(
                "the prompts hold chat messages: use --endpoint chat".into(),
            ));
        }
        if endpoint == Endpoint::Chat
            && prompts
                .iter()
                .any(|p| matches!(p.input, PromptInput::TokenIds(_)))
        {
            return Err(LoadError::Config(
                "the prompts are token ids, which only the completions endpoint takes: use --endpoint completions".into(),
            ));
        }
        Ok(RequestFactory {
            endpoint,
            model,
            max_tokens,
            ignore_eos,
            extra_body,
            prompts,
        })
    }

    pub fn body(&self, index: u64) -> Value {
        let prompt = &self.prompts[(index % self.prompts.len() as u64) as usize];
        let max_tokens = self
            .max_tokens
            .or(prompt.max_tokens)
            .unwrap_or(DEFAULT_MAX_TOKENS);
        // Greedy by default so runs are repeatable; --extra-body can override.
        let mut body = json!({
            "model": self.model,
            "max_tokens": max_tokens,
            "temperature": 0.0,
            "stream": true,
            "stream_options": {"include_usage": true},
        });
        let input = match (&prompt.input, self.endpoint) {
            (PromptInput::Text(t), Endpoint::Completions) => ("prompt", json!(t)),
            (PromptInput::TokenIds(ids), _) => ("prompt", json!(ids)),
            (PromptInput::Text(t), Endpoint::Chat) => {
                ("messages", json!([{"role": "user", "content": t}]))
            }
            (PromptInput::Messages(m), _) => ("messages", Value::Array(m.clone())),
        };
        body[input.0] = input.1;
        if self.ignore_eos {
            body["ignore_eos"] = json!(true);
        }
        if let Some(extra) = &self.extra_body {
            merge(&mut body, &Value::Object(extra.clone()));
        }
        body
    }
}

/// Merges `extra` into `base`: objects key by key, recursively; anything
/// else replaces what was there.
pub fn merge(base: &mut Value, extra: &Value) {
    match (base, extra) {
        (Value::Object(b), Value::Object(e)) => {
            for (k, v) in e {
                match b.get_mut(k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (slot, v) => *slot = v.clone(),
    }
}

/// Parses `--extra-body`: it must be a JSON object.
pub fn parse_extra_body(text: &str) -> Result<Map<String, Value>, LoadError> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(LoadError::Config(
            "--extra-body must be a JSON object".into(),
        )),
        Err(e) => Err(LoadError::Config(format!("--extra-body is not JSON: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(t: &str, max: Option<u32>) -> Prompt {
        Prompt {
            input: PromptInput::Text(t.into()),
            max_tokens: max,
        }
    }

    #[test]
    fn completions_body_streams_with_usage() {
        let f = RequestFactory::new(
            Endpoint::Completions,
            "m".into(),
            None,
            true,
            None,
            vec![text("a", Some(7)), text("b", None)],
        )
        .unwrap();
        let b0 = f.body(0);
        assert_eq!(b0["prompt"], "a");
        assert_eq!(b0["max_tokens"], 7);
        assert_eq!(b0["stream"], true);
        assert_eq!(b0["stream_options"]["include_usage"], true);
        assert_eq!(b0["ignore_eos"], true);
        assert_eq!(b0["model"], "m");
        let b1 = f.body(1);
        assert_eq!(b1["prompt"], "b");
        assert_eq!(b1["max_tokens"], DEFAULT_MAX_TOKENS);
        assert_eq!(f.body(2)["prompt"], "a", "prompts cycle");
    }

    #[test]
    fn token_id_prompts_pass_through_to_completions_only() {
        let ids = Prompt {
            input: PromptInput::TokenIds(vec![1, 4093, 198]),
            max_tokens: None,
        };
        let f = RequestFactory::new(
            Endpoint::Completions,
            "m".into(),
            None,
            false,
            None,
            vec![ids.clone()],
        )
        .unwrap();
        assert_eq!(f.body(0)["prompt"], json!([1, 4093, 198]));
        let err =
            match RequestFactory::new(Endpoint::Chat, "m".into(), None, false, None, vec![ids]) {
                Ok(_) => panic!("chat refuses token ids"),
                Err(e) => e.to_string(),
            };
        assert!(err.contains("--endpoint completions"), "{err}");
    }

    #[test]
    fn forced_max_tokens_wins_and_chat_wraps_text() {
        let f = RequestFactory::new(
            Endpoint::Chat,
            "m".into(),
            Some(3),
            false,
            None,
            vec![text("hello", Some(9))],
        )
        .unwrap();
        let b = f.body(0);
        assert_eq!(b["max_tokens"], 3);
        assert_eq!(b["messages"][0]["content"], "hello");
        assert_eq!(b["messages"][0]["role"], "user");
        assert!(b.get("prompt").is_none());
        assert!(b.get("ignore_eos").is_none());
    }

    #[test]
    fn messages_need_the_chat_endpoint() {
        let p = Prompt {
            input: PromptInput::Messages(vec![json!({"role": "user", "content": "x"})]),
            max_tokens: None,
        };
        assert!(RequestFactory::new(
            Endpoint::Completions,
            "m".into(),
            None,
            false,
            None,
            vec![p.clone()]
        )
        .is_err());
        assert!(
            RequestFactory::new(Endpoint::Chat, "m".into(), None, false, None, vec![p]).is_ok()
        );
    }

    #[test]
    fn extra_body_merges_recursively_and_overrides() {
        let extra = parse_extra_body(
            r#"{"routing": {"policy": "glimp", "tau": 0.5}, "temperature": 0.7,
                "stream_options": {"continuous_usage_stats": true}}"#,
        )
        .unwrap();
        let f = RequestFactory::new(
            Endpoint::Completions,
            "m".into(),
            None,
            false,
            Some(extra),
            vec![text("a", None)],
        )
        .unwrap();
        let b = f.body(0);
        assert_eq!(b["routing"], json!({"policy": "glimp", "tau": 0.5}));
        assert_eq!(b["temperature"], 0.7);
        assert_eq!(
            b["stream_options"],
            json!({"include_usage": true, "continuous_usage_stats": true})
        );
        assert!(parse_extra_body("[1]").is_err());
        assert!(parse_extra_body("{").is_err());
    }
}
