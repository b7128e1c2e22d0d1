//! The paged KV cache of one model, and attention over it.
//!
//! Two backends: on CPU plain buffers written in place and read by the rayon kernel of
//! `attention_cpu`; elsewhere (CUDA) candle tensors written with `scatter_set` and read
//! with `index_select` + matmul attention built from candle ops.

use candle_core::{DType, Device, Tensor};

use crate::attention_cpu::{self, AttnShape, CacheElem, SeqSpan};
use crate::batch_meta::BatchMeta;
use crate::error::{ModelError, Result};

/// Which attention implementation a runner uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AttentionBackend {
    /// The CPU kernel on CPU devices, candle ops elsewhere.
    #[default]
    Auto,
    /// candle ops on any device (the path CUDA takes; selectable on CPU for testing).
    CandleOps,
}

/// Geometry of the cache.
#[derive(Debug, Clone, Copy)]
pub struct CacheGeometry {
    pub num_layers: usize,
    pub num_blocks: usize,
    pub block_size: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
}

struct CpuLayer<T> {
    k: Vec<T>,
    v: Vec<T>,
}

enum CpuStore {
    F32(Vec<CpuLayer<f32>>),
    Bf16(Vec<CpuLayer<half::bf16>>),
}

struct TensorLayer {
    /// [num_blocks * block_size, kv_heads * head_dim]
    k: Tensor,
    v: Tensor,
}

enum Store {
    Cpu(CpuStore),
    Tensors(Vec<TensorLayer>),
}

pub struct PagedKvCache {
    geo: CacheGeometry,
    dtype: DType,
    store: Store,
}

impl PagedKvCache {
    pub fn new(
        geo: CacheGeometry,
        dtype: DType,
        device: &Device,
        backend: AttentionBackend,
    ) -> Result<Self> {
        let per_layer = geo.num_blocks * geo.block_size * geo.num_kv_heads * geo.head_dim;
        let store = if device.is_cpu() && backend == AttentionBackend::Auto {
            fn layers<T: CacheElem>(n: usize, per_layer: usize) -> Vec<CpuLayer<T>> {
                (0..n)
                    .map(|_| CpuLayer {
                        k: vec![T::default(); per_layer],
                        v: vec![T::default(); per_layer],
                    })
                    .collect()
            }
            Store::Cpu(match dtype {
                DType::F32 => CpuStore::F32(layers(geo.num_layers, per_layer)),
                DType::BF16 => CpuStore::Bf16(layers(geo.num_layers, per_layer)),
                other => return Err(ModelError::UnsupportedDType(other)),
            })
        } else {
            let shape = (
                geo.num_blocks * geo.block_size,
                geo.num_kv_heads * geo.head_dim,
            );
            let layers = (0..geo.num_layers)
                .map(|_| {
                    Ok(TensorLayer {
                        k: Tensor::zeros(shape, dtype, device)?,
                        v: Tensor::zeros(shape, dtype, device)?,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            Store::Tensors(layers)
        };
        Ok(Self { geo, dtype, store })
    }

    pub fn geometry(&self) -> &CacheGeometry {
        &self.geo
    }

    /// Writes the new tokens' `k`/`v` ([T, kv_heads, head_dim], after RoPE) of `layer`,
    /// then attends `q` ([T, heads, head_dim]) over each row's context.
    /// Returns [T, heads * head_dim] in the model dtype.
    pub fn write_and_attend(
        &mut self,
        layer: usize,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        meta: &BatchMeta,
        window: Option<usize>,
    ) -> Result<Tensor> {
        let (t, heads, d) = q.dims3()?;
        let shape = AttnShape {
            num_heads: heads,
            num_kv_heads: self.geo.num_kv_heads,
            head_dim: d,
            block_size: self.geo.block_size,
            scale: 1.0 / (d as f32).sqrt(),
            window,
        };
        match &mut self.store {
            Store::Cpu(store) => {
                let to_vec = |x: &Tensor| -> Result<Vec<f32>> {
                    Ok(x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
                };
                let (qv, kv, vv) = (to_vec(q)?, to_vec(k)?, to_vec(v)?);
                let spans: Vec<SeqSpan<'_>> = meta
                    .rows
                    .iter()
                    .map(|r| SeqSpan {
                        token_start: r.token_start,
                        num_tokens: r.num_tokens,
                        start_pos: r.start_pos,
                        block_table: &r.block_table,
                    })
                    .collect();
                let out = match store {
                    CpuStore::F32(layers) => {
                        cpu_layer(&mut layers[layer], &qv, &kv, &vv, meta, &spans, &shape)
                    }
                    CpuStore::Bf16(layers) => {
                        cpu_layer(&mut layers[layer], &qv, &kv, &vv, meta, &spans, &shape)
                    }
                };
                Ok(Tensor::from_vec(out, (t, heads * d), q.device())?.to_dtype(self.dtype)?)
            }
            Store::Tensors(layers) => candle_attention(&layers[layer], q, k, v, meta, &shape),
        }
    }
}

fn cpu_layer<T: CacheElem>(
    layer: &mut CpuLayer<T>,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    meta: &BatchMeta,
    spans: &[SeqSpan<'_>],
    shape: &AttnShape,
) -> Vec<f32> {
    attention_cpu::write_kv(&mut layer.k, &mut layer.v, k, v, &meta.slots, shape);
    attention_cpu::paged_attention(q, &layer.k, &layer.v, spans, shape)
}

/// Device-generic path: in-place scatter of the new K/V, then per-row gather + attention.
fn candle_attention(
    layer: &TensorLayer,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    meta: &BatchMeta,
    shape: &AttnShape,
) -> Result<Tensor> {
    let dev = q.device();
    let (t, heads, d) = q.dims3()?;
    let kvh = shape.num_kv_heads;
    let width = kvh * d;
    let slots: Vec<u32> = meta.slots.iter().map(|&s| s as u32).collect();
    let index = Tensor::from_vec(slots, (t, 1), dev)?
        .broadcast_as((t, width))?
        .contiguous()?;
    layer
        .k
        .scatter_set(&index, &k.reshape((t, width))?.contiguous()?, 0)?;
    layer
        .v
        .scatter_set(&index, &v.reshape((t, width))?.contiguous()?, 0)?;

    let group = heads / kvh;
    let bs = shape.block_size;
    let mut outs = Vec::with_capacity(meta.rows.len());
    for row in &meta.rows {
        let ctx = row.context_len();
        let ctx_slots: Vec<u32> = (0..ctx)
            .map(|p| row.block_table[p / bs] * bs as u32 + (p % bs) as u32)
            .collect();
        let ctx_slots = Tensor::from_vec(ctx_slots, ctx, dev)?;
        // [ctx, kvh, d] -> [kvh, ctx, d] -> repeat each kv head `group` times -> [heads, ctx, d]
        let expand = |cache: &Tensor| -> Result<Tensor> {
            let x = cache
                .index_select(&ctx_slots, 0)?
                .reshape((ctx, kvh, d))?
                .transpose(0, 1)?
                .unsqueeze(1)?
                .broadcast_as((kvh, group, ctx, d))?
                .reshape((heads, ctx, d))?
                .to_dtype(DType::F32)?;
            Ok(x)
        };
        let kr = expand(&layer.k)?;
        let vr = expand(&layer.v)?;
        let n = row.num_tokens;
        let qr = q
            .narrow(0, row.token_start, n)?
            .transpose(0, 1)?
            .to_dtype(DType::F32)?
            .contiguous()?; // [heads, n, d]
        let scores = (qr.matmul(&kr.t()?.contiguous()?)? * shape.scale as f64)?; // [heads, n, ctx]
        let mask: Vec<f32> = (0..n)
            .flat_map(|i| {
                let qpos = row.start_pos + i;
                let lo = shape.window.map_or(0, |w| (qpos + 1).saturating_sub(w));
                (0..ctx).map(move |j| {
                    if j > qpos || j < lo {
                        f32::NEG_INFINITY
                    } else {
                        0.0
                    }
                })
            })
            .collect();
        let mask = Tensor::from_vec(mask, (1, n, ctx), dev)?;
        let probs = candle_nn::ops::softmax_last_dim(&scores.broadcast_add(&mask)?)?;
        let out = probs.matmul(&vr)?; // [heads, n, d]
        outs.push(out.transpose(0, 1)?.reshape((n, heads * d))?);
    }
    let out = Tensor::cat(&outs, 0)?;
    Ok(out.to_dtype(layer.k.dtype())?)
}
