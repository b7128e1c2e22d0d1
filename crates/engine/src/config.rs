//! The `[engine]` section of the config file.

use std::path::PathBuf;

use glimprouter_core::reasoning::ReasoningParser;
use glimprouter_core::RoutingParams;
use serde::{Deserialize, Serialize};

/// Where a model runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// In this process, on a paged KV cache (`path` names the checkpoint).
    #[default]
    Local,
    /// On an external OpenAI-compatible engine (vLLM, SGLang, TGI, llama.cpp's
    /// server, another glimprouter), one `/v1/completions` call per step.
    Remote,
}

/// One model of the pair.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    #[serde(default)]
    pub backend: Backend,
    /// A local Hugging Face checkpoint folder (a local model needs one; for a
    /// remote one it is optional and only its tokenizer is read).
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// Memory for this model's KV cache; the pool gets as many blocks as fit.
    #[serde(default = "default_kv_cache_mb")]
    pub kv_cache_mb: usize,
    /// Exact pool size in blocks, ignoring `kv_cache_mb` (vLLM's
    /// `num_gpu_blocks_override`; for tests and capacity experiments).
    #[serde(default)]
    pub num_blocks: Option<usize>,
    #[serde(default)]
    pub max_num_batched_tokens: Option<usize>,
    /// Most sequences in this model's batch and running queue; for a remote
    /// model, the most steps in flight to it at once.
    #[serde(default)]
    pub max_num_seqs: Option<usize>,
    /// Remote only: how to reach the model.
    #[serde(default)]
    pub remote: Option<RemoteSection>,
}

/// `[engine.llm.remote]`: an external OpenAI-compatible completions endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteSection {
    /// Base URL, e.g. `http://10.0.0.7:8000` (a trailing `/v1` is accepted).
    pub url: String,
    /// Which API the remote speaks for a step: OpenAI's `/v1/completions`
    /// (vLLM, SGLang, TGI, glimprouter) or llama.cpp's native `/completion`,
    /// whose reply says which stop ended the text (its OpenAI endpoint does not).
    #[serde(default)]
    pub api: RemoteApi,
    /// The `model` name the remote serves.
    pub model: String,
    /// Sent as `Authorization: Bearer ...`.
    #[serde(default)]
    pub api_key: Option<String>,
    #[serde(default = "default_connect_timeout_secs")]
    pub connect_timeout_secs: f64,
    /// Whole-call limit for one step.
    #[serde(default = "default_request_timeout_secs")]
    pub request_timeout_secs: f64,
    /// Retries after a timeout, refused connection or 5xx; then the request
    /// fails with 502.
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// First backoff; doubles on every retry.
    #[serde(default = "default_retry_backoff_ms")]
    pub retry_backoff_ms: u64,
    /// The remote model's context length (prompt + completion), if smaller
    /// than the local model's.
    #[serde(default)]
    pub max_model_len: Option<usize>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum RemoteApi {
    #[default]
    #[serde(rename = "openai")]
    OpenAi,
    #[serde(rename = "llama.cpp")]
    LlamaCpp,
}

fn default_connect_timeout_secs() -> f64 {
    2.0
}
fn default_request_timeout_secs() -> f64 {
    120.0
}
fn default_max_retries() -> u32 {
    2
}
fn default_retry_backoff_ms() -> u64 {
    200
}

impl ModelSection {
    /// A local checkpoint with every other key at its default.
    pub fn local(path: impl Into<PathBuf>) -> Self {
        Self {
            backend: Backend::Local,
            path: Some(path.into()),
            kv_cache_mb: default_kv_cache_mb(),
            num_blocks: None,
            max_num_batched_tokens: None,
            max_num_seqs: None,
            remote: None,
        }
    }

    /// A model served at `url` under the name `model`.
    pub fn remote(url: impl Into<String>, model: impl Into<String>) -> Self {
        Self {
            backend: Backend::Remote,
            path: None,
            remote: Some(RemoteSection {
                url: url.into(),
                api: RemoteApi::OpenAi,
                model: model.into(),
                api_key: None,
                connect_timeout_secs: default_connect_timeout_secs(),
                request_timeout_secs: default_request_timeout_secs(),
                max_retries: default_max_retries(),
                retry_backoff_ms: default_retry_backoff_ms(),
                max_model_len: None,
            }),
            ..Self::local(PathBuf::new())
        }
    }

    pub fn is_remote(&self) -> bool {
        self.backend == Backend::Remote
    }
}

fn default_kv_cache_mb() -> usize {
    256
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DTypeName {
    F32,
    Bf16,
    F16,
}

impl DTypeName {
    pub fn to_candle(self) -> candle_core::DType {
        match self {
            DTypeName::F32 => candle_core::DType::F32,
            DTypeName::Bf16 => candle_core::DType::BF16,
            DTypeName::F16 => candle_core::DType::F16,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineConfig {
    /// The `model` name clients use.
    #[serde(default = "default_served_model_name")]
    pub served_model_name: String,
    pub slm: ModelSection,
    pub llm: ModelSection,
    #[serde(default = "default_dtype")]
    pub dtype: DTypeName,
    /// Where local models run: "cpu", or "cuda" / "cuda:N" in a build with
    /// the `cuda` feature (`cargo build -p glimprouter-cli --features cuda`).
    #[serde(default = "default_device")]
    pub device: String,
    #[serde(default = "default_block_size")]
    pub block_size: usize,
    /// Tokens per model forward (per model unless a model section overrides it).
    #[serde(default = "default_max_num_batched_tokens")]
    pub max_num_batched_tokens: usize,
    /// Sequences per model batch and running queue.
    #[serde(default = "default_max_num_seqs")]
    pub max_num_seqs: usize,
    /// Requests that may wait beyond the running ones: a request arriving when
    /// `max_num_seqs + max_waiting_requests` are already in the engine is refused with
    /// 503 and `Retry-After` (SGLang's `max_queued_requests`); `max_num_seqs` is the
    /// larger of the two models' when a model section sets its own.
    #[serde(default = "default_max_waiting_requests")]
    pub max_waiting_requests: usize,
    /// Longest prompt + completion; defaults to the smaller model's limit.
    #[serde(default)]
    pub max_model_len: Option<usize>,
    #[serde(default = "default_true")]
    pub enable_prefix_caching: bool,
    /// Server-wide routing defaults; requests may override them.
    #[serde(default)]
    pub routing: RoutingParams,
    /// The models' reasoning format (vLLM's `--reasoning-parser`: "qwen3",
    /// "deepseek_r1"): the end of thinking becomes the routing's answer
    /// marker, and chat responses carry the thoughts apart from the answer.
    #[serde(default)]
    pub reasoning_parser: Option<ReasoningParser>,
    /// Worker threads for the CPU kernels (0 = `RAYON_NUM_THREADS` if set, else all
    /// cores).
    #[serde(default)]
    pub num_threads: usize,
    /// Skip speculation in iterations that start with more than this many
    /// sequences running or waiting (absent = always speculate when
    /// `speculative_k` > 0).
    #[serde(default)]
    pub speculative_disable_by_batch_size: Option<usize>,
    /// Most tokens one request's prefill or catch-up feeds per iteration
    /// (vLLM's `long_prefill_token_threshold`; absent or 0 = only the
    /// batch budget caps it). Bounds the inter-token latency of running
    /// streams while long prompts arrive, at the cost of their TTFT.
    #[serde(default)]
    pub long_prefill_token_threshold: Option<usize>,
}

fn default_served_model_name() -> String {
    "glimprouter".to_string()
}
fn default_dtype() -> DTypeName {
    DTypeName::F32
}
fn default_device() -> String {
    "cpu".to_string()
}
fn default_block_size() -> usize {
    16
}
fn default_max_num_batched_tokens() -> usize {
    2048
}
fn default_max_num_seqs() -> usize {
    64
}
fn default_max_waiting_requests() -> usize {
    1024
}
fn default_true() -> bool {
    true
}

impl EngineConfig {
    /// A config for a pair of local checkpoints with every other key at its default.
    pub fn for_models(slm: impl Into<PathBuf>, llm: impl Into<PathBuf>) -> Self {
        Self {
            served_model_name: default_served_model_name(),
            slm: ModelSection::local(slm),
            llm: ModelSection::local(llm),
            dtype: default_dtype(),
            device: default_device(),
            block_size: default_block_size(),
            max_num_batched_tokens: default_max_num_batched_tokens(),
            max_num_seqs: default_max_num_seqs(),
            max_waiting_requests: default_max_waiting_requests(),
            max_model_len: None,
            enable_prefix_caching: true,
            routing: RoutingParams::default(),
            reasoning_parser: None,
            num_threads: 0,
            speculative_disable_by_batch_size: None,
            long_prefill_token_threshold: None,
        }
    }

    /// Checks what serde cannot: each model's backend has what it needs, and
    /// the routing defaults are possible with remote tiers.
    pub fn validate(&self) -> Result<(), String> {
        for (role, section) in [("slm", &self.slm), ("llm", &self.llm)] {
            match section.backend {
                Backend::Local => {
                    if section.path.is_none() {
                        return Err(format!("engine.{role}: a local model needs `path`"));
                    }
                    if section.remote.is_some() {
                        return Err(format!(
                            "engine.{role}: `remote` settings need `backend = \"remote\"`"
                        ));
                    }
                }
                Backend::Remote => {
                    let Some(remote) = &section.remote else {
                        return Err(format!(
                            "engine.{role}: `backend = \"remote\"` needs [engine.{role}.remote] with `url` and `model`"
                        ));
                    };
                    if role == "slm" && remote.api == RemoteApi::LlamaCpp {
                        return Err(
                            "engine.slm.remote.api = \"llama.cpp\" is not supported: the SLM's glimpse reads OpenAI-style top logprobs; serve the SLM through llama-server's OpenAI API (api = \"openai\") or locally".into(),
                        );
                    }
                    // TLS is not built in: terminate it at a sidecar proxy.
                    if !remote.url.starts_with("http://") {
                        return Err(format!(
                            "engine.{role}.remote.url must start with http:// (no TLS client is built in), got {:?}",
                            remote.url
                        ));
                    }
                }
            }
        }
        if self.slm.is_remote()
            && self.llm.is_remote()
            && self.slm.path.is_none()
            && self.llm.path.is_none()
        {
            return Err(
                "with both models remote, one of engine.slm / engine.llm needs `path`: \
                        a local folder with the shared tokenizer"
                    .into(),
            );
        }
        if let (Some(parser), Some(marker)) = (self.reasoning_parser, &self.routing.answer_marker) {
            if marker != parser.end() {
                return Err(format!(
                    "engine.routing.answer_marker = {marker:?} contradicts engine.reasoning_parser, whose thinking ends at {:?}; leave the marker out",
                    parser.end()
                ));
            }
        }
        // The defaults every request starts from must pass the request rules.
        crate::validate::check_routing(&self.default_routing(), self.remote_tiers())
            .map_err(|e| format!("engine.{}: {}", e.param, e.message))
    }

    /// The routing every request starts from: `routing`, with the end of
    /// thinking of the reasoning parser as the answer marker.
    pub fn default_routing(&self) -> RoutingParams {
        let mut routing = self.routing.clone();
        if let Some(parser) = self.reasoning_parser {
            routing.answer_marker = Some(parser.end().to_string());
        }
        routing
    }

    /// The candle device `device` names.
    pub fn candle_device(&self) -> Result<candle_core::Device, String> {
        glimprouter_models::device::parse_device(&self.device)
            .map_err(|e| format!("engine.device {e}"))
    }

    /// Whether each model (by `Model::idx`) is remote.
    pub fn remote_tiers(&self) -> [bool; 2] {
        [self.slm.is_remote(), self.llm.is_remote()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> Result<EngineConfig, String> {
        let c: EngineConfig = toml::from_str(toml_text).map_err(|e| e.to_string())?;
        c.validate()?;
        Ok(c)
    }

    const LOCAL_SLM: &str = "[slm]\npath = \"s\"\n";

    #[test]
    fn a_remote_llm_reads_its_endpoint_and_defaults_the_rest() {
        let c = parse(&format!(
            "{LOCAL_SLM}[routing]\nspeculative_k = 0\n[llm]\nbackend = \"remote\"\n\
             [llm.remote]\nurl = \"http://10.0.0.7:8000/v1\"\nmodel = \"big\"\napi_key = \"k\"\n"
        ))
        .unwrap();
        assert_eq!(c.remote_tiers(), [false, true]);
        let r = c.llm.remote.unwrap();
        assert_eq!(
            (r.url.as_str(), r.model.as_str()),
            ("http://10.0.0.7:8000/v1", "big")
        );
        assert_eq!((r.max_retries, r.retry_backoff_ms), (2, 200));
    }

    #[test]
    fn routing_defaults_every_request_would_refuse_are_refused_at_start() {
        let local = "[slm]\npath = \"s\"\n[llm]\npath = \"l\"\n";
        for (routing, expected) in [
            ("answer_marker = \"\"", "engine.routing.answer_marker"),
            ("delimiter = \"\"", "engine.routing.delimiter"),
            ("random_p = 1.5", "engine.routing.random_p"),
            ("speculative_k = 99", "engine.routing.speculative_k"),
            ("max_steps = 0", "engine.routing.max_steps"),
        ] {
            let err = parse(&format!("{local}[routing]\n{routing}\n")).unwrap_err();
            assert!(err.starts_with(expected), "{routing}: {err}");
        }
        parse(&format!("{local}[routing]\nanswer_marker = \"Answer:\"\n")).unwrap();
    }

    #[test]
    fn the_device_is_cpu_or_a_cuda_ordinal() {
        let mut c = EngineConfig::for_models("s", "l");
        assert!(c.candle_device().unwrap().is_cpu());
        c.device = "gpu".into();
        assert!(c
            .candle_device()
            .unwrap_err()
            .starts_with("engine.device must be"));
        c.device = "cuda:1".into();
        if !candle_core::utils::cuda_is_available() {
            let err = c.candle_device().unwrap_err();
            assert!(err.contains("--features cuda"), "{err}");
        }
    }

    #[test]
    fn impossible_backends_are_refused_with_the_key_to_fix() {
        let cases = [
            ("[llm]\nbackend = \"remote\"\n", "needs [engine.llm.remote]"),
            ("[llm]\nkv_cache_mb = 8\n", "a local model needs `path`"),
            (
                "[llm]\npath = \"l\"\n[llm.remote]\nurl = \"http://x\"\nmodel = \"m\"\n",
                "need `backend = \"remote\"`",
            ),
            (
                "[llm]\nbackend = \"remote\"\n[llm.remote]\nurl = \"https://x\"\nmodel = \"m\"\n",
                "http://",
            ),
            (
                "[llm]\nbackend = \"remote\"\n[llm.remote]\nurl = \"http://x\"\nmodel = \"m\"\n",
                "speculative decoding needs both models local",
            ),
        ];
        for (llm, expected) in cases {
            let text = format!("{LOCAL_SLM}[routing]\nspeculative_k = 2\n{llm}");
            let err = parse(&text).unwrap_err();
            assert!(err.contains(expected), "{llm:?}: {err}");
        }
        let both_remote = "[slm]\nbackend = \"remote\"\n\
                           [slm.remote]\nurl = \"http://x\"\nmodel = \"m\"\n\
                           [llm]\nbackend = \"remote\"\n\
                           [llm.remote]\nurl = \"http://y\"\nmodel = \"n\"\n\
                           [routing]\nspeculative_k = 0\n";
        let err = parse(both_remote).unwrap_err();
        assert!(err.contains("needs `path`"), "{err}");
        let with_tokenizer = both_remote.replace("[llm]\n", "[llm]\npath = \"l\"\n");
        parse(&with_tokenizer).unwrap();
        let judged =
            with_tokenizer.replace("[routing]\n", "[routing]\npolicy = \"step-entropy\"\n");
        let err = parse(&judged).unwrap_err();
        assert!(err.contains("needs the SLM local"), "{err}");
    }
}
