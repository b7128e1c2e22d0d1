//! Writes a Hugging Face checkpoint folder as a GGUF file, as llama.cpp's
//! converter lays it out (tensor names, metadata keys, llama's q/k rows
//! permuted for interleaved RoPE), its matrices in the tensor type asked
//! for. The tests write random GGUF files of every family and type with it;
//! a folder's `tokenizer.json` is not carried over, so the file is served
//! with that `tokenizer.json` beside it.

use std::path::Path;

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};

use crate::config::{Arch, ModelConfig, RopeScaling};
use crate::error::{ModelError, Result};
use crate::gguf::gguf_name;

/// The tensor types of a written file.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GgufTypes {
    /// Every projection matrix (q/k/v/o, gate/up/down, an untied LM head).
    pub matrices: GgmlDType,
    /// The token embedding table.
    pub embeddings: GgmlDType,
    /// `attn_v` and `ffn_down` in another type, as llama.cpp's `Q4_K_M`
    /// mixes them (so q/k/v of one layer differ in type).
    pub v_and_down: Option<GgmlDType>,
}

impl GgufTypes {
    pub fn all(dtype: GgmlDType) -> Self {
        Self {
            matrices: dtype,
            embeddings: dtype,
            v_and_down: None,
        }
    }
}

/// Converts the checkpoint in `dir` into the GGUF file `out`.
pub fn write_gguf(dir: &Path, out: &Path, types: GgufTypes) -> Result<()> {
    let cfg = ModelConfig::from_dir(dir)?;
    if !matches!(
        cfg.rope_scaling,
        RopeScaling::None | RopeScaling::Linear { .. }
    ) {
        return Err(ModelError::UnsupportedConfig(
            "writing llama3 RoPE scaling to GGUF (it needs rope_freqs.weight)".into(),
        ));
    }
    let paths = crate::weights::shard_paths(dir)?;
    // SAFETY: read-only mapping of files nobody truncates meanwhile.
    let files = unsafe { MmapedSafetensors::multi(&paths) }.map_err(|e| ModelError::Parse {
        path: dir.to_path_buf(),
        message: e.to_string(),
    })?;
    let mut tensors: Vec<(String, QTensor)> = Vec::new();
    for (hf_name, _) in files.tensors() {
        let Some(name) = gguf_name(&hf_name) else {
            continue;
        };
        let t = files.load(&hf_name, &Device::Cpu)?.to_dtype(DType::F32)?;
        let t = if cfg.arch == Arch::Llama && name.contains(".attn_q.") {
            permute(&t, cfg.num_attention_heads)?
        } else if cfg.arch == Arch::Llama && name.contains(".attn_k.") {
            permute(&t, cfg.num_key_value_heads)?
        } else {
            t
        };
        let dtype = if t.rank() == 1 {
            GgmlDType::F32
        } else if name == "token_embd.weight" {
            types.embeddings
        } else if name.contains(".attn_v.") || name.contains(".ffn_down.") {
            types.v_and_down.unwrap_or(types.matrices)
        } else {
            types.matrices
        };
        let q = QTensor::quantize(&t, dtype).map_err(|e| ModelError::TensorLoad {
            name: hf_name.clone(),
            message: e.to_string(),
        })?;
        tensors.push((name, q));
    }
    tensors.sort_by(|a, b| a.0.cmp(&b.0));

    let metadata = metadata(&cfg);
    let meta_refs: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tensor_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let io_err = |source| ModelError::Io {
        path: out.to_path_buf(),
        source,
    };
    let mut file = std::io::BufWriter::new(std::fs::File::create(out).map_err(io_err)?);
    gguf_file::write(&mut file, &meta_refs, &tensor_refs)?;
    std::io::Write::flush(&mut file).map_err(io_err)?;
    Ok(())
}

/// Rewrites the GGUF file `src` as `dst` with every matrix (2-D tensor) in
/// `dtype`, metadata (tokenizer included) and layout unchanged: the f32
/// copy of a quantized file, for comparing the two.
pub fn retype_gguf(src: &Path, dst: &Path, dtype: GgmlDType) -> Result<()> {
    let parse_err = |e: candle_core::Error| ModelError::Parse {
        path: src.to_path_buf(),
        message: e.to_string(),
    };
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ModelError::Io { path, source }
    };
    let mut file = std::fs::File::open(src).map_err(io_err(src))?;
    let content = gguf_file::Content::read(&mut file).map_err(parse_err)?;
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    let mut tensors = Vec::with_capacity(names.len());
    for name in names {
        let q = content.tensor(&mut file, name, &Device::Cpu)?;
        let q = if q.shape().rank() == 2 && q.dtype() != dtype {
            QTensor::quantize(&q.dequantize(&Device::Cpu)?, dtype)?
        } else {
            q
        };
        tensors.push((name.as_str(), q));
    }
    let metadata: Vec<(&str, &Value)> = content
        .metadata
        .iter()
        .filter(|(k, _)| k.as_str() != "general.file_type")
        .map(|(k, v)| (k.as_str(), v))
        .collect();
    let tensor_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (*k, v)).collect();
    let mut out = std::io::BufWriter::new(std::fs::File::create(dst).map_err(io_err(dst))?);
    gguf_file::write(&mut out, &metadata, &tensor_refs)?;
    std::io::Write::flush(&mut out).map_err(io_err(dst))?;
    Ok(())
}

/// llama.cpp's `permute`: HF row `h*d + j*d/2 + i` goes to row `h*d + 2i + j`.
fn permute(t: &Tensor, heads: usize) -> Result<Tensor> {
    let dims = t.dims().to_vec();
    let rows = dims[0];
    let rest: usize = dims[1..].iter().product();
    let d = rows / heads;
    Ok(t.reshape((heads, 2, d / 2, rest))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape(dims)?)
}

fn metadata(cfg: &ModelConfig) -> Vec<(String, Value)> {
    let a = cfg.arch;
    // Mistral is written as llama, as llama.cpp's converter does.
    let prefix = match a {
        Arch::Mistral => "llama",
        other => other.model_type(),
    };
    let u = |n: usize| Value::U32(n as u32);
    let mut md = vec![
        (
            "general.architecture".to_string(),
            Value::String(prefix.into()),
        ),
        (
            "general.name".to_string(),
            Value::String(format!("random {a}")),
        ),
        (format!("{prefix}.block_count"), u(cfg.num_hidden_layers)),
        (
            format!("{prefix}.context_length"),
            u(cfg.max_position_embeddings),
        ),
        (format!("{prefix}.embedding_length"), u(cfg.hidden_size)),
        (
            format!("{prefix}.feed_forward_length"),
            u(cfg.intermediate_size),
        ),
        (
            format!("{prefix}.attention.head_count"),
            u(cfg.num_attention_heads),
        ),
        (
            format!("{prefix}.attention.head_count_kv"),
            u(cfg.num_key_value_heads),
        ),
        (format!("{prefix}.attention.key_length"), u(cfg.head_dim)),
        (format!("{prefix}.attention.value_length"), u(cfg.head_dim)),
        (
            format!("{prefix}.attention.layer_norm_rms_epsilon"),
            Value::F32(cfg.rms_norm_eps as f32),
        ),
        (
            format!("{prefix}.rope.freq_base"),
            Value::F32(cfg.rope_theta as f32),
        ),
        (format!("{prefix}.rope.dimension_count"), u(cfg.head_dim)),
        (format!("{prefix}.vocab_size"), u(cfg.vocab_size)),
    ];
    if let RopeScaling::Linear { factor } = cfg.rope_scaling {
        md.push((
            format!("{prefix}.rope.scaling.type"),
            Value::String("linear".into()),
        ));
        md.push((
            format!("{prefix}.rope.scaling.factor"),
            Value::F32(factor as f32),
        ));
    }
    md
}
