//! Random `routing` objects and sampling settings through the real engine
//! (a random-weight pair): every request gets a 2xx or an OpenAI-shaped 4xx,
//! and the engine thread survives all of them. A panic there would not be
//! one failed request but every request of the server, so this is the
//! input path that most needs it.

use std::sync::OnceLock;

use common::{engine, BlockingServer};
use glimprouter_engine::EngineHandle;
use glimprouter_server::{router, ServerConfig};
use proptest::prelude::*;
use serde_json::{json, Map, Value};

mod common;

struct Fuzzed {
    server: BlockingServer,
    engine: EngineHandle,
}

/// One engine for every case, as a server would have.
fn fuzzed() -> &'static Fuzzed {
    static FUZZED: OnceLock<Fuzzed> = OnceLock::new();
    FUZZED.get_or_init(|| {
        let engine = engine();
        let server =
            BlockingServer::start(router(engine.clone(), &ServerConfig::default()).unwrap());
        Fuzzed { server, engine }
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
        let f = fuzzed();
        f.server.assert_answered("/v1/completions", &serde_json::to_vec(&body).unwrap());
        prop_assert!(f.engine.is_running(), "the engine thread died on {}", body);
    }
}
