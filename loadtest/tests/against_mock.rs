//! run_load against the in-test mock server: the counters must add up and
//! the statistics must match the per-request timings.
//!
//! TODO(lead): the same checks against the real glimp server belong in
//! tests/ once it exists; `run_load(&LoadConfig::new(url))` works against
//! any URL.

mod mock_openai;

use std::time::{Duration, Instant};

use glimprouter_loadtest::client::FailureKind;
use glimprouter_loadtest::report::Report;
use glimprouter_loadtest::{run_load, Endpoint, LoadConfig, LoadError, LoadMode, PromptSource};
use mock_openai::{MockConfig, MockStats, MODEL};
use serde_json::json;

fn config(url: &str, concurrency: usize, requests: u64, max_tokens: u32) -> LoadConfig {
    let mut c = LoadConfig::new(url);
    c.model = Some("m".into());
    c.mode = LoadMode::Closed { concurrency };
    c.max_requests = Some(requests);
    c.max_tokens = Some(max_tokens);
    c.prompts = PromptSource::Random { input_len: 5 };
    c.request_timeout = Duration::from_secs(20);
    c.warmup_requests = 0;
    c
}

/// Nearest-rank percentile, the definition the report uses.
fn nearest_rank(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank - 1]
}

fn assert_close(got: f64, want: f64, what: &str) {
    // Percentiles keep 3 significant digits; add a microsecond for rounding.
    let tol = want.abs() * 1e-3 + 1e-3;
    assert!((got - want).abs() <= tol, "{what}: got {got}, want {want}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_loop_counts_add_up_and_stats_match_timings() {
    let mock = mock_openai::start(MockConfig {
        first_token_delay: Duration::from_millis(20),
        token_delay: Duration::from_millis(2),
        ..Default::default()
    })
    .await;
    let mut cfg = config(&mock.url, 4, 20, 8);
    cfg.warmup_requests = 2;
    cfg.save_detailed = true;
    cfg.percentiles = vec![50.0, 90.0, 99.0];
    let r = run_load(&cfg).await.expect("run");
    let m = &r.measurements;

    assert_eq!((m.completed, m.failed), (20, 0));
    assert!(m.failed_by_kind.is_empty());
    // One test request, two warm-ups, twenty measured.
    assert_eq!(MockStats::get(&mock.stats.arrivals), 23);
    // Tokens received = tokens reported by usage = tokens the server sent.
    assert_eq!(m.total_output_tokens, 160);
    assert_eq!(m.total_text_chunks, 160);
    assert_eq!(MockStats::get(&mock.stats.token_chunks), 23 * 8);
    assert_eq!(MockStats::get(&mock.stats.usage_completion_tokens), 23 * 8);
    assert_eq!(m.requests_without_usage, 0);
    assert_eq!(m.total_input_tokens, 20 * 5);
    assert!(MockStats::get(&mock.stats.max_in_flight) <= 4);

    assert_eq!(m.request_throughput, 20.0 / m.duration_s);
    assert_eq!(m.output_throughput, 160.0 / m.duration_s);
    assert_eq!(m.total_token_throughput, 260.0 / m.duration_s);
    assert!(m.peak_output_throughput > 0.0 && m.peak_output_throughput <= 160.0);

    assert_eq!((m.ttft.count, m.e2el.count, m.tpot.count), (20, 20, 20));
    assert_eq!(m.itl.count, 20 * 7);
    assert!(
        m.ttft.min_ms >= 20.0,
        "the server waits 20 ms: {}",
        m.ttft.min_ms
    );
    assert!(m.e2el.min_ms >= 20.0 + 7.0 * 2.0, "{}", m.e2el.min_ms);
    assert!(m.routing.is_none(), "the mock sends no routing object here");

    // The summary statistics follow from the per-request timings.
    let details = r.details.as_ref().expect("details");
    assert_eq!(details.len(), 20);
    assert!(details.windows(2).all(|w| w[0].start_ms <= w[1].start_ms));
    let mut itl: Vec<f64> = details.iter().flat_map(|d| d.itl_ms.clone()).collect();
    itl.sort_by(f64::total_cmp);
    let mut ttft: Vec<f64> = details.iter().map(|d| d.ttft_ms).collect();
    ttft.sort_by(f64::total_cmp);
    let mut tpot: Vec<f64> = details
        .iter()
        .map(|d| (d.latency_ms - d.ttft_ms) / (d.output_tokens - 1) as f64)
        .collect();
    tpot.sort_by(f64::total_cmp);
    for p in [50.0, 90.0, 99.0] {
        assert_close(
            m.itl.percentile(p).unwrap(),
            nearest_rank(&itl, p),
            &format!("ITL p{p}"),
        );
        assert_close(
            m.ttft.percentile(p).unwrap(),
            nearest_rank(&ttft, p),
            &format!("TTFT p{p}"),
        );
        assert_close(
            m.tpot.percentile(p).unwrap(),
            nearest_rank(&tpot, p),
            &format!("TPOT p{p}"),
        );
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    assert_close(m.itl.mean_ms, mean(&itl), "ITL mean");
    assert_close(m.ttft.mean_ms, mean(&ttft), "TTFT mean");
    assert!(
        m.itl.mean_ms >= 1.5,
        "the server waits 2 ms per token: {}",
        m.itl.mean_ms
    );

    for body in mock.stats.bodies() {
        assert_eq!(body["model"], "m");
        assert_eq!(body["stream"], true);
        assert_eq!(body["stream_options"]["include_usage"], true);
        assert_eq!(body["max_tokens"], 8);
        assert_eq!(body["prompt"].as_str().unwrap().split(' ').count(), 5);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_objects_are_aggregated() {
    let mock = mock_openai::start(MockConfig {
        routing: Some(json!({"steps": 4, "llm_steps": 1, "llm_step_ratio": 0.25,
            "slm_tokens": 6, "llm_tokens": 2, "draft_tokens": 4, "accepted_draft_tokens": 3})),
        ..Default::default()
    })
    .await;
    let r = run_load(&config(&mock.url, 3, 10, 8)).await.expect("run");
    let routing = r.measurements.routing.expect("routing summary");
    assert_eq!(routing.requests, 10);
    assert_eq!(routing.totals["steps"], 40.0);
    assert_eq!(routing.totals["llm_steps"], 10.0);
    assert_eq!(routing.totals["draft_tokens"], 40.0);
    assert_eq!(routing.llm_step_ratio, Some(0.25));
    assert_eq!(routing.mean_ratios["llm_step_ratio"], 0.25);
    assert_eq!(routing.llm_token_ratio, Some(0.25));
    assert_eq!(routing.draft_acceptance_rate, Some(0.75));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_counted_by_kind() {
    // Arrival n fails when n % 3 == 2; the test request is n = 0.
    let mock = mock_openai::start(MockConfig {
        fail_every: Some(3),
        ..Default::default()
    })
    .await;
    let r = run_load(&config(&mock.url, 3, 12, 4)).await.expect("run");
    let m = &r.measurements;
    // Measured arrivals 1..=12: 2, 5, 8, 11 fail.
    assert_eq!((m.completed, m.failed), (8, 4));
    assert_eq!(m.failed_by_kind.len(), 1);
    assert_eq!(m.failed_by_kind["http_503"], 4);
    assert!(
        m.error_samples[0].contains("mock overload"),
        "{:?}",
        m.error_samples
    );
    assert_eq!(m.total_output_tokens, 8 * 4);
    assert_eq!(m.e2el.count, 8, "failures have no latency sample");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_sends_at_the_rate_and_respects_the_cap() {
    let mock = mock_openai::start(MockConfig {
        first_token_delay: Duration::from_millis(30),
        ..Default::default()
    })
    .await;
    let mut cfg = config(&mock.url, 1, 30, 4);
    cfg.mode = LoadMode::Open {
        rate: 200.0,
        burstiness: 1.0,
        max_concurrency: Some(3),
    };
    let r = run_load(&cfg).await.expect("run");
    assert_eq!(r.measurements.completed, 30);
    assert_eq!(r.measurements.total_output_tokens, 120);
    let max = MockStats::get(&mock.stats.max_in_flight);
    assert!(
        (2..=3).contains(&max),
        "arrivals overlap but stay capped: {max}"
    );

    // Uncapped, requests arriving every ~5 ms overlap 30 ms responses.
    let mock = mock_openai::start(MockConfig {
        first_token_delay: Duration::from_millis(30),
        ..Default::default()
    })
    .await;
    cfg.base_url = mock.url.clone();
    cfg.mode = LoadMode::Open {
        rate: 200.0,
        burstiness: 1.0,
        max_concurrency: None,
    };
    let r = run_load(&cfg).await.expect("run");
    assert_eq!(r.measurements.completed, 30);
    assert!(MockStats::get(&mock.stats.max_in_flight) > 3);

    // An infinite rate sends everything at once.
    let mock = mock_openai::start(MockConfig {
        first_token_delay: Duration::from_millis(300),
        ..Default::default()
    })
    .await;
    cfg.base_url = mock.url.clone();
    cfg.max_requests = Some(10);
    cfg.mode = LoadMode::Open {
        rate: f64::INFINITY,
        burstiness: 1.0,
        max_concurrency: None,
    };
    let r = run_load(&cfg).await.expect("run");
    assert_eq!(r.measurements.completed, 10);
    assert_eq!(MockStats::get(&mock.stats.max_in_flight), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duration_bounds_a_run_without_a_request_count() {
    let mock = mock_openai::start(MockConfig {
        token_delay: Duration::from_millis(5),
        ..Default::default()
    })
    .await;
    let mut cfg = config(&mock.url, 2, 1, 4);
    cfg.max_requests = None;
    cfg.max_duration = Some(Duration::from_millis(300));
    let t = Instant::now();
    let r = run_load(&cfg).await.expect("run");
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    let m = &r.measurements;
    assert!(
        m.completed >= 4,
        "~20 ms requests for 300 ms on 2 workers: {}",
        m.completed
    );
    assert!(
        m.duration_s >= 0.3 && m.duration_s < 1.5,
        "{}",
        m.duration_s
    );
    assert_eq!(m.total_output_tokens, m.completed * 4);

    // Open loop: arrivals scheduled after the duration are not sent.
    cfg.mode = LoadMode::Open {
        rate: 50.0,
        burstiness: 1.0,
        max_concurrency: None,
    };
    let t = Instant::now();
    let r = run_load(&cfg).await.expect("run");
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    let sent = r.measurements.completed + r.measurements.failed;
    // ~15 expected at 50/s for 0.3 s; Poisson spread, seeded.
    assert!((3..=40).contains(&sent), "{sent}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_test_request_stops_the_run() {
    // Too slow for the timeout.
    let mock = mock_openai::start(MockConfig {
        first_token_delay: Duration::from_secs(5),
        ..Default::default()
    })
    .await;
    let mut cfg = config(&mock.url, 1, 5, 4);
    cfg.request_timeout = Duration::from_millis(200);
    let t = Instant::now();
    let err = run_load(&cfg).await.unwrap_err();
    assert!(
        matches!(
            err,
            LoadError::TestRequest {
                kind: FailureKind::Timeout,
                ..
            }
        ),
        "{err}"
    );
    assert!(t.elapsed() < Duration::from_secs(3));
    assert_eq!(
        MockStats::get(&mock.stats.arrivals),
        1,
        "nothing sent after it"
    );

    // The server refuses every request.
    let mock = mock_openai::start(MockConfig {
        fail_every: Some(1),
        ..Default::default()
    })
    .await;
    let err = run_load(&config(&mock.url, 1, 5, 4)).await.unwrap_err();
    assert!(
        matches!(
            err,
            LoadError::TestRequest {
                kind: FailureKind::Http(503),
                ..
            }
        ),
        "{err}"
    );

    // Nothing listens on the port.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let err = run_load(&config(&url, 1, 5, 4)).await.unwrap_err();
    assert!(
        matches!(
            err,
            LoadError::TestRequest {
                kind: FailureKind::Connect,
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_prompts_file_extra_body_and_model_discovery() {
    let mock = mock_openai::start(MockConfig::default()).await;
    let dir = std::env::temp_dir().join(format!("glimp-loadtest-it-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("chat.jsonl");
    std::fs::write(
        &path,
        "{\"messages\": [{\"role\": \"user\", \"content\": \"one two three\"}], \"max_tokens\": 3}\n\
         {\"prompt\": \"four five\", \"max_tokens\": 5}\n",
    )
    .unwrap();
    let mut cfg = config(&mock.url, 2, 6, 1);
    cfg.endpoint = Endpoint::Chat;
    cfg.model = None;
    cfg.max_tokens = None;
    cfg.prompts = PromptSource::File { path };
    let extra = json!({"routing": {"policy": "glimp", "tau": 0.5, "speculative_k": 4}});
    cfg.extra_body = extra.as_object().cloned();
    let r = run_load(&cfg).await.expect("run");
    let m = &r.measurements;
    assert_eq!(r.settings.model, MODEL, "first model of /v1/models");
    assert_eq!(m.completed, 6);
    // Requests alternate the two prompts: 3 x (3 + 5) tokens, 3 x (3 + 2) words.
    assert_eq!(m.total_output_tokens, 24);
    assert_eq!(m.total_text_chunks, 24);
    assert_eq!(m.total_input_tokens, 15);
    let bodies = mock.stats.bodies();
    assert_eq!(bodies.len(), 7);
    for b in &bodies {
        assert_eq!(b["model"], MODEL);
        assert_eq!(b["routing"], extra["routing"]);
        assert!(b["messages"].is_array() && b.get("prompt").is_none());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_usage_falls_back_to_chunks_and_api_key_is_sent() {
    let mock = mock_openai::start(MockConfig {
        send_usage: false,
        api_key: Some("secret".into()),
        ..Default::default()
    })
    .await;
    let mut cfg = config(&mock.url, 2, 4, 6);
    let err = run_load(&cfg).await.unwrap_err();
    assert!(
        matches!(
            err,
            LoadError::TestRequest {
                kind: FailureKind::Http(401),
                ..
            }
        ),
        "{err}"
    );

    cfg.api_key = Some("secret".into());
    let r = run_load(&cfg).await.expect("run");
    let m = &r.measurements;
    assert_eq!(m.completed, 4);
    assert_eq!(m.requests_without_usage, 4);
    assert_eq!(m.total_output_tokens, 24);
    assert_eq!(m.total_input_tokens, 0, "no usage, no prompt token count");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_writes_json_compares_and_tabulates() {
    let mock = mock_openai::start(MockConfig::default()).await;
    let dir = std::env::temp_dir().join(format!("glimp-loadtest-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let exe = env!("CARGO_BIN_EXE_glimp-loadtest");
    let run = |args: Vec<String>| async move {
        let out = tokio::process::Command::new(exe)
            .args(&args)
            .output()
            .await
            .expect("spawn glimp-loadtest");
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "{args:?}\n{stdout}\n{stderr}");
        stdout
    };
    let mut files = Vec::new();
    for (c, n) in [(1, 4), (2, 6)] {
        let json = dir.join(format!("c{c}.json"));
        let stdout = run(vec![
            "--url".into(),
            mock.url.clone(),
            "--concurrency".into(),
            c.to_string(),
            "--requests".into(),
            n.to_string(),
            "--max-tokens".into(),
            "3".into(),
            "--random-input-len".into(),
            "4".into(),
            "--extra-body".into(),
            r#"{"routing":{"policy":"llm"}}"#.into(),
            "--label".into(),
            format!("llm c={c}"),
            "--no-progress".into(),
            "--json".into(),
            json.display().to_string(),
        ])
        .await;
        assert!(
            stdout.contains("Serving Benchmark Result: llm c="),
            "{stdout}"
        );
        let report = Report::read_json(&json).expect("report");
        assert_eq!(report.measurements.completed, n);
        assert_eq!(report.measurements.total_output_tokens, 3 * n);
        assert_eq!(report.settings.model, MODEL);
        files.push(json.display().to_string());
    }
    let text = run(vec!["compare".into(), files[0].clone(), files[1].clone()]).await;
    assert!(
        text.lines().any(|l| l.starts_with("output_throughput")),
        "{text}"
    );
    let ratio = run(vec![
        "compare".into(),
        files[0].clone(),
        files[1].clone(),
        "--metric".into(),
        "completed".into(),
    ])
    .await;
    assert_eq!(ratio.trim().parse::<f64>().unwrap(), 1.5);
    let table = run(vec!["table".into(), files[0].clone(), files[1].clone()]).await;
    assert_eq!(table.lines().count(), 4, "{table}");
    assert!(table.contains("| llm c=2 | c=2 | 6 | 0 |"), "{table}");
}
