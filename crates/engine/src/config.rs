//! The `[engine]` section of the config file.

use std::path::PathBuf;

use glimprouter_core::RoutingParams;
use serde::{Deserialize, Serialize};

/// One model of the pair.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// A local Hugging Face checkpoint folder.
    pub path: PathBuf,
    /// Memory for this model's KV cache; the pool gets as many blocks as fit.
    #[serde(default = "default_kv_cache_mb")]
    pub kv_cache_mb: usize,
    /// Exact pool size in blocks, ignoring `kv_cache_mb` (vLLM's
    /// `num_gpu_blocks_override`; for tests and capacity experiments).
    #[serde(default)]
    pub num_blocks: Option<usize>,
    #[serde(default)]
    pub max_num_batched_tokens: Option<usize>,
    #[serde(default)]
    pub max_num_seqs: Option<usize>,
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
    #[serde(default = "default_block_size")]
    pub block_size: usize,
    /// Tokens per model forward (per model unless a model section overrides it).
    #[serde(default = "default_max_num_batched_tokens")]
    pub max_num_batched_tokens: usize,
    /// Sequences per model batch and running queue.
    #[serde(default = "default_max_num_seqs")]
    pub max_num_seqs: usize,
    /// Longest prompt + completion; defaults to the smaller model's limit.
    #[serde(default)]
    pub max_model_len: Option<usize>,
    #[serde(default = "default_true")]
    pub enable_prefix_caching: bool,
    /// Server-wide routing defaults; requests may override them.
    #[serde(default)]
    pub routing: RoutingParams,
    /// Worker threads for the CPU kernels (0 = `RAYON_NUM_THREADS` if set, else all
    /// cores).
    #[serde(default)]
    pub num_threads: usize,
}

fn default_served_model_name() -> String {
    "glimprouter".to_string()
}
fn default_dtype() -> DTypeName {
    DTypeName::F32
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
fn default_true() -> bool {
    true
}

impl EngineConfig {
    /// A config for a pair of local checkpoints with every other key at its default.
    pub fn for_models(slm: impl Into<PathBuf>, llm: impl Into<PathBuf>) -> Self {
        let section = |path: PathBuf| ModelSection {
            path,
            kv_cache_mb: default_kv_cache_mb(),
            num_blocks: None,
            max_num_batched_tokens: None,
            max_num_seqs: None,
        };
        Self {
            served_model_name: default_served_model_name(),
            slm: section(slm.into()),
            llm: section(llm.into()),
            dtype: default_dtype(),
            block_size: default_block_size(),
            max_num_batched_tokens: default_max_num_batched_tokens(),
            max_num_seqs: default_max_num_seqs(),
            max_model_len: None,
            enable_prefix_caching: true,
            routing: RoutingParams::default(),
            num_threads: 0,
        }
    }
}
