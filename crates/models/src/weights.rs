//! Memory-mapped safetensors checkpoints (single file or sharded with an index).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};

use crate::error::{read_json, ModelError, Result};

/// All tensors of a checkpoint, loaded on demand with shape checks.
pub struct Weights {
    files: MmapedSafetensors,
    dtype: DType,
    device: Device,
}

impl Weights {
    /// Opens `model.safetensors.index.json`'s shards if present, else every `*.safetensors`.
    pub fn open(dir: &Path, dtype: DType, device: &Device) -> Result<Weights> {
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
        Ok(Weights {
            files,
            dtype,
            device: device.clone(),
        })
    }

    pub fn contains(&self, name: &str) -> bool {
        self.files.get(name).is_ok()
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

fn shard_paths(dir: &Path) -> Result<Vec<PathBuf>> {
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
