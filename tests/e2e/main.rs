//! End-to-end: the real `glimp serve` binary with the bundled models and the
//! default config, on a loopback port, talked to over HTTP by the official
//! OpenAI Python client, promtool and the load generator; then SIGTERM.
//!
//! The Python client and promtool are installed by `.ci/run`. Locally, a
//! check whose tool is missing prints why and is skipped; under CI
//! (`CI=true`) a missing tool is a failure.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use glimprouter_loadtest::config::{LoadConfig, LoadMode, PromptSource};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repo root")
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// A missing tool: skip locally, fail in CI.
fn missing(tool: &str) {
    assert!(!in_ci(), "{tool} is required in CI (.ci/run installs it)");
    eprintln!("SKIPPED: {tool} not available");
}

struct Server {
    child: Child,
    port: u16,
}

impl Server {
    /// The bundled pair with the default config.
    fn start() -> Server {
        let root = repo_root();
        let config = root.join("configs/default.toml");
        Server::start_with(&["--config".as_ref(), config.as_os_str()], &root)
    }

    /// `glimp serve ARGS --port P`, run in `cwd`.
    fn start_with(args: &[&std::ffi::OsStr], cwd: &Path) -> Server {
        Server::start_with_env(args, cwd, &[])
    }

    /// As `start_with`, with these environment variables set.
    fn start_with_env(args: &[&std::ffi::OsStr], cwd: &Path, env: &[(&str, &str)]) -> Server {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let mut child = Command::new(env!("CARGO_BIN_EXE_glimp"))
            .arg("serve")
            .args(args)
            .args(["--port", &port.to_string()])
            .current_dir(cwd)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("glimp serve starts");
        // The server logs one line with its address when ready.
        let stderr = child.stderr.take().expect("stderr piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("listening on") {
                    let _ = tx.send(());
                }
                eprintln!("[glimp] {line}");
            }
        });
        rx.recv_timeout(Duration::from_secs(120))
            .expect("server ready within 2 minutes");
        Server { child, port }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

fn python() -> Option<String> {
    let candidates = [
        std::env::var("GLIMP_PYTHON").ok(),
        Some("python3".to_string()),
    ];
    candidates.into_iter().flatten().find(|p| {
        Command::new(p)
            .args(["-c", "import openai"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

fn check_openai_client(server: &Server) {
    let Some(py) = python() else {
        return missing("python3 with the `openai` package");
    };
    let out = Command::new(py)
        .arg(repo_root().join("tests/python/test_openai_client.py"))
        .env("GLIMP_BASE_URL", format!("{}/v1", server.url()))
        .output()
        .expect("python runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{text}");
    assert!(out.status.success(), "openai client checks failed");
}

fn check_promtool(server: &Server) {
    if Command::new("promtool").arg("--version").output().is_err() {
        return missing("promtool");
    }
    let body = reqwest::blocking::get(format!("{}/metrics", server.url()))
        .and_then(|r| r.text())
        .expect("metrics");
    assert!(
        body.contains("glimp:kv_cache_usage_perc"),
        "engine metrics exported"
    );
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs");
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(body.as_bytes())
        .expect("write metrics");
    let out = child.wait_with_output().expect("promtool finishes");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Exit 1 = the exposition does not parse. Exit 3 = lint findings only;
    // we accept exactly the lints our vLLM-compatible names trigger (a
    // `prefix:` namespace, and vLLM's `iteration_tokens_total` histogram).
    assert_ne!(
        out.status.code(),
        Some(1),
        "promtool could not parse /metrics:\n{report}"
    );
    let unexpected: Vec<&str> = report
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter(|l| !l.contains("should not contain ':'") && !l.contains("iteration_tokens_total"))
        .collect();
    assert!(
        unexpected.is_empty(),
        "promtool findings:\n{}",
        unexpected.join("\n")
    );
}

fn check_load(server: &Server) {
    let mut config = LoadConfig::new(server.url());
    config.mode = LoadMode::Closed { concurrency: 4 };
    config.max_requests = Some(12);
    config.max_tokens = Some(24);
    config.ignore_eos = true;
    config.prompts = PromptSource::File {
        path: repo_root().join("benches/task_prompts.jsonl"),
    };
    config.request_timeout = Duration::from_secs(120);
    let report = tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(glimprouter_loadtest::run_load(&config))
        .expect("load run");
    let m = &report.measurements;
    assert_eq!(m.failed, 0, "failures: {:?}", m.failed_by_kind);
    assert_eq!(m.completed, 12);
    assert_eq!(m.requests_without_usage, 0);
    // With ignore_eos every request produces exactly max_tokens tokens, and
    // the usage the server reports must add up to that.
    assert_eq!(m.total_output_tokens, 12 * 24);
    assert!(m.total_text_chunks <= m.total_output_tokens);
    let routing = m.routing.as_ref().expect("glimp reports routing");
    eprintln!(
        "load: {:.1} output tok/s, routing {routing:?}",
        m.output_throughput
    );
}

fn sigterm(server: &mut Server) {
    let pid = server.child.id().to_string();
    let status = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        if let Some(status) = server.child.try_wait().expect("wait") {
            assert!(
                status.success(),
                "glimp serve exits 0 after SIGTERM, got {status}"
            );
            return;
        }
        assert!(
            Instant::now() < deadline,
            "glimp serve did not stop after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn bundled_server_end_to_end() {
    let mut server = Server::start();
    let health = reqwest::blocking::get(format!("{}/health", server.url())).expect("health");
    assert!(health.status().is_success());
    check_load(&server);
    check_openai_client(&server);
    check_promtool(&server);
    sigterm(&mut server);
}

/// `glimp generate` as README shows it: a problem typed on the command line
/// (no trailing blank line, so `--chat`), answered by the bundled pair
/// with the default token budget.
/// The engine thread dies (the test-only fault hook): the request in flight gets a
/// server error in OpenAI's shape, and the process stops listening and exits non-zero
/// within seconds, so a supervisor restarts it.
#[test]
fn a_dead_engine_fails_its_requests_and_exits_non_zero() {
    let root = repo_root();
    let config = root.join("configs/default.toml");
    let mut server = Server::start_with_env(
        &["--config".as_ref(), config.as_os_str()],
        &root,
        &[("GLIMP_TEST_ENGINE_PANIC_AFTER_ITERATIONS", "3")],
    );
    let response = reqwest::blocking::Client::new()
        .post(format!("{}/v1/completions", server.url()))
        .json(&serde_json::json!({"prompt": [5, 6, 7], "max_tokens": 50, "ignore_eos": true}))
        .timeout(Duration::from_secs(30))
        .send()
        .expect("an answer");
    let status = response.status();
    let body: serde_json::Value = response.json().expect("a JSON error body");
    assert!(status.is_server_error(), "{status} {body}");
    assert_eq!(body["error"]["code"], status.as_u16(), "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("stopped")),
        "{body}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(exit) = server.child.try_wait().expect("wait") {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "still running 10 s after the engine died"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(!exit.success(), "{exit}");
    assert!(std::net::TcpStream::connect(("127.0.0.1", server.port)).is_err());
}

#[test]
fn generate_answers_a_typed_problem() {
    let stdout = typed_problem_answer(Command::new(env!("CARGO_BIN_EXE_glimp")));
    assert!(stdout.contains("Answer: 8 1"), "{stdout}");
}

/// `glimp generate` on the bundled pair and a typed problem, run by `cmd`
/// (the binary itself, or an emulator given the binary); its stdout.
fn typed_problem_answer(mut cmd: Command) -> String {
    let root = repo_root();
    let out = cmd
        .args(["generate", "--config"])
        .arg(root.join("configs/default.toml"))
        .args(["--chat", "--no-color", "--prompt"])
        .arg("Problem: start with 1 7 , add 2 5 , subtract 0 9 , add 4 8 . What is the result ?")
        .current_dir(&root)
        .output()
        .expect("glimp generate runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "glimp generate failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A GGUF pair named on the command line, from a folder with no config
/// file: `glimp serve --slm F --llm F` starts on built-in defaults, serves
/// the file's name and context length, and answers as llama.cpp does;
/// `glimp generate` takes the same flags.
#[test]
fn gguf_files_are_served_without_a_config() {
    let Some(file) =
        glimprouter_models::test_files::require(glimprouter_models::test_files::smollm2_q4_1())
    else {
        return;
    };
    let empty = tempfile::tempdir().expect("temp dir");
    let flags = [
        "--slm".as_ref(),
        file.as_os_str(),
        "--llm".as_ref(),
        file.as_os_str(),
    ];
    let server = Server::start_with(&flags, empty.path());
    let models: serde_json::Value = reqwest::blocking::get(format!("{}/v1/models", server.url()))
        .and_then(|r| r.json())
        .expect("models");
    assert_eq!(models["data"][0]["id"], "SmolLM2-135M-Instruct.Q4_1");
    assert_eq!(models["data"][0]["max_model_len"], 8192);
    let body = serde_json::json!({
        "model": "SmolLM2-135M-Instruct.Q4_1",
        "prompt": "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
        "max_tokens": 16, "temperature": 0
    });
    let out: serde_json::Value = reqwest::blocking::Client::new()
        .post(format!("{}/v1/completions", server.url()))
        .json(&body)
        .send()
        .and_then(|r| r.json())
        .expect("completion");
    assert_eq!(
        out["choices"][0]["text"], "The capital of France is Paris.",
        "{out}"
    );

    let out = Command::new(env!("CARGO_BIN_EXE_glimp"))
        .arg("generate")
        .args(flags)
        .args(["--no-color", "--max-tokens", "16", "--prompt"])
        .arg("<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n")
        .current_dir(empty.path())
        .output()
        .expect("glimp generate runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "glimp generate failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("The capital of France is Paris."),
        "{stdout}"
    );
}

/// The binary picks its SIMD kernels at run time (gemm's AVX-512 ones,
/// the Q4_1 AVX2 one): on an emulated CPU without AVX-512 (qemu's
/// Haswell model), `glimp generate` still answers as natively.
#[test]
fn runs_on_a_cpu_without_avx512() {
    if !cfg!(target_arch = "x86_64") {
        return;
    }
    if Command::new("qemu-x86_64")
        .arg("--version")
        .output()
        .is_err()
    {
        return missing("qemu-x86_64 (Debian's qemu-user)");
    }
    let mut qemu = Command::new("qemu-x86_64");
    qemu.args(["-cpu", "Haswell", env!("CARGO_BIN_EXE_glimp")]);
    let stdout = typed_problem_answer(qemu);
    assert!(stdout.contains("Answer: 8 1"), "{stdout}");
}
