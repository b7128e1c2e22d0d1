//! The server never answers a request with a 5xx or a dropped connection:
//! random bodies, mixing every parameter the two generation endpoints read
//! with values of every JSON type and odd sizes, and random bytes, get a 2xx
//! or a 4xx with an OpenAI-shaped error body. Runs over the scripted engine
//! (`glimprouter_server::testing`), so what is tested is the HTTP layer's
//! parsing and validation, where untrusted input first lands.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use glimprouter_server::testing::ScriptedBackend;
use glimprouter_server::{router_with_backend, serve_app, ServerConfig};
use proptest::prelude::*;
use serde_json::{json, Map, Value};
use tokio::net::TcpListener;
use tokio::runtime::Runtime;

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

struct Server {
    runtime: Runtime,
    base: String,
    client: reqwest::Client,
}

/// One server for every case: starting one per case would dominate the run.
fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let base = runtime.block_on(async {
            let config = ServerConfig::default();
            let backend = Arc::new(ScriptedBackend::new("hello world", Duration::ZERO));
            let app = router_with_backend(backend, &config).unwrap();
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let base = format!("http://{}", listener.local_addr().unwrap());
            tokio::spawn(async move {
                let _ = serve_app(listener, app, Duration::ZERO, std::future::pending()).await;
            });
            base
        });
        Server {
            runtime,
            base,
            client: reqwest::Client::new(),
        }
    })
}

/// Posts `body` and returns the status and the whole body (a stream read to
/// its end).
fn post(path: &str, body: Vec<u8>) -> (u16, Vec<u8>) {
    let s = server();
    s.runtime.block_on(async {
        let response = s
            .client
            .post(format!("{}{path}", s.base))
            .header("content-type", "application/json")
            .body(body)
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .unwrap_or_else(|e| panic!("no response: {e}"));
        let status = response.status().as_u16();
        let bytes = response
            .bytes()
            .await
            .unwrap_or_else(|e| panic!("body cut off: {e}"));
        (status, bytes.to_vec())
    })
}

fn assert_answered(path: &str, body: &[u8]) {
    let (status, reply) = post(path, body.to_vec());
    let sent = String::from_utf8_lossy(body);
    let reply_text = String::from_utf8_lossy(&reply);
    assert!(
        (200..500).contains(&status),
        "{path} {sent} -> {status} {reply_text}"
    );
    if status >= 400 {
        let error: Value = serde_json::from_slice(&reply)
            .unwrap_or_else(|e| panic!("{path} {sent} -> {status}, not JSON ({e}): {reply_text}"));
        assert!(
            error["error"]["message"].is_string() && error["error"]["type"].is_string(),
            "{path} {sent} -> {status}: {reply_text}"
        );
    }
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
        assert_answered("/v1/completions", &serde_json::to_vec(&body).unwrap());
    }

    #[test]
    fn chat_bodies_get_a_2xx_or_an_openai_4xx(body in body(true)) {
        assert_answered("/v1/chat/completions", &serde_json::to_vec(&body).unwrap());
    }

    #[test]
    fn random_bytes_get_an_openai_4xx(bytes in prop::collection::vec(any::<u8>(), 0..64), chat in any::<bool>()) {
        let path = if chat { "/v1/chat/completions" } else { "/v1/completions" };
        assert_answered(path, &bytes);
    }
}
