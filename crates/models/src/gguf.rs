//! GGUF model files: the config from the metadata, and the tensors under
//! their Hugging Face names, quantized ones kept as their raw blocks.
//!
//! llama.cpp's converter stores a llama-family model's q/k projections with
//! the rows of every head permuted for interleaved RoPE (pairs `2i, 2i+1`);
//! the model here rotates Hugging Face's halves (`i, i + d/2`), so those rows
//! are put back in HF order on load. A row is whole quantization blocks, so
//! this moves bytes and never dequantizes. Qwen2/Qwen3 files are not permuted.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{Content, TensorInfo, Value};
use candle_core::quantized::GgmlDType;

use crate::config::{Arch, ModelConfig, RawConfig};
use crate::error::{io_error, ModelError, Result};

/// Whether `path` names a GGUF file (by extension) rather than a checkpoint folder.
pub fn is_gguf(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
}

/// Tensor types whose matmuls run on candle's quantized kernels.
pub const QUANTIZED_TYPES: [GgmlDType; 10] = [
    GgmlDType::Q4_0,
    GgmlDType::Q4_1,
    GgmlDType::Q5_0,
    GgmlDType::Q5_1,
    GgmlDType::Q8_0,
    GgmlDType::Q2K,
    GgmlDType::Q3K,
    GgmlDType::Q4K,
    GgmlDType::Q5K,
    GgmlDType::Q6K,
];

/// A tensor as stored: its type, `[rows, cols]`-style dims (outermost
/// first, as candle orders them) and its bytes.
#[derive(Debug, Clone)]
pub struct RawTensor {
    pub dtype: GgmlDType,
    pub dims: Vec<usize>,
    pub bytes: Vec<u8>,
}

impl RawTensor {
    /// Bytes of one row (the last dimension), a whole number of blocks.
    pub fn row_bytes(&self) -> usize {
        let cols = self.dims.last().copied().unwrap_or(1);
        cols / self.dtype.block_size() * self.dtype.type_size()
    }

    pub fn is_quantized(&self) -> bool {
        QUANTIZED_TYPES.contains(&self.dtype)
    }
}

/// An opened GGUF file: its metadata and tensor directory; tensors are read
/// on demand.
pub struct GgufFile {
    path: PathBuf,
    content: Content,
    arch: Arch,
}

impl GgufFile {
    pub fn open(path: &Path) -> Result<GgufFile> {
        let mut file = open_file(path)?;
        let content = Content::read(&mut file).map_err(|e| ModelError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let name = match content.metadata.get("general.architecture") {
            Some(Value::String(s)) => s.clone(),
            _ => {
                return Err(ModelError::Parse {
                    path: path.to_path_buf(),
                    message: "no general.architecture in the metadata".into(),
                })
            }
        };
        // Mistral files are written as "llama" by llama.cpp's converter.
        let arch = match name.as_str() {
            "llama" => Arch::Llama,
            "qwen2" => Arch::Qwen2,
            "qwen3" => Arch::Qwen3,
            other => {
                return Err(ModelError::UnsupportedArchitecture(format!(
                    "{other} (general.architecture of {}; GGUF files of llama, qwen2 and qwen3 are supported)",
                    path.display()
                )))
            }
        };
        Ok(GgufFile {
            path: path.to_path_buf(),
            content,
            arch,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn arch(&self) -> Arch {
        self.arch
    }

    pub fn metadata(&self) -> &HashMap<String, Value> {
        &self.content.metadata
    }

    /// `general.name`, if the file has one.
    pub fn name(&self) -> Option<&str> {
        match self.content.metadata.get("general.name") {
            Some(Value::String(s)) => Some(s),
            _ => None,
        }
    }

    pub fn has_tensor(&self, gguf_name: &str) -> bool {
        self.content.tensor_infos.contains_key(gguf_name)
    }

    fn info(&self, gguf_name: &str) -> Result<&TensorInfo> {
        self.content
            .tensor_infos
            .get(gguf_name)
            .ok_or_else(|| ModelError::MissingTensor {
                name: format!("{gguf_name} (in {})", self.path.display()),
            })
    }

    /// The model's configuration, built from `<arch>.*` metadata keys and
    /// the tensors present (tied output, attention biases).
    pub fn config(&self) -> Result<ModelConfig> {
        let arch = self.arch;
        let prefix = arch.model_type();
        let key = |k: &str| format!("{prefix}.{k}");
        let required = |k: &str| -> Result<usize> {
            self.uint(&key(k))?.ok_or_else(|| self.missing_key(&key(k)))
        };
        let heads = required("attention.head_count")?;
        let hidden = required("embedding_length")?;
        let vocab = self
            .info("token_embd.weight")?
            .shape
            .dims()
            .first()
            .copied()
            .unwrap_or(0);
        let head_dim = self.uint(&key("attention.key_length"))?;
        let rope_dim = self.uint(&key("rope.dimension_count"))?;
        let full_head = head_dim.unwrap_or(hidden / heads.max(1));
        if let Some(r) = rope_dim.filter(|&r| r != full_head) {
            return Err(ModelError::UnsupportedConfig(format!(
                "{}: RoPE over {r} of {full_head} head dimensions (partial rotary)",
                self.path.display()
            )));
        }
        if self.has_tensor("rope_freqs.weight") {
            return Err(ModelError::UnsupportedConfig(format!(
                "{}: per-frequency RoPE factors (rope_freqs.weight, Llama 3.1-style scaling)",
                self.path.display()
            )));
        }
        let rope_scaling = match self.string(&key("rope.scaling.type")) {
            None | Some("none") => None,
            Some("linear") => {
                let factor = self
                    .float(&key("rope.scaling.factor"))?
                    .ok_or_else(|| self.missing_key(&key("rope.scaling.factor")))?;
                Some(serde_json::json!({"type": "linear", "factor": factor}))
            }
            Some(other) => {
                return Err(ModelError::UnsupportedConfig(format!(
                    "{}: rope.scaling.type {other:?} (supported: none, linear)",
                    self.path.display()
                )))
            }
        };
        let raw = RawConfig {
            architectures: vec![arch.hf_architecture().to_string()],
            model_type: Some(arch.model_type().to_string()),
            vocab_size: vocab,
            hidden_size: hidden,
            intermediate_size: required("feed_forward_length")?,
            num_hidden_layers: required("block_count")?,
            num_attention_heads: heads,
            num_key_value_heads: self.uint(&key("attention.head_count_kv"))?,
            head_dim,
            max_position_embeddings: self.uint(&key("context_length"))?.unwrap_or(2048),
            rms_norm_eps: self
                .float(&key("attention.layer_norm_rms_epsilon"))?
                .unwrap_or(1e-6),
            rope_theta: self.float(&key("rope.freq_base"))?.unwrap_or(10_000.0),
            rope_scaling,
            tie_word_embeddings: Some(!self.has_tensor("output.weight")),
            attention_bias: Some(self.has_tensor("blk.0.attn_q.bias")),
            mlp_bias: None,
            hidden_act: None,
            sliding_window: None,
            use_sliding_window: None,
        };
        ModelConfig::from_raw(raw)
    }

    fn missing_key(&self, key: &str) -> ModelError {
        ModelError::Parse {
            path: self.path.clone(),
            message: format!("no {key} in the metadata"),
        }
    }

    fn uint(&self, key: &str) -> Result<Option<usize>> {
        let Some(v) = self.content.metadata.get(key) else {
            return Ok(None);
        };
        let n = match v {
            Value::U8(x) => Some(*x as u64),
            Value::U16(x) => Some(*x as u64),
            Value::U32(x) => Some(*x as u64),
            Value::U64(x) => Some(*x),
            Value::I8(x) => u64::try_from(*x).ok(),
            Value::I16(x) => u64::try_from(*x).ok(),
            Value::I32(x) => u64::try_from(*x).ok(),
            Value::I64(x) => u64::try_from(*x).ok(),
            _ => None,
        };
        n.map(|n| Some(n as usize))
            .ok_or_else(|| ModelError::Parse {
                path: self.path.clone(),
                message: format!("{key} is {v:?}, not a non-negative integer"),
            })
    }

    fn float(&self, key: &str) -> Result<Option<f64>> {
        match self.content.metadata.get(key) {
            None => Ok(None),
            Some(Value::F32(x)) => Ok(Some(*x as f64)),
            Some(Value::F64(x)) => Ok(Some(*x)),
            Some(_) => self.uint(key).map(|n| n.map(|n| n as f64)),
        }
    }

    /// A string metadata value.
    pub fn string(&self, key: &str) -> Option<&str> {
        match self.content.metadata.get(key) {
            Some(Value::String(s)) => Some(s),
            _ => None,
        }
    }

    /// Reads the tensor a Hugging Face name refers to (`model.layers.3.self_attn.q_proj.weight`
    /// -> `blk.3.attn_q.weight`), llama's q/k rows put back in HF order.
    pub fn read(&self, hf_name: &str, cfg: &ModelConfig) -> Result<RawTensor> {
        let name = gguf_name(hf_name).ok_or_else(|| ModelError::MissingTensor {
            name: format!("{hf_name} (no GGUF name for it)"),
        })?;
        let info = self.info(&name)?;
        if !(QUANTIZED_TYPES.contains(&info.ggml_dtype)
            || matches!(
                info.ggml_dtype,
                GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16
            ))
        {
            return Err(ModelError::TensorLoad {
                name: name.clone(),
                message: format!("tensor type {:?} is not supported", info.ggml_dtype),
            });
        }
        let dims = info.shape.dims().to_vec();
        let elems: usize = dims.iter().product();
        let block = info.ggml_dtype.block_size();
        if dims.last().is_some_and(|c| c % block != 0) {
            return Err(ModelError::TensorLoad {
                name,
                message: format!("rows of {dims:?} are not whole {block}-element blocks"),
            });
        }
        let len = elems / block * info.ggml_dtype.type_size();
        let start = self.content.tensor_data_offset + info.offset;
        let mut bytes = vec![0u8; len];
        let io_err = |source| ModelError::Io {
            path: self.path.clone(),
            source,
        };
        let mut file = open_file(&self.path)?;
        file.seek(SeekFrom::Start(start)).map_err(io_err)?;
        file.read_exact(&mut bytes).map_err(io_err)?;
        let mut raw = RawTensor {
            dtype: info.ggml_dtype,
            dims,
            bytes,
        };
        if self.arch == Arch::Llama {
            if name.contains(".attn_q.") {
                unpermute_rows(&mut raw, cfg.num_attention_heads, &name)?;
            } else if name.contains(".attn_k.") {
                unpermute_rows(&mut raw, cfg.num_key_value_heads, &name)?;
            }
        }
        Ok(raw)
    }
}

fn open_file(path: &Path) -> Result<File> {
    File::open(path).map_err(|source| io_error(path, source))
}

/// The GGUF name of a Hugging Face tensor name, for the tensors the model loads.
pub fn gguf_name(hf_name: &str) -> Option<String> {
    let fixed = match hf_name {
        "model.embed_tokens.weight" => Some("token_embd.weight"),
        "model.norm.weight" => Some("output_norm.weight"),
        "lm_head.weight" => Some("output.weight"),
        _ => None,
    };
    if let Some(f) = fixed {
        return Some(f.to_string());
    }
    let rest = hf_name.strip_prefix("model.layers.")?;
    let (layer, rest) = rest.split_once('.')?;
    let (module, suffix) = rest.rsplit_once('.')?;
    let short = match module {
        "self_attn.q_proj" => "attn_q",
        "self_attn.k_proj" => "attn_k",
        "self_attn.v_proj" => "attn_v",
        "self_attn.o_proj" => "attn_output",
        "self_attn.q_norm" => "attn_q_norm",
        "self_attn.k_norm" => "attn_k_norm",
        "mlp.gate_proj" => "ffn_gate",
        "mlp.up_proj" => "ffn_up",
        "mlp.down_proj" => "ffn_down",
        "input_layernorm" => "attn_norm",
        "post_attention_layernorm" => "ffn_norm",
        _ => return None,
    };
    Some(format!("blk.{layer}.{short}.{suffix}"))
}

/// Undoes llama.cpp's `permute` of a q/k projection (weight `[heads * d, in]`
/// or bias `[heads * d]`): GGUF row `h*d + 2i + j` is HF row `h*d + j*d/2 + i`.
fn unpermute_rows(t: &mut RawTensor, heads: usize, name: &str) -> Result<()> {
    let rows = t.dims.first().copied().unwrap_or(0);
    if t.dims.len() == 1 && t.dtype.block_size() != 1 {
        return Err(ModelError::TensorLoad {
            name: name.to_string(),
            message: format!("a quantized ({:?}) bias cannot be reordered", t.dtype),
        });
    }
    if heads == 0 || !rows.is_multiple_of(heads) || !(rows / heads).is_multiple_of(2) {
        return Err(ModelError::TensorLoad {
            name: name.to_string(),
            message: format!("{rows} rows do not split into {heads} heads of even size"),
        });
    }
    // A weight's rows are whole blocks; a bias has one element per row.
    let row_bytes = t.bytes.len() / rows;
    let d = rows / heads;
    let mut out = vec![0u8; t.bytes.len()];
    for h in 0..heads {
        for i in 0..d / 2 {
            for j in 0..2 {
                let from = (h * d + 2 * i + j) * row_bytes;
                let to = (h * d + j * d / 2 + i) * row_bytes;
                out[to..to + row_bytes].copy_from_slice(&t.bytes[from..from + row_bytes]);
            }
        }
    }
    t.bytes = out;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hf_names_map_to_gguf_names() {
        assert_eq!(
            gguf_name("model.layers.12.self_attn.q_proj.bias").as_deref(),
            Some("blk.12.attn_q.bias")
        );
        assert_eq!(
            gguf_name("model.layers.0.post_attention_layernorm.weight").as_deref(),
            Some("blk.0.ffn_norm.weight")
        );
        assert_eq!(
            gguf_name("model.embed_tokens.weight").as_deref(),
            Some("token_embd.weight")
        );
        assert_eq!(gguf_name("model.layers.0.unknown.weight"), None);
    }

    #[test]
    fn unpermute_inverts_llama_cpps_permute() {
        // Two heads of d = 4, one byte per row: llama.cpp's permute sends
        // HF row h*4 + j*2 + i to GGUF row h*4 + 2i + j.
        let hf: Vec<u8> = (0..8).collect();
        let mut gguf = [0u8; 8];
        for h in 0..2 {
            for i in 0..2 {
                for j in 0..2 {
                    gguf[h * 4 + 2 * i + j] = hf[h * 4 + j * 2 + i];
                }
            }
        }
        let mut t = RawTensor {
            dtype: GgmlDType::F32,
            dims: vec![8],
            bytes: gguf
                .iter()
                .flat_map(|&b| (b as f32).to_le_bytes())
                .collect(),
        };
        unpermute_rows(&mut t, 2, "x").unwrap();
        let back: Vec<u8> = t
            .bytes
            .chunks(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as u8)
            .collect();
        assert_eq!(back, hf);
    }
}
