//! A real pretrained GGUF file served over HTTP: SmolLM2-135M-Instruct Q4_1
//! (fetched by `.ci/run`; skipped locally when absent, a failure in CI) as
//! both SLM and LLM. llama.cpp's facts for this file hold through the API:
//! the prompt's 16 tokens, the greedy answer "The capital of France is
//! Paris." and `<|im_end|>` (id 2) ending the request; `/v1/models` reports
//! the file's context length.

use std::time::Duration;

use glimprouter_engine::{Engine, EngineConfig};
use glimprouter_models::test_files;
use glimprouter_server::{router, serve_app, ServerConfig};
use serde_json::{json, Value};
use tokio::net::TcpListener;

const PROMPT: &str =
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n";

async fn serve(path: &std::path::Path) -> String {
    let mut config = EngineConfig::for_models(path, path);
    config.served_model_name = "smollm2".into();
    config.slm.kv_cache_mb = 32;
    config.llm.kv_cache_mb = 32;
    let engine = Engine::start(&config, Default::default()).expect("engine starts");
    let app = router(engine, &ServerConfig::default()).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(serve_app(
        listener,
        app,
        Duration::from_secs(1),
        std::future::pending(),
    ));
    base
}

async fn post(base: &str, path: &str, body: Value) -> Value {
    let resp = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smollm2_answers_as_llama_cpp_does_through_both_endpoints() {
    let Some(path) = test_files::require(test_files::smollm2_q4_1()) else {
        return;
    };
    let base = serve(&path).await;

    let models: Value = reqwest::get(format!("{base}/v1/models"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["data"][0]["id"], "smollm2");
    assert_eq!(models["data"][0]["max_model_len"], 8192);

    for policy in ["llm", "glimp"] {
        let out = post(
            &base,
            "/v1/completions",
            json!({"model": "smollm2", "prompt": PROMPT, "max_tokens": 32,
                   "temperature": 0, "return_token_ids": true,
                   "routing": {"policy": policy, "speculative_k": 2}}),
        )
        .await;
        let choice = &out["choices"][0];
        assert_eq!(choice["text"], "The capital of France is Paris.", "{out}");
        assert_eq!(
            choice["token_ids"],
            json!([504, 3575, 282, 4649, 314, 7042, 30, 2]),
            "{out}"
        );
        assert_eq!(choice["finish_reason"], "stop", "{out}");
        assert_eq!(out["usage"]["prompt_tokens"], 16, "{out}");
        assert_eq!(out["usage"]["completion_tokens"], 8, "{out}");
    }

    // The chat template comes from the file: it adds SmolLM's system
    // message when the request has none, and the reply is the completion
    // of exactly that text.
    let chat = post(
        &base,
        "/v1/chat/completions",
        json!({"model": "smollm2", "temperature": 0, "max_tokens": 24,
               "messages": [{"role": "user", "content": "What is the capital of France?"}]}),
    )
    .await;
    let rendered = format!(
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n{PROMPT}"
    );
    let plain = post(
        &base,
        "/v1/completions",
        json!({"model": "smollm2", "prompt": rendered, "max_tokens": 24, "temperature": 0}),
    )
    .await;
    assert_eq!(
        chat["choices"][0]["message"]["content"], plain["choices"][0]["text"],
        "{chat} {plain}"
    );
    assert_eq!(chat["usage"], plain["usage"]);
}
