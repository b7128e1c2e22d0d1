//! Random `routing` objects and sampling settings through the real engine
//! (a random-weight pair): every request gets a 2xx or an OpenAI-shaped 4xx,
//! and the engine thread survives all of them. A panic there would not be
//! one failed request but every request of the server, so this is the
//! input path that most needs it.

use std::sync::OnceLock;
use std::time::Duration;

use glimprouter_engine::{Engine, EngineConfig, EngineHandle};
use glimprouter_models::task::write_random_pair;
use glimprouter_server::{router, serve_app, ServerConfig};
use proptest::prelude::*;
use serde_json::{json, Map, Value};
use tokio::net::TcpListener;
use tokio::runtime::Runtime;

struct Server {
    runtime: Runtime,
    base: String,
    client: reqwest::Client,
    engine: EngineHandle,
}

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("glimp-routing-fuzz-{}", std::process::id()));
        let (slm, llm) = write_random_pair(&dir, 256, [3, 4]).expect("random pair");
        let mut config = EngineConfig::for_models(&slm, &llm);
        config.slm.kv_cache_mb = 8;
        config.llm.kv_cache_mb = 8;
        let engine = Engine::start(&config, Default::default()).expect("engine starts");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let app = router(engine.clone(), &ServerConfig::default()).unwrap();
        let base = runtime.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let base = format!("http://{}", listener.local_addr().unwrap());
            tokio::spawn(serve_app(
                listener,
                app,
                Duration::ZERO,
                std::future::pending(),
            ));
            base
        });
        Server {
            runtime,
            base,
            client: reqwest::Client::new(),
            engine,
        }
    })
}

/// Mostly in range, so most requests reach the engine; now and then out of
/// range, negative or of the wrong type.
fn count() -> impl Strategy<Value = Value> {
    prop_oneof![
        8 => (0i64..9).prop_map(Value::from),
        1 => (-2i64..0).prop_map(Value::from),
        1 => Just(json!(1_000_000_000_000u64)),
        1 => Just(json!(2.5)),
    ]
}

fn fraction() -> impl Strategy<Value = Value> {
    prop_oneof![
        8 => (0f64..1.5).prop_map(Value::from),
        1 => (0i64..3).prop_map(Value::from),
        1 => Just(json!(-0.5)),
        1 => Just(json!(1e-30)),
        1 => Just(json!(1e9)),
    ]
}

fn text() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => Just(json!("\n\n")),
        2 => Just(json!("Answer:")),
        1 => Just(json!("")),
        1 => Just(json!(" ")),
        2 => "[a-z :\n]{1,6}".prop_map(Value::from),
    ]
}

/// A `routing` object: each key present or not, every policy name and a
/// wrong one, numbers from ordinary to absurd.
fn routing() -> impl Strategy<Value = Value> {
    let policy = prop::sample::select(vec![
        "glimp",
        "glimp",
        "glimp",
        "slm",
        "llm",
        "random",
        "step-entropy",
        "step-ppl",
        "specreason",
        "nope",
    ])
    .prop_map(Value::from);
    let model = prop::sample::select(vec!["slm", "slm", "llm", "llm", "gpt"]).prop_map(Value::from);
    (
        prop::option::of(policy),
        prop::option::of(fraction()),
        prop::option::of(fraction()),
        prop::option::of(count()),
        prop::option::of(text()),
        prop::option::of(text()),
        prop::option::of(model),
        prop::option::of(count()),
        prop::option::of(any::<bool>().prop_map(Value::from)),
    )
        .prop_map(
            |(policy, tau, random_p, k, delimiter, marker, answer_model, max_steps, eager)| {
                let keys = [
                    ("policy", policy),
                    ("tau", tau),
                    ("random_p", random_p),
                    ("speculative_k", k),
                    ("delimiter", delimiter),
                    ("answer_marker", marker),
                    ("answer_model", answer_model),
                    ("max_steps", max_steps),
                    ("eager_catch_up", eager),
                ];
                let object: Map<String, Value> = keys
                    .into_iter()
                    .filter_map(|(k, v)| Some((k.to_string(), v?)))
                    .collect();
                Value::Object(object)
            },
        )
}

fn request() -> impl Strategy<Value = Value> {
    (
        routing(),
        1usize..12,
        prop::sample::select(vec![0.0, 0.7, 1.5]),
        1usize..3,
        any::<bool>(),
    )
        .prop_map(|(routing, max_tokens, temperature, n, stream)| {
            json!({
                "prompt": "Problem: start with 1 7 , add 2 5 . What is the result ?\n\n",
                "max_tokens": max_tokens,
                "temperature": temperature,
                "n": n,
                "stream": stream,
                "routing": routing,
            })
        })
}

proptest! {
    // No shrinking: the engine is shared, so once one request has killed
    // it every later one fails too, and shrinking would report a harmless
    // body instead of the one that did it.
    #![proptest_config(ProptestConfig { cases: 200, max_shrink_iters: 0, ..ProptestConfig::default() })]

    #[test]
    fn routing_objects_never_break_a_request_or_the_engine(body in request()) {
        let s = server();
        let (status, reply) = s.runtime.block_on(async {
            let response = s
                .client
                .post(format!("{}/v1/completions", s.base))
                .json(&body)
                .timeout(Duration::from_secs(60))
                .send()
                .await
                .unwrap_or_else(|e| panic!("no response to {body}: {e}"));
            let status = response.status().as_u16();
            (status, response.text().await.unwrap_or_else(|e| panic!("{body}: {e}")))
        });
        prop_assert!((200..500).contains(&status), "{} -> {} {}", body, status, reply);
        if status >= 400 {
            let error: Value = serde_json::from_str(&reply).unwrap();
            prop_assert!(error["error"]["message"].is_string(), "{}", reply);
        }
        prop_assert!(s.engine.is_running(), "the engine thread died on {}", body);
    }
}
