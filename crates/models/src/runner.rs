//! `ModelRunner`: a loaded model plus its paged KV cache, one ragged batch per forward.

use std::path::Path;

use candle_core::{DType, Device};
use glimprouter_core::ModelBatch;

use crate::batch_meta::{BatchLimits, BatchMeta};
use crate::config::ModelConfig;
use crate::error::{ModelError, Result};
use crate::kv_cache::{AttentionBackend, CacheGeometry, PagedKvCache};
use crate::model::Model;
use crate::weights::Weights;

/// How to load a checkpoint and size its cache.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub dtype: DType,
    pub device: Device,
    /// Positions per cache block.
    pub block_size: usize,
    /// Blocks in this model's pool.
    pub num_blocks: usize,
}

/// Logits of the rows a batch asked for: batch-row order, each row's last `num_logits`
/// tokens in position order.
#[derive(Debug, Clone, PartialEq)]
pub struct Logits {
    pub data: Vec<f32>,
    pub vocab: usize,
}

impl Logits {
    pub fn num_rows(&self) -> usize {
        self.data.len().checked_div(self.vocab).unwrap_or(0)
    }

    /// Row `i`; panics if `i >= num_rows()` like slice indexing.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.vocab..(i + 1) * self.vocab]
    }
}

pub struct ModelRunner {
    config: ModelConfig,
    model: Model,
    cache: PagedKvCache,
    dtype: DType,
}

impl ModelRunner {
    /// Loads a checkpoint folder or a `.gguf` file.
    pub fn load(path: &Path, opts: &LoadOptions) -> Result<Self> {
        Self::load_with_backend(path, opts, AttentionBackend::Auto)
    }

    /// Like `load`, choosing the attention implementation (tests run both on CPU).
    pub fn load_with_backend(
        path: &Path,
        opts: &LoadOptions,
        backend: AttentionBackend,
    ) -> Result<Self> {
        if !matches!(opts.dtype, DType::F32 | DType::BF16 | DType::F16) {
            return Err(ModelError::UnsupportedDType(opts.dtype));
        }
        if opts.block_size == 0 || opts.num_blocks == 0 {
            return Err(ModelError::UnsupportedConfig(
                "block_size and num_blocks must be positive".into(),
            ));
        }
        let (config, weights) = Weights::open(path, opts.dtype, &opts.device)?;
        let model = Model::load(&config, &weights, opts.dtype, &opts.device)?;
        let geo = CacheGeometry {
            num_layers: config.num_hidden_layers,
            num_blocks: opts.num_blocks,
            block_size: opts.block_size,
            num_kv_heads: config.num_key_value_heads,
            head_dim: config.head_dim,
        };
        let cache = PagedKvCache::new(geo, opts.dtype, &opts.device, backend)?;
        tracing::info!(
            arch = %config.arch,
            params = config.num_params(),
            blocks = opts.num_blocks,
            block_size = opts.block_size,
            "loaded model from {}",
            path.display()
        );
        Ok(Self {
            config,
            model,
            cache,
            dtype: opts.dtype,
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn device(&self) -> &Device {
        self.model.device()
    }

    pub fn block_size(&self) -> usize {
        self.cache.geometry().block_size
    }

    pub fn num_blocks(&self) -> usize {
        self.cache.geometry().num_blocks
    }

    /// Feeds every row's tokens (writing their K/V into the cache) and returns the logits
    /// asked for. Invalid rows are rejected before anything is written.
    pub fn forward(&mut self, batch: &ModelBatch) -> Result<Logits> {
        let vocab = self.config.vocab_size;
        let limits = BatchLimits {
            vocab_size: vocab,
            max_position: self.model.max_position(),
            block_size: self.cache.geometry().block_size,
            num_blocks: self.cache.geometry().num_blocks,
        };
        let meta = BatchMeta::new(batch, &limits, self.model.device())?;
        if meta.num_tokens == 0 {
            return Ok(Logits {
                data: Vec::new(),
                vocab,
            });
        }
        let (model, cache) = (&self.model, &mut self.cache);
        // The whole forward runs on a rayon worker: every parallel op inside
        // it (GEMMs, attention) then forks and joins between workers that
        // spin briefly, instead of this thread injecting a job and sleeping
        // on a futex for each op — tens of wake-ups per forward, which cost
        // more than the small ops of a small model.
        let data = rayon::scope(|_| -> Result<Vec<f32>> {
            let logits = model.forward(&meta, cache)?;
            Ok(logits.flatten_all()?.to_vec1::<f32>()?)
        })?;
        Ok(Logits { data, vocab })
    }
}
