//! `config.json` of a Hugging Face decoder-only checkpoint, and what follows from it.

use std::path::Path;

use candle_core::DType;
use serde::{Deserialize, Serialize};

use crate::error::{read_json, ModelError, Result};

/// The model families this crate implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    Llama,
    Mistral,
    Qwen2,
    Qwen3,
}

impl Arch {
    pub const ALL: [Arch; 4] = [Arch::Llama, Arch::Mistral, Arch::Qwen2, Arch::Qwen3];

    /// The `architectures[0]` string Hugging Face writes for this family.
    pub fn hf_architecture(self) -> &'static str {
        match self {
            Arch::Llama => "LlamaForCausalLM",
            Arch::Mistral => "MistralForCausalLM",
            Arch::Qwen2 => "Qwen2ForCausalLM",
            Arch::Qwen3 => "Qwen3ForCausalLM",
        }
    }

    /// The `model_type` string Hugging Face writes for this family.
    pub fn model_type(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Mistral => "mistral",
            Arch::Qwen2 => "qwen2",
            Arch::Qwen3 => "qwen3",
        }
    }

    fn from_hf(name: &str) -> Option<Arch> {
        Arch::ALL
            .into_iter()
            .find(|a| a.hf_architecture() == name || a.model_type() == name)
    }
}

impl std::str::FromStr for Arch {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Arch> {
        Arch::from_hf(&s.to_ascii_lowercase())
            .or_else(|| Arch::from_hf(s))
            .ok_or_else(|| ModelError::UnsupportedArchitecture(s.to_string()))
    }
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.model_type())
    }
}

/// RoPE frequency scaling variants we implement.
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    None,
    /// Positions divided by `factor` (HF "linear").
    Linear {
        factor: f64,
    },
    /// Llama 3.x frequency-dependent scaling (HF "llama3").
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: usize,
    },
}

/// The fields of `config.json` this crate reads (unknown fields are ignored).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct RawConfig {
    #[serde(default)]
    pub architectures: Vec<String>,
    #[serde(default)]
    pub model_type: Option<String>,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    #[serde(default)]
    pub head_dim: Option<usize>,
    #[serde(default = "default_max_position")]
    pub max_position_embeddings: usize,
    #[serde(default = "default_rms_eps")]
    pub rms_norm_eps: f64,
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f64,
    #[serde(default)]
    pub rope_scaling: Option<serde_json::Value>,
    #[serde(default)]
    pub tie_word_embeddings: Option<bool>,
    #[serde(default)]
    pub attention_bias: Option<bool>,
    #[serde(default)]
    pub mlp_bias: Option<bool>,
    #[serde(default)]
    pub hidden_act: Option<String>,
    #[serde(default)]
    pub sliding_window: Option<usize>,
    #[serde(default)]
    pub use_sliding_window: Option<bool>,
}

fn default_max_position() -> usize {
    2048
}
fn default_rms_eps() -> f64 {
    1e-6
}
fn default_rope_theta() -> f64 {
    10_000.0
}

/// A parsed and validated model configuration.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    pub arch: Arch,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub max_position_embeddings: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: RopeScaling,
    pub tie_word_embeddings: bool,
    /// Bias on q/k/v projections (always for Qwen2, `attention_bias` otherwise).
    pub qkv_bias: bool,
    /// Bias on the output projection (`attention_bias` for Llama/Qwen3).
    pub o_bias: bool,
    /// Per-head RMSNorm of q and k before RoPE (Qwen3).
    pub qk_norm: bool,
    /// Mistral's sliding attention window (tokens attended, the current one included).
    pub sliding_window: Option<usize>,
    pub raw: RawConfig,
}

impl ModelConfig {
    /// The config of a checkpoint: a `.gguf` file's metadata, or a folder's
    /// `config.json`.
    pub fn load(path: &Path) -> Result<ModelConfig> {
        if crate::gguf::is_gguf(path) {
            return crate::gguf::GgufFile::open(path)?.config();
        }
        ModelConfig::from_dir(path)
    }

    /// Reads `dir/config.json`.
    pub fn from_dir(dir: &Path) -> Result<ModelConfig> {
        let raw: RawConfig = read_json(&dir.join("config.json"))?;
        ModelConfig::from_raw(raw)
    }

    /// Parses the text of a `config.json`.
    pub fn from_json(text: &str) -> Result<ModelConfig> {
        let raw: RawConfig = serde_json::from_str(text).map_err(|e| ModelError::Parse {
            path: "config.json".into(),
            message: e.to_string(),
        })?;
        ModelConfig::from_raw(raw)
    }

    pub fn from_raw(raw: RawConfig) -> Result<ModelConfig> {
        let arch = match (raw.architectures.first(), &raw.model_type) {
            (Some(a), _) => Arch::from_hf(a),
            (None, Some(t)) => Arch::from_hf(t),
            (None, None) => None,
        }
        .ok_or_else(|| {
            let name = raw
                .architectures
                .first()
                .cloned()
                .or_else(|| raw.model_type.clone())
                .unwrap_or_else(|| "<none>".to_string());
            ModelError::UnsupportedArchitecture(name)
        })?;

        let heads = raw.num_attention_heads;
        let kv_heads = raw.num_key_value_heads.unwrap_or(heads);
        if heads == 0 || kv_heads == 0 || !heads.is_multiple_of(kv_heads) {
            return Err(ModelError::UnsupportedConfig(format!(
                "num_attention_heads {heads} must be a positive multiple of num_key_value_heads {kv_heads}"
            )));
        }
        let head_dim = match raw.head_dim {
            Some(d) => d,
            None if raw.hidden_size.is_multiple_of(heads) => raw.hidden_size / heads,
            None => {
                return Err(ModelError::UnsupportedConfig(format!(
                    "hidden_size {} is not divisible by num_attention_heads {heads}",
                    raw.hidden_size
                )))
            }
        };
        if head_dim == 0 || head_dim % 2 != 0 {
            return Err(ModelError::UnsupportedConfig(format!(
                "head_dim {head_dim} must be even"
            )));
        }
        if raw.mlp_bias == Some(true) {
            return Err(ModelError::UnsupportedConfig("mlp_bias".into()));
        }
        match raw.hidden_act.as_deref() {
            None | Some("silu") | Some("swish") => {}
            Some(other) => {
                return Err(ModelError::UnsupportedConfig(format!(
                    "hidden_act {other:?} (only silu)"
                )))
            }
        }
        let sliding_window = match arch {
            Arch::Mistral => raw
                .sliding_window
                .filter(|&w| w < raw.max_position_embeddings),
            Arch::Qwen2 | Arch::Qwen3 if raw.use_sliding_window == Some(true) => {
                return Err(ModelError::UnsupportedConfig(
                    "use_sliding_window (Qwen per-layer sliding windows)".into(),
                ))
            }
            _ => None,
        };
        let attention_bias = raw.attention_bias.unwrap_or(false);
        let (qkv_bias, o_bias) = match arch {
            Arch::Qwen2 => (true, false),
            Arch::Mistral => (false, false),
            Arch::Llama | Arch::Qwen3 => (attention_bias, attention_bias),
        };
        Ok(ModelConfig {
            arch,
            vocab_size: raw.vocab_size,
            hidden_size: raw.hidden_size,
            intermediate_size: raw.intermediate_size,
            num_hidden_layers: raw.num_hidden_layers,
            num_attention_heads: heads,
            num_key_value_heads: kv_heads,
            head_dim,
            max_position_embeddings: raw.max_position_embeddings,
            rms_norm_eps: raw.rms_norm_eps,
            rope_theta: raw.rope_theta,
            rope_scaling: parse_rope_scaling(raw.rope_scaling.as_ref())?,
            tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(false),
            qkv_bias,
            o_bias,
            qk_norm: arch == Arch::Qwen3,
            sliding_window,
            raw,
        })
    }

    /// Bytes of KV cache one block of `block_size` positions costs (all layers, K and V).
    pub fn kv_bytes_per_block(&self, block_size: usize, dtype: DType) -> usize {
        2 * self.num_hidden_layers
            * block_size
            * self.num_key_value_heads
            * self.head_dim
            * dtype.size_in_bytes()
    }

    /// Number of weights (embeddings counted once when tied).
    pub fn num_params(&self) -> usize {
        let (h, i, d) = (self.hidden_size, self.intermediate_size, self.head_dim);
        let q = self.num_attention_heads * d;
        let kv = self.num_key_value_heads * d;
        let attn = h * q + 2 * h * kv + q * h;
        let mlp = 3 * h * i;
        let per_layer = attn + mlp + 2 * h;
        let embed = self.vocab_size * h;
        let head = if self.tie_word_embeddings { 0 } else { embed };
        self.num_hidden_layers * per_layer + embed + head + h
    }
}

fn parse_rope_scaling(value: Option<&serde_json::Value>) -> Result<RopeScaling> {
    let Some(obj) = value.and_then(|v| v.as_object()) else {
        return Ok(RopeScaling::None);
    };
    let kind = obj
        .get("rope_type")
        .or_else(|| obj.get("type"))
        .and_then(|v| v.as_str())
        .unwrap_or("default");
    let num = |key: &str| -> Result<f64> {
        obj.get(key).and_then(|v| v.as_f64()).ok_or_else(|| {
            ModelError::UnsupportedConfig(format!("rope_scaling {kind} needs numeric {key}"))
        })
    };
    match kind {
        "default" => Ok(RopeScaling::None),
        "linear" => Ok(RopeScaling::Linear {
            factor: num("factor")?,
        }),
        "llama3" => Ok(RopeScaling::Llama3 {
            factor: num("factor")?,
            low_freq_factor: num("low_freq_factor")?,
            high_freq_factor: num("high_freq_factor")?,
            original_max_position_embeddings: num("original_max_position_embeddings")? as usize,
        }),
        other => Err(ModelError::UnsupportedConfig(format!(
            "rope_scaling type {other:?} (supported: default, linear, llama3)"
        ))),
    }
}
