//! A tiny OpenAI-compatible streaming server on 127.0.0.1 for tests: it
//! streams exactly `max_tokens` one-token chunks at known delays, then the
//! usage chunk and `[DONE]`, and counts what it sent.

#![allow(dead_code)] // each test file uses a different part

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use axum::{Json, Router};
use futures::stream::{self, Stream};
use serde_json::{json, Value};

pub const MODEL: &str = "mock-model";

#[derive(Debug, Clone)]
pub struct MockConfig {
    pub first_token_delay: Duration,
    pub token_delay: Duration,
    /// Attached to the final chunk as `routing`, like glimp does.
    pub routing: Option<Value>,
    /// Requests whose arrival number n (from 0) has n % k == k - 1 get a 503.
    pub fail_every: Option<u64>,
    /// Honour `stream_options.include_usage`; false: never send usage.
    pub send_usage: bool,
    /// Bearer token required on completions, if any.
    pub api_key: Option<String>,
}

impl Default for MockConfig {
    fn default() -> Self {
        MockConfig {
            first_token_delay: Duration::from_millis(5),
            token_delay: Duration::from_millis(1),
            routing: None,
            fail_every: None,
            send_usage: true,
            api_key: None,
        }
    }
}

#[derive(Debug, Default)]
pub struct MockStats {
    /// Completion requests received (including rejected ones).
    pub arrivals: AtomicU64,
    /// Token-carrying chunks sent.
    pub token_chunks: AtomicU64,
    /// Sum of `usage.completion_tokens` sent.
    pub usage_completion_tokens: AtomicU64,
    pub in_flight: AtomicU64,
    pub max_in_flight: AtomicU64,
    pub bodies: Mutex<Vec<Value>>,
}

impl MockStats {
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::SeqCst)
    }

    pub fn bodies(&self) -> Vec<Value> {
        self.bodies.lock().map(|b| b.clone()).unwrap_or_default()
    }
}

struct AppState {
    config: MockConfig,
    stats: Arc<MockStats>,
}

pub struct MockServer {
    pub url: String,
    pub stats: Arc<MockStats>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn start(config: MockConfig) -> MockServer {
    let stats = Arc::new(MockStats::default());
    let state = Arc::new(AppState {
        config,
        stats: stats.clone(),
    });
    let app = Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/v1/models", get(models))
        .route("/v1/completions", post(completions))
        .route("/v1/chat/completions", post(chat))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    // Without TCP_NODELAY, Nagle's algorithm holds back small chunks and
    // the client sees them bunched.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    MockServer {
        url: format!("http://{addr}"),
        stats,
        task,
    }
}

async fn models() -> Json<Value> {
    Json(json!({"object": "list", "data": [{"id": MODEL, "object": "model"}]}))
}

async fn completions(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    respond(s, headers, body, false)
}

async fn chat(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    respond(s, headers, body, true)
}

fn error(status: StatusCode, message: &str) -> Response {
    let body = json!({"error": {"message": message, "type": "mock", "param": null, "code": status.as_u16()}});
    (status, Json(body)).into_response()
}

/// Whitespace-separated words of the prompt or of all message contents.
fn prompt_words(body: &Value) -> u64 {
    let count = |v: &Value| {
        v.as_str()
            .map_or(0, |t| t.split_whitespace().count() as u64)
    };
    match body.get("messages").and_then(Value::as_array) {
        Some(messages) => messages.iter().map(|m| count(&m["content"])).sum(),
        None => count(&body["prompt"]),
    }
}

fn respond(s: Arc<AppState>, headers: HeaderMap, body: Value, chat: bool) -> Response {
    let n = s.stats.arrivals.fetch_add(1, Ordering::SeqCst);
    if let Ok(mut bodies) = s.stats.bodies.lock() {
        bodies.push(body.clone());
    }
    if let Some(key) = &s.config.api_key {
        let sent = headers.get("authorization").and_then(|v| v.to_str().ok());
        if sent != Some(format!("Bearer {key}").as_str()) {
            return error(StatusCode::UNAUTHORIZED, "bad api key");
        }
    }
    if let Some(k) = s.config.fail_every {
        if n % k == k - 1 {
            return error(StatusCode::SERVICE_UNAVAILABLE, "mock overload");
        }
    }
    let Some(max_tokens) = body["max_tokens"].as_u64().filter(|m| *m > 0) else {
        return error(StatusCode::BAD_REQUEST, "max_tokens missing");
    };
    let include_usage =
        s.config.send_usage && body["stream_options"]["include_usage"].as_bool() == Some(true);
    let prompt_tokens = prompt_words(&body);
    let stats = s.stats.clone();
    let in_flight = stats.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    stats.max_in_flight.fetch_max(in_flight, Ordering::SeqCst);
    Sse::new(token_stream(
        s,
        max_tokens,
        prompt_tokens,
        include_usage,
        chat,
    ))
    .into_response()
}

fn token_chunk(i: u64, chat: bool) -> Value {
    let text = format!("w{i} ");
    if chat {
        json!({"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}]})
    } else {
        json!({"object": "text_completion", "choices": [{"index": 0, "text": text, "finish_reason": null}]})
    }
}

fn token_stream(
    s: Arc<AppState>,
    max_tokens: u64,
    prompt_tokens: u64,
    include_usage: bool,
    chat: bool,
) -> impl Stream<Item = Result<Event, Infallible>> {
    // Steps: 0..max_tokens tokens, then the final chunk, the usage chunk, [DONE].
    stream::unfold(0u64, move |i| {
        let s = s.clone();
        async move {
            let cfg = &s.config;
            let stats = &s.stats;
            let event = if i < max_tokens {
                let delay = if i == 0 {
                    cfg.first_token_delay
                } else {
                    cfg.token_delay
                };
                tokio::time::sleep(delay).await;
                stats.token_chunks.fetch_add(1, Ordering::SeqCst);
                token_chunk(i, chat).to_string()
            } else if i == max_tokens {
                let mut last = if chat {
                    json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]})
                } else {
                    json!({"choices": [{"index": 0, "text": "", "finish_reason": "length"}]})
                };
                if let Some(r) = &cfg.routing {
                    last["routing"] = r.clone();
                }
                last.to_string()
            } else if i == max_tokens + 1 && include_usage {
                stats
                    .usage_completion_tokens
                    .fetch_add(max_tokens, Ordering::SeqCst);
                json!({"choices": [], "usage": {"prompt_tokens": prompt_tokens,
                    "completion_tokens": max_tokens, "total_tokens": prompt_tokens + max_tokens}})
                .to_string()
            } else if i <= max_tokens + 2 {
                stats.in_flight.fetch_sub(1, Ordering::SeqCst);
                "[DONE]".to_string()
            } else {
                return None;
            };
            // Without usage the usage step is skipped straight to [DONE].
            let next = if i == max_tokens && !include_usage {
                i + 2
            } else {
                i + 1
            };
            Some((Ok(Event::default().data(event)), next))
        }
    })
}
