//! The HTTP API over the real engine: a random-weight SLM/LLM pair built on
//! the task tokenizer (written to a temp dir once per test process), served
//! on a loopback port.

use std::time::Duration;

use common::{engine, engine_with};
use futures::StreamExt;
use glimprouter_engine::EngineHandle;
use glimprouter_server::{router, serve_app, ServerConfig};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::net::TcpListener;

mod common;

struct Server {
    base: String,
    client: reqwest::Client,
    engine: EngineHandle,
}

async fn start() -> Server {
    start_on(engine()).await
}

async fn start_on(engine: EngineHandle) -> Server {
    let app = router(engine.clone(), &ServerConfig::default()).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(serve_app(
        listener,
        app,
        Duration::from_secs(1),
        std::future::pending(),
    ));
    Server {
        base,
        client: reqwest::Client::new(),
        engine,
    }
}

impl Server {
    async fn post(&self, path: &str, body: Value) -> reqwest::Response {
        self.client
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    async fn metrics(&self) -> String {
        self.client
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Sum of the KV usage gauges of both pools.
    async fn kv_usage(&self) -> f64 {
        self.metrics()
            .await
            .lines()
            .filter(|l| l.starts_with("glimp:kv_cache_usage_perc{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.engine.shutdown();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completion_and_chat_run_on_the_engine() {
    let server = start().await;
    let response = server
        .post("/v1/completions", json!({"model": "glimprouter", "prompt": "Problem: start at 5, add 6", "max_tokens": 12, "ignore_eos": true, "temperature": 0}))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["usage"]["completion_tokens"], 12, "{body}");
    assert_eq!(body["choices"][0]["finish_reason"], "length");
    let routing = &body["routing"];
    let by_model = routing["tokens_by_model"]["slm"].as_u64().unwrap()
        + routing["tokens_by_model"]["llm"].as_u64().unwrap();
    assert!(by_model >= 12, "{routing}");

    let response = server
        .post("/v1/chat/completions", json!({"messages": [{"role": "user", "content": "add 2 and 3"}], "max_tokens": 6, "ignore_eos": true, "stream": true, "stream_options": {"include_usage": true}}))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.unwrap();
    let data: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    assert_eq!(data.last(), Some(&"[DONE]"));
    let last: Value = serde_json::from_str(data[data.len() - 2]).unwrap();
    assert_eq!(last["usage"]["completion_tokens"], 6, "{last}");
    assert!(last["routing"]["steps"].as_u64().unwrap() >= 1, "{last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampling_fields_reach_the_engine_and_bad_ones_are_named() {
    let server = start().await;
    let tokenizer = server.engine.info().tokenizer.clone();
    let id = |word: &str| tokenizer.token_id(word).expect("in the vocabulary");
    let (five, seven) = (id("Ġ5"), id("Ġ7"));
    let base = json!({"prompt": "Problem: start at 5, add 6", "max_tokens": 8, "temperature": 0});
    let with = |extra: Value| {
        let mut body = base.clone();
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    };
    // logit_bias decides every token; a stop token id ends the choice and is
    // reported as vLLM reports it, an integer stop_reason.
    let response = server
        .post(
            "/v1/completions",
            with(
                json!({"logit_bias": {five.to_string(): 100}, "ignore_eos": true,
                "stop_token_ids": [seven], "min_tokens": 2, "return_token_ids": true}),
            ),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["choices"][0]["token_ids"],
        json!(vec![five; 8]),
        "{body}"
    );
    let response = server
        .post(
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "add 2 and 3"}], "max_tokens": 8,
                "temperature": 0, "logit_bias": {seven.to_string(): 100}, "stop_token_ids": [seven]}),
        )
        .await;
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["choices"][0]["finish_reason"], "stop", "{body}");
    assert_eq!(body["choices"][0]["stop_reason"], json!(seven), "{body}");
    assert_eq!(body["choices"][0]["message"]["content"], "", "{body}");
    assert_eq!(body["usage"]["completion_tokens"], 1, "{body}");

    for (extra, param) in [
        (json!({"presence_penalty": 3}), "presence_penalty"),
        (json!({"repetition_penalty": -1}), "repetition_penalty"),
        (json!({"logit_bias": {"999999": 1}}), "logit_bias"),
        (json!({"stop_token_ids": [999999]}), "stop_token_ids"),
        (json!({"min_tokens": 9}), "min_tokens"),
    ] {
        let response = server.post("/v1/completions", with(extra.clone())).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{extra}");
        let body: Value = response.json().await.unwrap();
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(&format!("`{param}`")),
            "{extra}: {message}"
        );
        // Only the bound against max_tokens, known once the prompt is, is the engine's.
        if param != "min_tokens" {
            assert_eq!(body["error"]["param"], param, "{body}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn context_overflow_uses_the_engine_wording() {
    let server = start().await;
    let response = server
        .post(
            "/v1/completions",
            json!({"prompt": "Problem: 1", "max_tokens": 5000}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("This model's maximum context length is 1024 tokens."),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_mid_stream_frees_the_kv_cache() {
    let server = start().await;
    let response = server
        .post("/v1/completions", json!({"prompt": "Problem: start at 5, add 6", "max_tokens": 900, "ignore_eos": true, "stream": true}))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.bytes_stream();
    body.next().await.unwrap().unwrap();
    // The gauge is refreshed after each engine iteration; the first chunk
    // can arrive before one has finished.
    let mut held = false;
    for _ in 0..200 {
        if server.kv_usage().await > 0.0 {
            held = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(held, "the request holds blocks while it runs");
    drop(body);
    for _ in 0..500 {
        if server.kv_usage().await == 0.0 {
            let metrics = server.metrics().await;
            assert!(
                metrics.contains("glimp:tenant_requests_running{tenant=\"default\"} 0"),
                "{metrics}"
            );
            // Freed by the abort, not by running to the end.
            assert!(
                metrics.contains("glimp:request_success_total{finished_reason=\"abort\"} 1"),
                "{metrics}"
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("KV blocks still held after the client disconnected");
}

#[tokio::test]
async fn health_answers_503_once_the_engine_has_stopped() {
    let server = start().await;
    let health = |client: reqwest::Client, base: String| async move {
        let response = client.get(format!("{base}/health")).send().await.unwrap();
        let status = response.status();
        (status, response.text().await.unwrap())
    };
    let (status, _) = health(server.client.clone(), server.base.clone()).await;
    assert_eq!(status, StatusCode::OK);

    server.engine.shutdown();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while server.engine.is_running() {
        assert!(std::time::Instant::now() < deadline, "engine did not stop");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (status, body) = health(server.client.clone(), server.base.clone()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"]["code"], 503);
    let refused = server
        .post(
            "/v1/completions",
            json!({"prompt": "Problem: 1", "max_tokens": 2}),
        )
        .await;
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_engine_refuses_with_503_and_retry_after() {
    // One running and one waiting: the third request is refused at the door.
    let server = start_on(engine_with(|c| {
        c.max_num_seqs = 1;
        c.max_waiting_requests = 1;
    }))
    .await;
    let long = json!({"prompt": [5, 6, 7], "max_tokens": 400, "ignore_eos": true, "stream": true});
    let first = server.post("/v1/completions", long.clone()).await;
    let second = server.post("/v1/completions", long.clone()).await;
    assert_eq!(
        (first.status(), second.status()),
        (StatusCode::OK, StatusCode::OK)
    );
    let third = server.post("/v1/completions", long).await;
    assert_eq!(third.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(third.headers()["retry-after"], "1");
    let body: Value = third.json().await.unwrap();
    assert_eq!(body["error"]["type"], "server_error", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("overloaded"),
        "{body}"
    );
    assert!(server
        .metrics()
        .await
        .contains("glimp:requests_refused_total{reason=\"queue_full\"} 1"));
    // Once they are done, there is room again.
    drop((first.bytes().await, second.bytes().await));
    let engine = server.engine.clone();
    for _ in 0..100 {
        if engine.requests_in_engine() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(engine.requests_in_engine(), 0);
    let again = server
        .post(
            "/v1/completions",
            json!({"prompt": [5, 6], "max_tokens": 2}),
        )
        .await;
    assert_eq!(again.status(), StatusCode::OK);
}
