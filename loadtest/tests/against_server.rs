//! run_load against a server that is already running on this machine (glimp
//! or any OpenAI-compatible one). Ignored by default; run with
//!
//! ```sh
//! GLIMP_LOADTEST_URL=http://127.0.0.1:8765 \
//!     cargo test -p glimprouter-loadtest --test against_server -- --ignored
//! ```
//!
//! optionally with `GLIMP_LOADTEST_EXTRA_BODY='{"routing": {"policy": "glimp"}}'`.
//! TODO(lead): an end-to-end test in tests/ that starts the real glimp server
//! should make the same checks.

use std::time::Duration;

use glimprouter_loadtest::request::parse_extra_body;
use glimprouter_loadtest::{run_load, LoadConfig, LoadMode, PromptSource};

const REQUESTS: u64 = 16;
const MAX_TOKENS: u32 = 16;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a running server: set GLIMP_LOADTEST_URL"]
async fn counters_add_up_against_a_running_server() {
    let url = std::env::var("GLIMP_LOADTEST_URL").expect("set GLIMP_LOADTEST_URL");
    let loopback = ["http://127.0.0.1:", "http://localhost:", "http://[::1]:"];
    assert!(
        loopback.iter().any(|p| url.starts_with(p)),
        "this test only talks to a loopback server, got {url}"
    );
    let mut cfg = LoadConfig::new(url);
    cfg.mode = LoadMode::Closed { concurrency: 4 };
    cfg.max_requests = Some(REQUESTS);
    cfg.max_tokens = Some(MAX_TOKENS);
    cfg.ignore_eos = true;
    cfg.prompts = PromptSource::Random { input_len: 16 };
    cfg.request_timeout = Duration::from_secs(120);
    if let Ok(extra) = std::env::var("GLIMP_LOADTEST_EXTRA_BODY") {
        cfg.extra_body = Some(parse_extra_body(&extra).expect("extra body"));
    }
    let report = run_load(&cfg).await.expect("run");
    println!("{}", report.to_table());
    let m = &report.measurements;
    assert_eq!(
        (m.completed, m.failed),
        (REQUESTS, 0),
        "{:?}",
        m.error_samples
    );
    assert_eq!(m.requests_without_usage, 0, "the server must stream usage");
    // ignore_eos: every request generates exactly max_tokens, as usage says.
    assert_eq!(m.total_output_tokens, REQUESTS * MAX_TOKENS as u64);
    // Each text chunk carries at least one token.
    assert!(m.total_text_chunks >= m.completed);
    assert!(m.total_text_chunks <= m.total_output_tokens);
    assert_eq!(m.itl.count, m.total_text_chunks - m.completed);
    assert_eq!(m.ttft.count, REQUESTS);
    assert!(m.total_input_tokens > 0);
}
