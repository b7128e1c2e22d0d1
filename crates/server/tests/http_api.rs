//! The HTTP API end to end on a loopback port, over the scripted engine
//! (`glimprouter_server::testing`): every endpoint, streaming and not, the
//! error shapes, auth, the limits, disconnects, timeouts and shutdown.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use glimprouter_core::params::Policy;
use glimprouter_core::reasoning::ReasoningParser;
use glimprouter_server::testing::ScriptedBackend;
use glimprouter_server::{router_with_backend, serve_app, ServerConfig, TenantConfig};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const REPLY: &str = "hello world";

struct Server {
    base: String,
    backend: Arc<ScriptedBackend>,
    client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Server {
    async fn start(config: ServerConfig, token_delay: Duration) -> Server {
        Server::on(ScriptedBackend::new(REPLY, token_delay), config).await
    }

    async fn on(backend: ScriptedBackend, config: ServerConfig) -> Server {
        let backend = Arc::new(backend);
        let app = router_with_backend(backend.clone(), &config).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let grace = Duration::from_secs(config.shutdown_grace_secs);
        let task = tokio::spawn(async move {
            serve_app(listener, app, grace, async move {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        Server {
            base,
            backend,
            client: reqwest::Client::new(),
            stop: Some(stop),
            task,
        }
    }

    async fn open() -> Server {
        Server::start(ServerConfig::default(), Duration::ZERO).await
    }

    /// The default config changed by `change`, no token delay.
    async fn configured(change: impl FnOnce(&mut ServerConfig)) -> Server {
        let mut config = ServerConfig::default();
        change(&mut config);
        Server::start(config, Duration::ZERO).await
    }

    fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.post(format!("{}{path}", self.base))
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap()
    }

    async fn metrics(&self) -> String {
        self.get("/metrics").await.text().await.unwrap()
    }

    async fn shutdown(mut self) -> JoinHandle<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task
    }
}

/// Sends the request and reads its JSON answer.
async fn send_json(request: reqwest::RequestBuilder) -> (StatusCode, Value) {
    json_of(request.send().await.unwrap()).await
}

async fn json_of(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let body = response.json::<Value>().await.unwrap();
    (status, body)
}

/// The `data:` payloads of a finished SSE body.
async fn sse_data(response: reqwest::Response) -> Vec<String> {
    let text = response.text().await.unwrap();
    text.lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .map(str::to_string)
        .collect()
}

fn chunks(data: &[String]) -> Vec<Value> {
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{data:?}");
    data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

/// Asserts OpenAI's error shape with code = status, and returns the message.
fn error_message(status: StatusCode, body: &Value, expected: StatusCode) -> String {
    assert_eq!(status, expected, "{body}");
    let error = &body["error"];
    assert_eq!(error["code"], json!(expected.as_u16()), "{body}");
    assert!(
        error["type"].is_string() && error.get("param").is_some(),
        "{body}"
    );
    error["message"].as_str().unwrap().to_string()
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..200 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting until {what}");
}

fn metric_line<'a>(metrics: &'a str, prefix: &str) -> Option<&'a str> {
    metrics.lines().find(|l| l.starts_with(prefix))
}

#[tokio::test]
async fn models_health_and_metrics_are_served() {
    let server = Server::open().await;
    let (status, body) = json_of(server.get("/v1/models").await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["object"], "list");
    assert_eq!(body["data"][0]["id"], "scripted");
    assert_eq!(body["data"][0]["max_model_len"], 256);
    assert_eq!(server.get("/health").await.status(), StatusCode::OK);
    let metrics = server.metrics().await;
    assert!(metrics.contains("glimp:kv_cache_usage_perc 0"), "{metrics}");
    assert!(
        metrics.contains("glimp:tenant_requests_running{tenant=\"default\"} 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("glimp:http_requests_total{endpoint=\"/v1/models\",status=\"200\"} 1"),
        "{metrics}"
    );
    let response = server.get("/metrics").await;
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
}

#[tokio::test]
async fn completion_returns_text_usage_and_routing() {
    let server = Server::open().await;
    let response = server
        .post("/v1/completions")
        .header("x-request-id", "abc-1")
        .json(&json!({"model": "scripted", "prompt": "hi", "max_tokens": 5, "temperature": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "abc-1");
    let (status, body) = json_of(response).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["id"], "cmpl-abc-1");
    assert_eq!(body["object"], "text_completion");
    assert_eq!(body["model"], "scripted");
    assert_eq!(body["choices"][0]["text"], "hello");
    assert_eq!(body["choices"][0]["finish_reason"], "length");
    assert_eq!(body["choices"][0]["logprobs"], Value::Null);
    // BOS + "hi".
    assert_eq!(
        body["usage"],
        json!({"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8})
    );
    let routing = &body["routing"];
    assert_eq!(routing["policy"], "glimp");
    assert_eq!(routing["steps"], 1);
    assert_eq!(routing["tokens_by_model"], json!({"slm": 5, "llm": 0}));
    // The engine got the request as asked.
    let submitted = server.backend.submitted();
    assert_eq!(submitted.len(), 1);
    assert_eq!(submitted[0].request_id, "default/cmpl-abc-1");
    assert_eq!(submitted[0].tenant, "default");
    assert_eq!(submitted[0].sampling.max_tokens, 5);
    assert_eq!(submitted[0].sampling.temperature, 0.0);
}

#[tokio::test]
async fn completion_defaults_to_16_tokens_and_generates_request_ids() {
    let server = Server::open().await;
    let response = server
        .post("/v1/completions")
        .json(&json!({"prompt": "x", "ignore_eos": true}))
        .send()
        .await
        .unwrap();
    let header = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    let (_, body) = json_of(response).await;
    assert_eq!(body["id"], format!("cmpl-{header}"));
    assert_eq!(server.backend.submitted()[0].sampling.max_tokens, 16);
    assert!(server.backend.submitted()[0].sampling.ignore_eos);
    assert_eq!(body["usage"]["completion_tokens"], 16);
}

#[tokio::test]
async fn stop_strings_end_the_choice() {
    let server = Server::open().await;
    let (_, body) = send_json(
        server
            .post("/v1/completions")
            .json(&json!({"prompt": "hi", "max_tokens": 20, "stop": ["o w", "zz"]})),
    )
    .await;
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["choices"][0]["stop_reason"], "o w");
    assert_eq!(
        server.backend.submitted()[0].sampling.stop,
        vec!["o w".to_string(), "zz".to_string()]
    );
}

#[tokio::test]
async fn echo_prepends_the_prompt() {
    let server = Server::open().await;
    let (_, body) = send_json(
        server
            .post("/v1/completions")
            .json(&json!({"prompt": "say: ", "max_tokens": 5, "echo": true})),
    )
    .await;
    assert_eq!(body["choices"][0]["text"], "say: hello");
}

#[tokio::test]
async fn n_and_prompt_batches_make_one_choice_each() {
    let server = Server::open().await;
    let (status, body) = send_json(
        server
            .post("/v1/completions")
            .header("x-request-id", "batch")
            .json(&json!({"prompt": ["a", "bb"], "n": 2, "max_tokens": 3, "seed": 7})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let choices = body["choices"].as_array().unwrap();
    assert_eq!(
        choices
            .iter()
            .map(|c| c["index"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        vec![0, 1, 2, 3]
    );
    assert!(choices.iter().all(|c| c["text"] == "hel"));
    // Prompts counted once each (BOS + text), completions for every choice.
    assert_eq!(
        body["usage"],
        json!({"prompt_tokens": 5, "completion_tokens": 12, "total_tokens": 17})
    );
    assert_eq!(body["routing"]["steps"], 4);
    let mut submitted = server.backend.submitted();
    submitted.sort_by(|a, b| a.request_id.cmp(&b.request_id));
    let ids: Vec<&str> = submitted.iter().map(|r| r.request_id.as_str()).collect();
    assert_eq!(
        ids,
        vec![
            "default/cmpl-batch-0",
            "default/cmpl-batch-1",
            "default/cmpl-batch-2",
            "default/cmpl-batch-3"
        ]
    );
    assert_eq!(submitted[0].prompt_ids, vec![256, 97]);
    assert_eq!(submitted[2].prompt_ids, vec![256, 98, 98]);
    // Seeded copies of one prompt differ but stay reproducible.
    assert_eq!(
        submitted
            .iter()
            .map(|r| r.sampling.seed.unwrap())
            .collect::<Vec<_>>(),
        vec![7, 8, 7, 8]
    );
}

#[tokio::test]
async fn token_id_prompts_are_accepted() {
    let server = Server::open().await;
    let (status, body) = send_json(
        server
            .post("/v1/completions")
            .json(&json!({"prompt": [104, 105], "max_tokens": 2, "echo": true})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["choices"][0]["text"], "hihe");
    assert_eq!(server.backend.submitted()[0].prompt_ids, vec![104, 105]);
}

#[tokio::test]
async fn completion_logprobs_have_the_legacy_shape() {
    let server = Server::open().await;
    let (_, body) = send_json(
        server
            .post("/v1/completions")
            .json(&json!({"prompt": "hi", "max_tokens": 3, "logprobs": 2})),
    )
    .await;
    let logprobs = &body["choices"][0]["logprobs"];
    assert_eq!(logprobs["tokens"], json!(["h", "e", "l"]));
    assert_eq!(logprobs["token_logprobs"], json!([-0.25, -0.25, -0.25]));
    assert_eq!(logprobs["text_offset"], json!([0, 1, 2]));
    assert_eq!(
        logprobs["top_logprobs"][0],
        json!({"a": -0.5, "b": -1.5, "h": -0.25})
    );
    assert_eq!(server.backend.submitted()[0].sampling.logprobs, Some(2));
}

#[tokio::test]
async fn chat_uses_the_template_and_the_rest_of_the_context() {
    let server = Server::open().await;
    let response = server
        .post("/v1/chat/completions")
        .header("x-request-id", "c1")
        .json(&json!({
            "model": "scripted",
            "messages": [{"role": "system", "content": "be nice"}, {"role": "user", "content": "hi"}],
            "routing": {"policy": "llm", "speculative_k": 2}
        }))
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(response).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["id"], "chatcmpl-c1");
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(
        body["choices"][0]["message"],
        json!({"role": "assistant", "content": REPLY})
    );
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    let prompt = "<|system|>\nbe nice\n<|user|>\nhi\n<|assistant|>\n";
    assert_eq!(body["usage"]["prompt_tokens"], prompt.len());
    assert_eq!(body["usage"]["completion_tokens"], REPLY.len());
    assert_eq!(body["routing"]["policy"], "llm");
    assert_eq!(body["routing"]["llm_step_ratio"], 1.0);
    assert_eq!(body["routing"]["tokens_by_model"]["llm"], REPLY.len());
    let request = &server.backend.submitted()[0];
    // No BOS added: the template owns the special tokens.
    assert_eq!(
        request.prompt_ids,
        prompt.bytes().map(u32::from).collect::<Vec<_>>()
    );
    assert_eq!(request.sampling.max_tokens, 256 - prompt.len());
    assert_eq!(request.routing.policy.as_str(), "llm");
    assert_eq!(request.routing.speculative_k, 2);
}

#[tokio::test]
async fn chat_takes_max_completion_tokens_and_logprobs() {
    let server = Server::open().await;
    let (status, body) = send_json(server.post("/v1/chat/completions").json(&json!({
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
        "max_completion_tokens": 2, "logprobs": true, "top_logprobs": 1
    })))
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["choices"][0]["message"]["content"], "he");
    assert_eq!(body["choices"][0]["finish_reason"], "length");
    let content = &body["choices"][0]["logprobs"]["content"];
    assert_eq!(content[0]["token"], "h");
    assert_eq!(content[0]["bytes"], json!([104]));
    assert_eq!(
        content[0]["top_logprobs"],
        json!([{"token": "a", "logprob": -0.5, "bytes": [97]}])
    );
}

#[tokio::test]
async fn streamed_chat_sends_role_deltas_usage_and_done() {
    let server = Server::open().await;
    let response = server
        .post("/v1/chat/completions")
        .json(&json!({"messages": [{"role": "user", "content": "hi"}], "stream": true, "stream_options": {"include_usage": true}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let chunks = chunks(&sse_data(response).await);
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk"
        && c["id"].as_str().unwrap().starts_with("chatcmpl-")));
    assert_eq!(
        chunks[0]["choices"][0]["delta"],
        json!({"role": "assistant", "content": ""})
    );
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content, REPLY);
    let finish = &chunks[chunks.len() - 2];
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    assert_eq!(finish["choices"][0]["delta"], json!({}));
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["usage"]["completion_tokens"], REPLY.len());
    assert_eq!(last["routing"]["steps"], 1);
    assert!(chunks[..chunks.len() - 1]
        .iter()
        .all(|c| c.get("usage").is_none()));
}

#[tokio::test]
async fn streamed_completion_puts_routing_on_the_last_finish_chunk() {
    let server = Server::open().await;
    let response = server
        .post("/v1/completions")
        .json(&json!({"prompt": "hi", "max_tokens": 4, "n": 2, "stream": true}))
        .send()
        .await
        .unwrap();
    let chunks = chunks(&sse_data(response).await);
    for choice in 0..2 {
        let text: String = chunks
            .iter()
            .filter(|c| c["choices"][0]["index"] == choice)
            .filter_map(|c| c["choices"][0]["text"].as_str())
            .collect();
        assert_eq!(text, "hell");
    }
    let finishes: Vec<&Value> = chunks
        .iter()
        .filter(|c| c["choices"][0]["finish_reason"].is_string())
        .collect();
    assert_eq!(finishes.len(), 2);
    assert!(finishes[0].get("routing").is_none());
    assert_eq!(finishes[1]["routing"]["steps"], 2);
    assert!(chunks.iter().all(|c| c.get("usage").is_none()));
}

#[tokio::test]
async fn validation_errors_are_openai_shaped_400s() {
    let server = Server::open().await;
    let cases = [
        ("/v1/completions", "{\"prompt\": ", "Malformed JSON"),
        (
            "/v1/completions",
            r#"{"prompt": "x", "temperature": "hot"}"#,
            "invalid type",
        ),
        (
            "/v1/completions",
            r#"{"max_tokens": 3}"#,
            "missing field `prompt`",
        ),
        (
            "/v1/completions",
            r#"{"prompt": "x", "temperature": -1}"#,
            "`temperature`",
        ),
        (
            "/v1/completions",
            r#"{"prompt": "x", "top_p": 0}"#,
            "`top_p`",
        ),
        (
            "/v1/completions",
            r#"{"prompt": "x", "max_tokens": 0}"#,
            "`max_tokens`",
        ),
        ("/v1/completions", r#"{"prompt": "x", "n": 17}"#, "`n`"),
        (
            "/v1/completions",
            r#"{"prompt": "x", "logprobs": 21}"#,
            "`logprobs`",
        ),
        ("/v1/completions", r#"{"prompt": ""}"#, "must not be empty"),
        (
            "/v1/completions",
            r#"{"prompt": "x", "stream_options": {"include_usage": true}}"#,
            "stream=True",
        ),
        (
            "/v1/completions",
            r#"{"prompt": "x", "routing": {"taux": 1}}"#,
            "unknown field",
        ),
        (
            "/v1/completions",
            r#"{"prompt": "x", "routing": {"random_p": 2}}"#,
            "random_p",
        ),
        (
            "/v1/chat/completions",
            r#"{"messages": []}"#,
            "at least one message",
        ),
        (
            "/v1/chat/completions",
            r#"{"messages": [{"role": "wizard", "content": "x"}]}"#,
            "unknown role",
        ),
        (
            "/v1/chat/completions",
            r#"{"messages": [{"role": "user", "content": "x"}], "top_logprobs": 2}"#,
            "`logprobs`",
        ),
    ];
    for (path, body, needle) in cases {
        let response = server
            .post(path)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let (status, json) = json_of(response).await;
        let message = error_message(status, &json, StatusCode::BAD_REQUEST);
        assert!(message.contains(needle), "{body}: {message}");
    }
    assert!(server.backend.submitted().is_empty());
}

#[tokio::test]
async fn context_overflow_is_400_with_vllm_wording() {
    let server = Server::open().await;
    let (status, body) = send_json(
        server
            .post("/v1/completions")
            .json(&json!({"prompt": "hi", "max_tokens": 300})),
    )
    .await;
    let message = error_message(status, &body, StatusCode::BAD_REQUEST);
    assert_eq!(
        message,
        "This model's maximum context length is 256 tokens. However, you requested 303 tokens (3 in the messages, 300 in the completion). Please reduce the length of the messages or completion."
    );
}

#[tokio::test]
async fn unknown_model_and_route_are_404() {
    let server = Server::open().await;
    let (status, body) = send_json(
        server
            .post("/v1/completions")
            .json(&json!({"model": "gpt-9", "prompt": "x"})),
    )
    .await;
    assert_eq!(
        error_message(status, &body, StatusCode::NOT_FOUND),
        "The model `gpt-9` does not exist."
    );
    let (status, body) = json_of(server.get("/v1/nothing").await).await;
    error_message(status, &body, StatusCode::NOT_FOUND);
    let (status, body) = json_of(server.get("/v1/completions").await).await;
    error_message(status, &body, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn oversized_bodies_are_413() {
    let config = ServerConfig {
        max_body_bytes: 1024,
        ..ServerConfig::default()
    };
    let server = Server::start(config, Duration::ZERO).await;
    let body = json!({"prompt": "x".repeat(2000)});
    let (status, json) = send_json(server.post("/v1/completions").json(&body)).await;
    error_message(status, &json, StatusCode::PAYLOAD_TOO_LARGE);
}

fn tenants(tenants: Vec<TenantConfig>) -> ServerConfig {
    ServerConfig {
        tenants,
        ..ServerConfig::default()
    }
}

#[tokio::test]
async fn api_keys_select_the_tenant() {
    let server = Server::start(
        tenants(vec![
            TenantConfig::new("alice", "sk-a"),
            TenantConfig::new("bob", "sk-b"),
        ]),
        Duration::ZERO,
    )
    .await;
    let request = json!({"prompt": "hi", "max_tokens": 1});
    let (status, body) = send_json(server.post("/v1/completions").json(&request)).await;
    error_message(status, &body, StatusCode::UNAUTHORIZED);
    let (status, body) = send_json(
        server
            .post("/v1/completions")
            .bearer_auth("sk-c")
            .json(&request),
    )
    .await;
    error_message(status, &body, StatusCode::UNAUTHORIZED);
    let response = server
        .client
        .get(format!("{}/v1/models", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let response = server
        .post("/v1/completions")
        .bearer_auth("sk-b")
        .json(&request)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(server.backend.submitted()[0].tenant, "bob");
    // Health and metrics need no key.
    assert_eq!(server.get("/health").await.status(), StatusCode::OK);
    let metrics = server.metrics().await;
    assert!(
        metrics.contains("glimp:tenant_requests_running{tenant=\"alice\"} 0"),
        "{metrics}"
    );
    assert!(!metrics.contains("tenant=\"default\""), "{metrics}");
}

#[tokio::test]
async fn request_rate_limit_answers_429_with_retry_after() {
    let tenant = TenantConfig {
        requests_per_minute: Some(2),
        ..TenantConfig::new("a", "sk-a")
    };
    let server = Server::start(
        tenants(vec![tenant, TenantConfig::new("b", "sk-b")]),
        Duration::ZERO,
    )
    .await;
    let request = json!({"prompt": "hi", "max_tokens": 1});
    for _ in 0..2 {
        assert_eq!(
            server
                .post("/v1/completions")
                .bearer_auth("sk-a")
                .json(&request)
                .send()
                .await
                .unwrap()
                .status(),
            StatusCode::OK
        );
    }
    let response = server
        .post("/v1/completions")
        .bearer_auth("sk-a")
        .json(&request)
        .send()
        .await
        .unwrap();
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=30).contains(&retry_after), "{retry_after}");
    let (status, body) = json_of(response).await;
    error_message(status, &body, StatusCode::TOO_MANY_REQUESTS);
    // Another tenant is not affected.
    assert_eq!(
        server
            .post("/v1/completions")
            .bearer_auth("sk-b")
            .json(&request)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    let metrics = server.metrics().await;
    assert!(
        metrics.contains("glimp:rate_limited_requests_total{limit=\"requests\",tenant=\"a\"} 1"),
        "{metrics}"
    );
}

/// One tenant, `a` (key `sk-a`), with a token rate limit.
async fn tenant_a_with_tokens_per_minute(tokens: u32) -> Server {
    let tenant = TenantConfig {
        tokens_per_minute: Some(tokens),
        ..TenantConfig::new("a", "sk-a")
    };
    Server::start(tenants(vec![tenant]), Duration::ZERO).await
}

#[tokio::test]
async fn token_rate_limit_counts_prompt_and_max_tokens() {
    let server = tenant_a_with_tokens_per_minute(20).await;
    // 3 prompt tokens + 10 = 13 of 20.
    let request = json!({"prompt": "hi", "max_tokens": 10});
    assert_eq!(
        server
            .post("/v1/completions")
            .bearer_auth("sk-a")
            .json(&request)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    let response = server
        .post("/v1/completions")
        .bearer_auth("sk-a")
        .json(&request)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(response.headers().contains_key("retry-after"));
    // Larger than the whole budget.
    let (status, body) = send_json(
        server
            .post("/v1/completions")
            .bearer_auth("sk-a")
            .json(&json!({"prompt": "hi", "max_tokens": 50})),
    )
    .await;
    assert!(error_message(status, &body, StatusCode::TOO_MANY_REQUESTS)
        .starts_with("Request too large"));
    assert!(server
        .metrics()
        .await
        .contains("glimp:rate_limited_requests_total{limit=\"tokens\",tenant=\"a\"} 2"));
}

#[tokio::test]
async fn concurrency_limit_holds_for_the_whole_stream() {
    let tenant = TenantConfig {
        max_concurrent: Some(1),
        ..TenantConfig::new("a", "sk-a")
    };
    let server = Server::start(tenants(vec![tenant]), Duration::from_millis(20)).await;
    let streaming = server
        .post("/v1/completions")
        .bearer_auth("sk-a")
        .json(&json!({"prompt": "hi", "max_tokens": 10, "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(streaming.status(), StatusCode::OK);
    assert!(server
        .metrics()
        .await
        .contains("glimp:tenant_requests_running{tenant=\"a\"} 1"));
    let refused = server
        .post("/v1/completions")
        .bearer_auth("sk-a")
        .json(&json!({"prompt": "hi", "max_tokens": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.headers()["retry-after"], "1");
    // Reading the stream to its end frees the slot.
    let data = sse_data(streaming).await;
    assert_eq!(data.last().unwrap(), "[DONE]");
    let again = server
        .post("/v1/completions")
        .bearer_auth("sk-a")
        .json(&json!({"prompt": "hi", "max_tokens": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::OK);
    assert!(server
        .metrics()
        .await
        .contains("glimp:tenant_requests_running{tenant=\"a\"} 0"));
}

#[tokio::test]
async fn disconnecting_mid_stream_aborts_and_frees_the_request() {
    let server = Server::start(ServerConfig::default(), Duration::from_millis(10)).await;
    let response = server
        .post("/v1/chat/completions")
        .header("x-request-id", "gone")
        .json(&json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 200, "ignore_eos": true, "stream": true}))
        .send()
        .await
        .unwrap();
    let mut body = response.bytes_stream();
    let mut received = 0;
    while received < 3 {
        received += body.next().await.unwrap().unwrap().len().min(1);
    }
    assert_eq!(server.backend.running(), 1);
    assert!(server
        .metrics()
        .await
        .contains("glimp:kv_cache_usage_perc 0.125"));
    drop(body);
    let backend = server.backend.clone();
    wait_until("the request is aborted", || backend.running() == 0).await;
    assert!(server
        .backend
        .aborted()
        .contains(&"default/chatcmpl-gone".to_string()));
    let metrics = server.metrics().await;
    assert_eq!(
        metric_line(&metrics, "glimp:kv_cache_usage_perc"),
        Some("glimp:kv_cache_usage_perc 0")
    );
    assert!(
        metrics.contains("glimp:tenant_requests_running{tenant=\"default\"} 0"),
        "{metrics}"
    );
}

#[tokio::test]
async fn engine_errors_reach_the_client() {
    let server = Server::open().await;
    let (status, body) = send_json(
        server
            .post("/v1/completions")
            .json(&json!({"prompt": "FAIL", "max_tokens": 5})),
    )
    .await;
    assert_eq!(
        error_message(status, &body, StatusCode::INTERNAL_SERVER_ERROR),
        "internal engine error: scripted failure"
    );
    let response = server
        .post("/v1/completions")
        .json(&json!({"prompt": "FAIL", "max_tokens": 5, "stream": true}))
        .send()
        .await
        .unwrap();
    let data = sse_data(response).await;
    assert_eq!(data.last().unwrap(), "[DONE]");
    let error: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert_eq!(error["error"]["code"], 500);
}

#[tokio::test]
async fn a_panicking_request_gets_an_openai_500_and_the_server_goes_on() {
    // One request at a time: a permit a panic failed to release would
    // refuse the requests after it with a 429.
    let tenant = TenantConfig {
        max_concurrent: Some(1),
        ..TenantConfig::new("a", "sk-a")
    };
    let server = Server::start(tenants(vec![tenant]), Duration::ZERO).await;
    for _ in 0..2 {
        let (status, body) = send_json(
            server
                .post("/v1/completions")
                .bearer_auth("sk-a")
                .json(&json!({"prompt": "PANIC", "max_tokens": 5})),
        )
        .await;
        assert_eq!(
            error_message(status, &body, StatusCode::INTERNAL_SERVER_ERROR),
            "Internal server error: the request's handler failed."
        );
        assert_eq!(body["error"]["type"], "server_error");
    }
    let (status, body) = send_json(
        server
            .post("/v1/completions")
            .bearer_auth("sk-a")
            .json(&json!({"prompt": "hi", "max_tokens": 5})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let metrics = server.metrics().await;
    assert!(
        metrics.contains("glimp:tenant_requests_running{tenant=\"a\"} 0"),
        "{metrics}"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l.contains("status=\"500\"") && l.ends_with(" 2")),
        "the two panicking requests are counted as 500s:\n{metrics}"
    );
}

#[tokio::test]
async fn requests_past_the_timeout_are_aborted() {
    let config = ServerConfig {
        request_timeout_secs: Some(1),
        ..ServerConfig::default()
    };
    let server = Server::start(config, Duration::from_millis(20)).await;
    let request = json!({"prompt": "hi", "max_tokens": 200, "ignore_eos": true});
    let (status, body) = send_json(server.post("/v1/completions").json(&request)).await;
    error_message(status, &body, StatusCode::GATEWAY_TIMEOUT);
    let backend = server.backend.clone();
    wait_until("the request is aborted", || backend.running() == 0).await;
    assert_eq!(server.backend.aborted().len(), 1);
}

#[tokio::test]
async fn a_request_id_in_flight_cannot_be_reused() {
    let server = Server::start(ServerConfig::default(), Duration::from_millis(20)).await;
    let request = json!({"prompt": "hi", "max_tokens": 10, "stream": true});
    let first = server
        .post("/v1/completions")
        .header("x-request-id", "same")
        .json(&request)
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    let (status, body) = send_json(
        server
            .post("/v1/completions")
            .header("x-request-id", "same")
            .json(&request),
    )
    .await;
    assert!(error_message(status, &body, StatusCode::BAD_REQUEST).contains("already in use"));
    sse_data(first).await;
    let backend = server.backend.clone();
    wait_until("the first request is done", || backend.running() == 0).await;
    let again = server
        .post("/v1/completions")
        .header("x-request-id", "same")
        .json(&request)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::OK);
}

#[tokio::test]
async fn tenants_may_use_the_same_request_id_at_once() {
    let server = Server::start(
        tenants(vec![
            TenantConfig::new("alice", "sk-a"),
            TenantConfig::new("bob", "sk-b"),
        ]),
        Duration::from_millis(20),
    )
    .await;
    let request = json!({"prompt": "hi", "max_tokens": 10, "stream": true});
    let send = |key: &'static str| {
        server
            .post("/v1/completions")
            .bearer_auth(key)
            .header("x-request-id", "same")
            .json(&request)
            .send()
    };
    let (a, b) = tokio::join!(send("sk-a"), send("sk-b"));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!((a.status(), b.status()), (StatusCode::OK, StatusCode::OK));
    // Each sees its own id; the engine ids differ by tenant.
    assert_eq!(a.headers()["x-request-id"], "same");
    let mut ids: Vec<String> = server
        .backend
        .submitted()
        .into_iter()
        .map(|r| r.request_id)
        .collect();
    ids.sort();
    assert_eq!(ids, vec!["alice/cmpl-same", "bob/cmpl-same"]);
    sse_data(a).await;
    sse_data(b).await;
}

#[tokio::test]
async fn more_choices_than_allowed_are_refused_before_anything_starts() {
    let server = Server::configured(|c| c.max_choices_per_request = 8).await;
    // 5 prompts x n = 2: 10 of 8.
    let request = json!({"prompt": ["a", "b", "c", "d", "e"], "n": 2, "max_tokens": 1});
    let (status, body) = send_json(server.post("/v1/completions").json(&request)).await;
    let message = error_message(status, &body, StatusCode::BAD_REQUEST);
    assert!(message.contains("10 completions"), "{message}");
    assert_eq!(body["error"]["param"], "prompt");
    let (status, body) = send_json(
        server
            .post("/v1/chat/completions")
            .json(&json!({"messages": [{"role": "user", "content": "hi"}], "n": 9})),
    )
    .await;
    error_message(status, &body, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["param"], "n");
    assert!(server.backend.submitted().is_empty());
    assert!(server
        .metrics()
        .await
        .contains("glimp:requests_refused_total{reason=\"too_many_choices\"} 2"));
    // At the cap it runs.
    let request = json!({"prompt": ["a", "b", "c", "d"], "n": 2, "max_tokens": 1});
    let (status, body) = send_json(server.post("/v1/completions").json(&request)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn fields_vllm_honours_and_glimprouter_does_not_are_refused_unless_no_ops() {
    let server = Server::open().await;
    let chat = |extra: Value| {
        let mut body = json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    };
    for (path, field, value) in [
        ("/v1/completions", "bad_words", json!(["no"])),
        ("/v1/completions", "guided_choice", json!(["a", "b"])),
        ("/v1/completions", "best_of", json!(3)),
        (
            "/v1/chat/completions",
            "response_format",
            json!({"type": "json_object"}),
        ),
        (
            "/v1/chat/completions",
            "tools",
            json!([{"type": "function"}]),
        ),
    ] {
        let body = if path == "/v1/completions" {
            json!({"prompt": "hi", "max_tokens": 2, field: value})
        } else {
            chat(json!({field: value}))
        };
        let (status, reply) = send_json(server.post(path).json(&body)).await;
        let message = error_message(status, &reply, StatusCode::BAD_REQUEST);
        assert_eq!(reply["error"]["param"], field, "{message}");
    }
    // No-op values, unknown fields and a temperature in OpenAI's range pass.
    let body = json!({"prompt": "hi", "max_tokens": 2, "presence_penalty": 0,
        "logit_bias": {}, "best_of": 1, "min_tokens": 0, "a_future_field": true, "temperature": 2});
    let (status, reply) = send_json(server.post("/v1/completions").json(&body)).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let body = json!({"prompt": "hi", "max_tokens": 2, "temperature": 2.5});
    let (status, reply) = send_json(server.post("/v1/completions").json(&body)).await;
    error_message(status, &reply, StatusCode::BAD_REQUEST);
    assert_eq!(reply["error"]["param"], "temperature");
}

#[tokio::test]
async fn a_refused_request_costs_the_tenant_no_tokens() {
    let server = tenant_a_with_tokens_per_minute(20).await;
    // Refused by the engine's rules (a token id past the vocabulary) after it would
    // have been charged 1 + 15 tokens; then 3 + 15 of 20 still fit.
    for prompt in [json!([100000]), json!("hi")] {
        let request = json!({"prompt": prompt, "max_tokens": 15});
        let (status, body) = send_json(
            server
                .post("/v1/completions")
                .bearer_auth("sk-a")
                .json(&request),
        )
        .await;
        let expected = if prompt.is_string() {
            StatusCode::OK
        } else {
            StatusCode::BAD_REQUEST
        };
        assert_eq!(status, expected, "{body}");
    }
    // A cost that would overflow is a 400 about the context, not a panic or a 429.
    let request = json!({"prompt": "hi", "max_tokens": 1u64 << 62, "n": 4});
    let (status, body) = send_json(
        server
            .post("/v1/completions")
            .bearer_auth("sk-a")
            .json(&request),
    )
    .await;
    assert!(
        error_message(status, &body, StatusCode::BAD_REQUEST).contains("maximum context length")
    );
}

#[tokio::test]
async fn tokens_a_finished_request_did_not_use_go_back_to_the_tenant() {
    let limited = |name: &str, key: &str| TenantConfig {
        tokens_per_minute: Some(40),
        ..TenantConfig::new(name, key)
    };
    let server = Server::start(
        tenants(vec![limited("a", "sk-a"), limited("b", "sk-b")]),
        Duration::ZERO,
    )
    .await;
    // Charged 3 + 30; the reply is 11 tokens, so 19 come back: 26 left, enough
    // for 3 + 20 (7 without the refund). Tenant a not streamed, b streamed.
    for (key, stream) in [("sk-a", false), ("sk-b", true)] {
        for max_tokens in [30, 20] {
            let request = json!({"prompt": "hi", "max_tokens": max_tokens, "stream": stream});
            let response = server
                .post("/v1/completions")
                .bearer_auth(key)
                .json(&request)
                .send()
                .await
                .unwrap();
            assert_eq!(
                response.status(),
                StatusCode::OK,
                "stream {stream}, {max_tokens}"
            );
            response.bytes().await.unwrap();
        }
        // Both settled at 14 used: 40 - 28 = 12 left (plus a few ms of refill),
        // short of 3 + 20.
        let refused = server
            .post("/v1/completions")
            .bearer_auth(key)
            .json(&json!({"prompt": "hi", "max_tokens": 20}))
            .send()
            .await
            .unwrap();
        assert_eq!(
            refused.status(),
            StatusCode::TOO_MANY_REQUESTS,
            "stream {stream}"
        );
    }
}

#[tokio::test]
async fn a_timeout_past_any_instant_never_fires() {
    let server = Server::configured(|c| c.request_timeout_secs = Some(u64::MAX)).await;
    let (status, body) = send_json(
        server
            .post("/v1/completions")
            .json(&json!({"prompt": "hi", "max_tokens": 2})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn shutdown_lets_in_flight_requests_finish() {
    let server = Server::start(ServerConfig::default(), Duration::from_millis(20)).await;
    let base = server.base.clone();
    let client = server.client.clone();
    let backend = server.backend.clone();
    let response = client
        .post(format!("{base}/v1/completions"))
        .json(&json!({"prompt": "hi", "max_tokens": 10, "stream": true}))
        .send()
        .await
        .unwrap();
    let task = server.shutdown().await;
    // The stream started before the shutdown still completes.
    let data = sse_data(response).await;
    let chunks = chunks(&data);
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["text"].as_str())
        .collect();
    assert_eq!(text, "hello worl");
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
    assert!(backend.aborted().is_empty());
    assert!(client.get(format!("{base}/health")).send().await.is_err());
}

#[tokio::test]
async fn shutdown_gives_up_after_the_grace_period() {
    let config = ServerConfig {
        shutdown_grace_secs: 1,
        ..ServerConfig::default()
    };
    let server = Server::start(config, Duration::from_millis(50)).await;
    let backend = server.backend.clone();
    let response = server
        .post("/v1/completions")
        .json(&json!({"prompt": "hi", "max_tokens": 200, "ignore_eos": true, "stream": true}))
        .send()
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let task = server.shutdown().await;
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(4),
        "{waited:?}"
    );
    drop(response);
    wait_until("the request is aborted", || backend.running() == 0).await;
}

#[tokio::test]
async fn request_routing_merges_over_the_configured_default() {
    let default_routing = glimprouter_core::RoutingParams {
        policy: glimprouter_core::params::Policy::Slm,
        tau: 3.0,
        speculative_k: 4,
        ..Default::default()
    };
    let config = ServerConfig {
        default_routing: Some(default_routing),
        ..ServerConfig::default()
    };
    let server = Server::start(config, Duration::ZERO).await;
    let request = json!({"prompt": "hi", "max_tokens": 1, "routing": {"tau": 0.5}});
    assert_eq!(
        server
            .post("/v1/completions")
            .json(&request)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    let request = json!({"prompt": "hi", "max_tokens": 1});
    assert_eq!(
        server
            .post("/v1/completions")
            .json(&request)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    let submitted = server.backend.submitted();
    assert_eq!(submitted[0].routing.policy.as_str(), "slm");
    assert_eq!(
        (submitted[0].routing.tau, submitted[0].routing.speculative_k),
        (0.5, 4)
    );
    assert_eq!(
        (submitted[1].routing.tau, submitted[1].routing.speculative_k),
        (3.0, 4)
    );
}

#[tokio::test]
async fn a_client_gone_before_a_plain_response_aborts_its_request() {
    let server = Server::start(ServerConfig::default(), Duration::from_millis(20)).await;
    let request = json!({"prompt": "hi", "max_tokens": 200, "ignore_eos": true});
    let sent = server
        .post("/v1/completions")
        .header("x-request-id", "impatient")
        .json(&request)
        .timeout(Duration::from_millis(200))
        .send()
        .await;
    assert!(sent.is_err(), "the client gave up first");
    let backend = server.backend.clone();
    wait_until("the request is aborted", || backend.running() == 0).await;
    assert_eq!(
        server.backend.aborted(),
        vec!["default/cmpl-impatient".to_string()]
    );
}

const THINKING_REPLY: &str = "<think>\nStep one.\n\nStep two.\n</think>\n\nThe answer is 4.";

#[tokio::test]
async fn a_reasoning_parser_puts_the_thoughts_apart_from_the_answer() {
    let mut backend = ScriptedBackend::new(THINKING_REPLY, Duration::ZERO);
    backend.reasoning_parser = Some(ReasoningParser::Qwen3);
    // As the engine's defaults are with a reasoning parser.
    backend.default_routing.answer_marker = Some("</think>".into());
    let server = Server::on(backend, ServerConfig::default()).await;
    let (thoughts, answer) = ("\nStep one.\n\nStep two.\n", "\n\nThe answer is 4.");
    let chat = json!({"messages": [{"role": "user", "content": "2+2?"}], "max_tokens": 200});
    let (status, body) = send_json(server.post("/v1/chat/completions").json(&chat)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let message = &body["choices"][0]["message"];
    assert_eq!(message["content"], answer, "{body}");
    assert_eq!(message["reasoning"], thoughts, "{body}");
    assert_eq!(message["reasoning_content"], thoughts, "{body}");

    // Streamed, one byte per token: the same split, no marker in any delta.
    let mut stream_body = chat.clone();
    stream_body["stream"] = json!(true);
    let response = server
        .post("/v1/chat/completions")
        .json(&stream_body)
        .send()
        .await
        .unwrap();
    let (mut reasoning, mut reasoning_content, mut content) =
        (String::new(), String::new(), String::new());
    for chunk in chunks(&sse_data(response).await) {
        for choice in chunk["choices"].as_array().unwrap() {
            let delta = &choice["delta"];
            for (field, into) in [
                ("reasoning", &mut reasoning),
                ("reasoning_content", &mut reasoning_content),
                ("content", &mut content),
            ] {
                if let Some(text) = delta[field].as_str() {
                    assert!(!text.contains("think>"), "{delta}");
                    into.push_str(text);
                }
            }
        }
    }
    assert_eq!((reasoning.as_str(), content.as_str()), (thoughts, answer));
    assert_eq!(reasoning_content, reasoning);

    // Thinking off: the template closes the block, so the output is all answer
    // and the answer model (the LLM by default) serves the request unrouted.
    let mut off = chat.clone();
    off["chat_template_kwargs"] = json!({"enable_thinking": false});
    let (_, body) = send_json(server.post("/v1/chat/completions").json(&off)).await;
    assert_eq!(
        body["choices"][0]["message"]["content"], THINKING_REPLY,
        "{body}"
    );
    assert_eq!(body["choices"][0]["message"]["reasoning"], "", "{body}");
    assert_eq!(body["routing"]["policy"], "llm", "{body}");
    let submitted = server.backend.submitted();
    assert_eq!(submitted.last().unwrap().routing.policy, Policy::Llm);

    // The budget reaches the engine; completions are never split.
    let mut budget = chat.clone();
    budget["thinking_token_budget"] = json!(7);
    let (status, _) = send_json(server.post("/v1/chat/completions").json(&budget)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        server
            .backend
            .submitted()
            .last()
            .unwrap()
            .routing
            .thinking_token_budget,
        Some(7)
    );
    budget["thinking_token_budget"] = json!(-1);
    let (status, body) = send_json(server.post("/v1/chat/completions").json(&budget)).await;
    let message = error_message(status, &body, StatusCode::BAD_REQUEST);
    assert!(message.contains("thinking_token_budget"), "{message}");
    let (_, body) = send_json(
        server
            .post("/v1/completions")
            .json(&json!({"prompt": "2+2?", "max_tokens": 200})),
    )
    .await;
    assert_eq!(body["choices"][0]["text"], THINKING_REPLY, "{body}");
}
