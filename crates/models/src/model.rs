//! The decoder-only transformer (Llama / Mistral / Qwen2 / Qwen3) over a ragged batch.
//!
//! All tokens of all rows form one [T, hidden] tensor, so every projection is a single
//! GEMM; only attention looks at row boundaries (through the paged cache).

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Embedding, RmsNorm};

use crate::batch_meta::BatchMeta;
use crate::config::ModelConfig;
use crate::error::Result;
use crate::kv_cache::PagedKvCache;
use crate::linear::{Linear, Matrix};
use crate::rope::{RopeRows, RotaryEmbedding};
use crate::weights::Weights;

fn linear(w: &Weights, name: &str, out_dim: usize, in_dim: usize, bias: bool) -> Result<Linear> {
    stacked_linear(w, &[(name, out_dim)], in_dim, bias)
}

/// One layer computing the named layers that read the same input, their
/// outputs side by side in the order given (`(name, out_dim)`).
fn stacked_linear(
    w: &Weights,
    parts: &[(&str, usize)],
    in_dim: usize,
    bias: bool,
) -> Result<Linear> {
    let weights = parts
        .iter()
        .map(|(name, out)| w.matrix(&format!("{name}.weight"), &[*out, in_dim]))
        .collect::<Result<Vec<_>>>()?;
    let biases = if bias {
        Some(
            parts
                .iter()
                .map(|(name, out)| w.get(&format!("{name}.bias"), &[*out]))
                .collect::<Result<Vec<_>>>()?,
        )
    } else {
        None
    };
    Linear::stacked(weights, biases.as_deref(), w.device())
}

fn rms_norm(w: &Weights, name: &str, dim: usize, eps: f64) -> Result<RmsNorm> {
    Ok(RmsNorm::new(w.get(&format!("{name}.weight"), &[dim])?, eps))
}

pub struct Attention {
    /// q_proj, k_proj and v_proj as one GEMM.
    qkv_proj: Linear,
    o_proj: Linear,
    /// Qwen3's per-head norms.
    q_norm: Option<RmsNorm>,
    k_norm: Option<RmsNorm>,
    num_heads: usize,
    num_kv_heads: usize,
    head_dim: usize,
    sliding_window: Option<usize>,
}

impl Attention {
    fn load(cfg: &ModelConfig, w: &Weights, prefix: &str) -> Result<Self> {
        let (h, d) = (cfg.hidden_size, cfg.head_dim);
        let q_dim = cfg.num_attention_heads * d;
        let kv_dim = cfg.num_key_value_heads * d;
        let (q_norm, k_norm) = if cfg.qk_norm {
            (
                Some(rms_norm(
                    w,
                    &format!("{prefix}.q_norm"),
                    d,
                    cfg.rms_norm_eps,
                )?),
                Some(rms_norm(
                    w,
                    &format!("{prefix}.k_norm"),
                    d,
                    cfg.rms_norm_eps,
                )?),
            )
        } else {
            (None, None)
        };
        Ok(Self {
            qkv_proj: stacked_linear(
                w,
                &[
                    (&format!("{prefix}.q_proj"), q_dim),
                    (&format!("{prefix}.k_proj"), kv_dim),
                    (&format!("{prefix}.v_proj"), kv_dim),
                ],
                h,
                cfg.qkv_bias,
            )?,
            o_proj: linear(w, &format!("{prefix}.o_proj"), h, q_dim, cfg.o_bias)?,
            q_norm,
            k_norm,
            num_heads: cfg.num_attention_heads,
            num_kv_heads: cfg.num_key_value_heads,
            head_dim: d,
            sliding_window: cfg.sliding_window,
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        rope: &RopeRows,
        cache: &mut PagedKvCache,
        layer: usize,
        meta: &BatchMeta,
    ) -> Result<Tensor> {
        let t = x.dim(0)?;
        let hd = self.head_dim;
        let (nq, nkv) = (self.num_heads, self.num_kv_heads);
        let qkv = self.qkv_proj.forward(x)?;
        // q, k and v lie side by side: `n` heads from head `first` on.
        let heads = |first: usize, n: usize| qkv.narrow(1, first * hd, n * hd)?.reshape((t, n, hd));
        let q = heads(0, nq)?;
        let k = heads(nq, nkv)?;
        let v = heads(nq + nkv, nkv)?;
        let q = match &self.q_norm {
            Some(norm) => norm.forward(&q.contiguous()?)?,
            None => q,
        };
        let k = match &self.k_norm {
            Some(norm) => norm.forward(&k.contiguous()?)?,
            None => k,
        };
        let q = rope.apply(&q)?;
        let k = rope.apply(&k)?;
        let attn = cache.write_and_attend(layer, &q, &k, &v, meta, self.sliding_window)?;
        self.o_proj.forward(&attn)
    }
}

pub struct Mlp {
    /// gate_proj and up_proj as one GEMM.
    gate_up_proj: Linear,
    down_proj: Linear,
}

impl Mlp {
    fn load(cfg: &ModelConfig, w: &Weights, prefix: &str) -> Result<Self> {
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        Ok(Self {
            gate_up_proj: stacked_linear(
                w,
                &[
                    (&format!("{prefix}.gate_proj"), i),
                    (&format!("{prefix}.up_proj"), i),
                ],
                h,
                false,
            )?,
            down_proj: linear(w, &format!("{prefix}.down_proj"), h, i, false)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let gate_up = self.gate_up_proj.forward(x)?;
        let i = gate_up.dim(1)? / 2;
        let gate = candle_nn::ops::silu(&gate_up.narrow(1, 0, i)?)?;
        let up = gate_up.narrow(1, i, i)?;
        self.down_proj.forward(&(gate * up)?)
    }
}

pub struct DecoderLayer {
    self_attn: Attention,
    mlp: Mlp,
    input_layernorm: RmsNorm,
    post_attention_layernorm: RmsNorm,
}

impl DecoderLayer {
    fn load(cfg: &ModelConfig, w: &Weights, prefix: &str) -> Result<Self> {
        let (h, eps) = (cfg.hidden_size, cfg.rms_norm_eps);
        Ok(Self {
            self_attn: Attention::load(cfg, w, &format!("{prefix}.self_attn"))?,
            mlp: Mlp::load(cfg, w, &format!("{prefix}.mlp"))?,
            input_layernorm: rms_norm(w, &format!("{prefix}.input_layernorm"), h, eps)?,
            post_attention_layernorm: rms_norm(
                w,
                &format!("{prefix}.post_attention_layernorm"),
                h,
                eps,
            )?,
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        rope: &RopeRows,
        cache: &mut PagedKvCache,
        layer: usize,
        meta: &BatchMeta,
    ) -> Result<Tensor> {
        let h = self.input_layernorm.forward(x)?;
        let h = self.self_attn.forward(&h, rope, cache, layer, meta)?;
        let x = (x + h)?;
        let h = self.post_attention_layernorm.forward(&x)?;
        let h = self.mlp.forward(&h)?;
        Ok((x + h)?)
    }
}

/// Where the token embeddings are read from.
enum TokenEmbeddings {
    Table(Embedding),
    /// Rows of a layer's `[out, in]` weight: the LM head's when tied (the
    /// table held once), or an untied quantized table.
    Rows(Linear),
}

pub struct Model {
    embed_tokens: TokenEmbeddings,
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
    lm_head: Linear,
    rotary: RotaryEmbedding,
    dtype: DType,
    device: Device,
}

impl Model {
    pub fn load(cfg: &ModelConfig, w: &Weights, dtype: DType, device: &Device) -> Result<Self> {
        let (v, h) = (cfg.vocab_size, cfg.hidden_size);
        let embeddings = w.matrix("model.embed_tokens.weight", &[v, h])?;
        let (embed_tokens, lm_head) = match (cfg.tie_word_embeddings, embeddings) {
            (true, table) => {
                let head = Linear::lm_head(table, device)?;
                (TokenEmbeddings::Rows(head.clone()), head)
            }
            (false, Matrix::Dense(table)) => (
                TokenEmbeddings::Table(Embedding::new(table, h)),
                Linear::lm_head(w.matrix("lm_head.weight", &[v, h])?, device)?,
            ),
            (false, table) => (
                TokenEmbeddings::Rows(Linear::stacked(vec![table], None, device)?),
                Linear::lm_head(w.matrix("lm_head.weight", &[v, h])?, device)?,
            ),
        };
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| DecoderLayer::load(cfg, w, &format!("model.layers.{i}")))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            embed_tokens,
            layers,
            norm: rms_norm(w, "model.norm", h, cfg.rms_norm_eps)?,
            lm_head,
            rotary: RotaryEmbedding::new(cfg, dtype, device)?,
            dtype,
            device: device.clone(),
        })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn max_position(&self) -> usize {
        self.rotary.max_position()
    }

    /// Runs the batch; returns f32 logits [num logit rows, vocab].
    pub fn forward(&self, meta: &BatchMeta, cache: &mut PagedKvCache) -> Result<Tensor> {
        let rope = self.rotary.rows(&meta.positions)?;
        let mut x = match &self.embed_tokens {
            TokenEmbeddings::Table(e) => e.forward(&meta.token_ids)?,
            // Quantized rows come back as f32.
            TokenEmbeddings::Rows(l) => l.weight_rows(&meta.token_ids)?.to_dtype(self.dtype)?,
        };
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(&x, &rope, cache, i, meta)?;
        }
        let n = meta.logit_rows.len();
        let rows = Tensor::from_slice(&meta.logit_rows, n, &self.device)?;
        let x = x.index_select(&rows, 0)?;
        let x = self.norm.forward(&x)?;
        Ok(self.lm_head.forward(&x)?.to_dtype(DType::F32)?)
    }
}
