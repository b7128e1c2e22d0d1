//! The server never answers a request with a 5xx or a dropped connection:
//! random bodies, mixing every parameter the two generation endpoints read
//! with values of every JSON type and odd sizes, and random bytes, get a 2xx
//! or a 4xx with an OpenAI-shaped error body. Runs over the scripted engine
//! (`glimprouter_server::testing`), so what is tested is the HTTP layer's
//! parsing and validation, where untrusted input first lands.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use common::BlockingServer;
use glimprouter_server::testing::ScriptedBackend;
use glimprouter_server::{router_with_backend, ServerConfig};
use proptest::prelude::*;
use serde_json::{json, Map, Value};

mod common;

/// Every key the completion and chat endpoints read, and a few they do not.
const KEYS: [&str; 30] = [
    "model",
    "prompt",
    "messages",
    "max_tokens",
    "max_completion_tokens",
    "min_tokens",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "n",
    "stream",
    "stream_options",
    "stop",
    "stop_token_ids",
    "logprobs",
    "top_logprobs",
    "echo",
    "seed",
    "ignore_eos",
    "presence_penalty",
    "frequency_penalty",
    "repetition_penalty",
    "best_of",
    "logit_bias",
    "routing",
    "add_generation_prompt",
    "skip_special_tokens",
    "user",
    "suffix",
];

/// One server for every case: starting one per case would dominate the run.
fn server() -> &'static BlockingServer {
    static SERVER: OnceLock<BlockingServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        let backend = Arc::new(ScriptedBackend::new("hello world", Duration::ZERO));
        BlockingServer::start(router_with_backend(backend, &ServerConfig::default()).unwrap())
    })
}

/// Mostly scalars, as parameters take, of every type and extreme sizes, so
/// that most bodies get past deserialisation to the range checks.
fn odd_scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        1 => Just(Value::Null),
        1 => any::<bool>().prop_map(Value::from),
        1 => any::<i64>().prop_map(Value::from),
        4 => (-2i64..20).prop_map(Value::from),
        1 => (-3i64..300).prop_map(Value::from),
        1 => any::<u64>().prop_map(Value::from),
        4 => (-1f64..2.0).prop_map(Value::from),
        1 => Just(json!(1e300)),
        1 => Just(json!(-0.0)),
        2 => "\\PC{0,12}".prop_map(Value::from),
        1 => Just(Value::from("x".repeat(3000))),
        1 => Just(json!({"include_usage": true})),
        1 => Just(json!({"policy": "glimp", "tau": 0.4, "speculative_k": 3})),
        1 => Just(json!({"policy": "random", "random_p": 2.0, "max_steps": 0})),
        1 => Just(json!([{"role": "user", "content": "hi"}])),
    ]
}

fn odd_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        6 => odd_scalar(),
        1 => prop::collection::vec(odd_scalar(), 0..4).prop_map(Value::from),
        1 => prop::collection::vec(-3i64..100_000, 0..4).prop_map(Value::from),
        1 => prop::collection::btree_map("[a-z_]{1,8}", odd_scalar(), 0..3)
            .prop_map(|m| Value::Object(m.into_iter().collect())),
    ]
}

/// A body with a usually valid prompt or message list and up to six
/// other parameters, each of an odd value.
fn body(chat: bool) -> impl Strategy<Value = Value> {
    let main = if chat {
        prop_oneof![
            3 => Just(json!([{"role": "user", "content": "Problem: 1"}])),
            1 => odd_value(),
            1 => prop::collection::vec(
                (odd_value(), odd_value()).prop_map(|(role, content)| json!({"role": role, "content": content})),
                0..3,
            )
            .prop_map(Value::from),
        ]
        .boxed()
    } else {
        prop_oneof![3 => Just(json!("Problem: 1")), 1 => odd_value()].boxed()
    };
    let others = prop::collection::vec((prop::sample::select(&KEYS[..]), odd_value()), 0..7);
    (main, others).prop_map(move |(main, others)| {
        let mut body = Map::new();
        body.insert((if chat { "messages" } else { "prompt" }).into(), main);
        for (key, value) in others {
            body.insert(key.to_string(), value);
        }
        Value::Object(body)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn completion_bodies_get_a_2xx_or_an_openai_4xx(body in body(false)) {
        server().assert_answered("/v1/completions", &serde_json::to_vec(&body).unwrap());
    }

    #[test]
    fn chat_bodies_get_a_2xx_or_an_openai_4xx(body in body(true)) {
        server().assert_answered("/v1/chat/completions", &serde_json::to_vec(&body).unwrap());
    }

    #[test]
    fn random_bytes_get_an_openai_4xx(bytes in prop::collection::vec(any::<u8>(), 0..64), chat in any::<bool>()) {
        let path = if chat { "/v1/chat/completions" } else { "/v1/completions" };
        server().assert_answered(path, &bytes);
    }
}
