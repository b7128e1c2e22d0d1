//! The tensors of a checkpoint, by Hugging Face name: a folder of
//! memory-mapped safetensors (single file or sharded with an index), or a
//! GGUF file (`gguf.rs`), whose quantized matrices stay quantized.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};

use crate::config::ModelConfig;
use crate::error::{read_json, ModelError, Result};
use crate::gguf::{self, GgufFile, RawTensor};
use crate::linear::Matrix;

/// All tensors of a checkpoint, loaded on demand with shape checks.
pub enum Weights {
    Safetensors(SafetensorsWeights),
    Gguf(Box<GgufWeights>),
}

/// A GGUF file's tensors, converted for a model of `config`.
pub struct GgufWeights {
    file: GgufFile,
    /// llama's q/k rows are reordered with its head counts.
    config: ModelConfig,
    dtype: DType,
    device: Device,
}

impl Weights {
    /// A `.gguf` file, or a checkpoint folder of safetensors, with the
    /// model's config (a GGUF file's header is read once for both).
    pub fn open(path: &Path, dtype: DType, device: &Device) -> Result<(ModelConfig, Self)> {
        if gguf::is_gguf(path) {
            let file = GgufFile::open(path)?;
            let config = file.config()?;
            let weights = Weights::Gguf(Box::new(GgufWeights {
                file,
                config: config.clone(),
                dtype,
                device: device.clone(),
            }));
            return Ok((config, weights));
        }
        let config = ModelConfig::from_dir(path)?;
        let weights = SafetensorsWeights::open(path, dtype, device).map(Weights::Safetensors)?;
        Ok((config, weights))
    }

    /// Loads `name` in the model dtype on the model device (a quantized
    /// GGUF tensor is dequantized: for norms and biases, which are small).
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        match self {
            Weights::Safetensors(w) => w.get(name, shape),
            Weights::Gguf(g) => {
                let raw = checked(g.file.read(name, &g.config)?, name, shape)?;
                dense(&raw, name, g.dtype, &g.device)
            }
        }
    }

    /// Loads the `[out, in]` matrix `name`: quantized GGUF tensors as their
    /// blocks, anything else as a dense tensor in the model dtype.
    pub fn matrix(&self, name: &str, shape: &[usize]) -> Result<Matrix> {
        match self {
            Weights::Gguf(g) => {
                let raw = checked(g.file.read(name, &g.config)?, name, shape)?;
                if raw.is_quantized() {
                    Ok(Matrix::Quantized(raw))
                } else {
                    dense(&raw, name, g.dtype, &g.device).map(Matrix::Dense)
                }
            }
            Weights::Safetensors(_) => self.get(name, shape).map(Matrix::Dense),
        }
    }
}

impl Weights {
    pub fn device(&self) -> &Device {
        match self {
            Weights::Safetensors(w) => &w.device,
            Weights::Gguf(g) => &g.device,
        }
    }
}

fn checked(raw: RawTensor, name: &str, shape: &[usize]) -> Result<RawTensor> {
    if raw.dims != shape {
        return Err(ModelError::ShapeMismatch {
            name: name.to_string(),
            expected: shape.to_vec(),
            actual: raw.dims,
        });
    }
    Ok(raw)
}

fn dense(raw: &RawTensor, name: &str, dtype: DType, device: &Device) -> Result<Tensor> {
    let load_err = |e: candle_core::Error| ModelError::TensorLoad {
        name: name.to_string(),
        message: e.to_string(),
    };
    candle_core::quantized::ggml_file::qtensor_from_ggml(
        raw.dtype,
        &raw.bytes,
        raw.dims.clone(),
        &Device::Cpu,
    )
    .and_then(|q| q.dequantize(&Device::Cpu))
    .and_then(|t| t.to_dtype(dtype))
    .and_then(|t| t.to_device(device))
    .map_err(load_err)
}

/// A Hugging Face checkpoint folder's safetensors files, memory-mapped.
pub struct SafetensorsWeights {
    files: MmapedSafetensors,
    dtype: DType,
    device: Device,
}

impl SafetensorsWeights {
    /// Opens `model.safetensors.index.json`'s shards if present, else every `*.safetensors`.
    pub fn open(dir: &Path, dtype: DType, device: &Device) -> Result<Self> {
        let paths = shard_paths(dir)?;
        for p in &paths {
            if !p.exists() {
                return Err(ModelError::MissingFile { path: p.clone() });
            }
        }
        // SAFETY: the files are mapped read-only; like every mmap-based loader we rely on
        // nobody truncating a checkpoint while it is being served.
        let files = unsafe { MmapedSafetensors::multi(&paths) }.map_err(|e| ModelError::Parse {
            path: dir.to_path_buf(),
            message: e.to_string(),
        })?;
        Ok(SafetensorsWeights {
            files,
            dtype,
            device: device.clone(),
        })
    }

    /// Loads `name`, checking its shape, converted to the model dtype and device.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let view = self
            .files
            .get(name)
            .map_err(|_| ModelError::MissingTensor {
                name: name.to_string(),
            })?;
        if view.shape() != shape {
            return Err(ModelError::ShapeMismatch {
                name: name.to_string(),
                expected: shape.to_vec(),
                actual: view.shape().to_vec(),
            });
        }
        let load_err = |e: candle_core::Error| ModelError::TensorLoad {
            name: name.to_string(),
            message: e.to_string(),
        };
        let t = self.files.load(name, &Device::Cpu).map_err(load_err)?;
        t.to_dtype(self.dtype)
            .and_then(|t| t.to_device(&self.device))
            .map_err(load_err)
    }
}

pub(crate) fn shard_paths(dir: &Path) -> Result<Vec<PathBuf>> {
    let index = dir.join("model.safetensors.index.json");
    if index.exists() {
        let json: serde_json::Value = read_json(&index)?;
        let map = json
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| ModelError::Parse {
                path: index.clone(),
                message: "no weight_map object".into(),
            })?;
        let files: BTreeSet<&str> = map.values().filter_map(|v| v.as_str()).collect();
        return Ok(files.into_iter().map(|f| dir.join(f)).collect());
    }
    let single = dir.join("model.safetensors");
    if single.exists() {
        return Ok(vec![single]);
    }
    let entries = std::fs::read_dir(dir).map_err(|source| ModelError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut found: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    found.sort();
    if found.is_empty() {
        return Err(ModelError::MissingFile { path: single });
    }
    Ok(found)
}
