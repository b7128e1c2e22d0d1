//! Shared by the server's integration tests: the engine on a random-weight
//! pair, and a server driven from synchronous code (proptest cases).
// Each test file uses the part it needs.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use axum::Router;
use glimprouter_engine::{Engine, EngineConfig, EngineHandle};
use glimprouter_models::task::write_random_pair;
use glimprouter_server::serve_app;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::runtime::Runtime;

struct Pair {
    slm: PathBuf,
    llm: PathBuf,
}

/// A random-weight SLM/LLM pair on the task tokenizer, written to a temp
/// dir once per test process.
fn pair() -> &'static Pair {
    static PAIR: OnceLock<Pair> = OnceLock::new();
    PAIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("glimp-server-tests-{}", std::process::id()));
        let (slm, llm) = write_random_pair(&dir, 1024, [1, 2]).expect("random pair");
        Pair { slm, llm }
    })
}

/// A fresh engine on the random pair, with small KV pools.
pub fn engine() -> EngineHandle {
    engine_with(|_| {})
}

/// As `engine`, with `change` applied to the config.
pub fn engine_with(change: impl FnOnce(&mut EngineConfig)) -> EngineHandle {
    let pair = pair();
    let mut config = EngineConfig::for_models(&pair.slm, &pair.llm);
    config.slm.kv_cache_mb = 8;
    config.llm.kv_cache_mb = 8;
    config.max_num_batched_tokens = 512;
    change(&mut config);
    Engine::start(&config, Default::default()).expect("engine starts")
}

/// `app` served on a loopback port by its own runtime, so that synchronous
/// code (a proptest case) can send it requests.
pub struct BlockingServer {
    runtime: Runtime,
    base: String,
    client: reqwest::Client,
}

impl BlockingServer {
    pub fn start(app: Router) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
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
        Self {
            runtime,
            base,
            client: reqwest::Client::new(),
        }
    }

    /// Posts `body` as JSON and returns the status and the whole reply (a
    /// stream read to its end).
    pub fn post(&self, path: &str, body: Vec<u8>) -> (u16, String) {
        self.runtime.block_on(async {
            let response = self
                .client
                .post(format!("{}{path}", self.base))
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
            (status, String::from_utf8_lossy(&bytes).into_owned())
        })
    }

    /// Posts `body` and asserts the answer is a 2xx, or a 4xx with an
    /// OpenAI-shaped error body: never a 5xx, a dropped connection, or a
    /// stream ended by an error event (a 5xx sent after the 200).
    pub fn assert_answered(&self, path: &str, body: &[u8]) {
        let (status, reply) = self.post(path, body.to_vec());
        let sent = String::from_utf8_lossy(body);
        assert!(
            (200..500).contains(&status),
            "{path} {sent} -> {status} {reply}"
        );
        assert!(
            !reply.contains("data: {\"error\""),
            "{path} {sent} -> a stream ended by an error: {reply}"
        );
        if status >= 400 {
            let error: Value = serde_json::from_str(&reply)
                .unwrap_or_else(|e| panic!("{path} {sent} -> {status}, not JSON ({e}): {reply}"));
            assert!(
                error["error"]["message"].is_string() && error["error"]["type"].is_string(),
                "{path} {sent} -> {status}: {reply}"
            );
        }
    }
}
