//! A differentiable Qwen3 forward pass for training.
//!
//! candle-transformers' qwen3 runs attention, RMSNorm and RoPE through fused
//! CPU kernels that have no backward pass, so training needs this plain-op
//! version. It creates its weights under the Hugging Face tensor names, so
//! the saved safetensors load unchanged in candle-transformers and in our
//! paged-cache runner (the reload test checks both agree).

use candle_core::{DType, Device, Result, Tensor, D};
use candle_nn::{Init, VarBuilder};

use super::ModelShape;

const LINEAR_INIT: Init = Init::Randn {
    mean: 0.0,
    stdev: 0.02,
};
const NORM_INIT: Init = Init::Const(1.0);

struct Layer {
    input_norm: Tensor,
    q_proj: Tensor,
    k_proj: Tensor,
    v_proj: Tensor,
    o_proj: Tensor,
    q_norm: Tensor,
    k_norm: Tensor,
    post_norm: Tensor,
    gate_proj: Tensor,
    up_proj: Tensor,
    down_proj: Tensor,
}

fn linear(vb: &VarBuilder, out_dim: usize, in_dim: usize, name: &str) -> Result<Tensor> {
    vb.pp(name)
        .get_with_hints((out_dim, in_dim), "weight", LINEAR_INIT)
}

fn norm(vb: &VarBuilder, dim: usize, name: &str) -> Result<Tensor> {
    vb.pp(name).get_with_hints(dim, "weight", NORM_INIT)
}

impl Layer {
    fn new(shape: &ModelShape, vb: VarBuilder) -> Result<Self> {
        let (h, inner, att) = (
            shape.hidden,
            shape.intermediate,
            shape.heads * shape.head_dim,
        );
        let attn = vb.pp("self_attn");
        let mlp = vb.pp("mlp");
        Ok(Self {
            input_norm: norm(&vb, h, "input_layernorm")?,
            q_proj: linear(&attn, att, h, "q_proj")?,
            k_proj: linear(&attn, att, h, "k_proj")?,
            v_proj: linear(&attn, att, h, "v_proj")?,
            o_proj: linear(&attn, h, att, "o_proj")?,
            q_norm: norm(&attn, shape.head_dim, "q_norm")?,
            k_norm: norm(&attn, shape.head_dim, "k_norm")?,
            post_norm: norm(&vb, h, "post_attention_layernorm")?,
            gate_proj: linear(&mlp, inner, h, "gate_proj")?,
            up_proj: linear(&mlp, inner, h, "up_proj")?,
            down_proj: linear(&mlp, h, inner, "down_proj")?,
        })
    }
}

/// Rows of `x` times the transpose of a `(out, in)` weight, as nn.Linear.
fn apply(x: &Tensor, weight: &Tensor) -> Result<Tensor> {
    x.matmul(&weight.t()?)
}

pub struct TrainableQwen3 {
    shape: ModelShape,
    embed: Tensor,
    layers: Vec<Layer>,
    final_norm: Tensor,
    cos: Tensor,
    sin: Tensor,
}

impl TrainableQwen3 {
    pub fn new(shape: &ModelShape, vb: VarBuilder) -> Result<Self> {
        let embed = vb.pp("model.embed_tokens").get_with_hints(
            (shape.vocab_size, shape.hidden),
            "weight",
            LINEAR_INIT,
        )?;
        let layers = (0..shape.layers)
            .map(|i| Layer::new(shape, vb.pp("model.layers").pp(i)))
            .collect::<Result<Vec<_>>>()?;
        let final_norm = norm(&vb.pp("model"), shape.hidden, "norm")?;
        let (cos, sin) = rope_tables(shape, vb.device())?;
        Ok(Self {
            shape: shape.clone(),
            embed,
            layers,
            final_norm,
            cos,
            sin,
        })
    }

    /// Logits `(batch * len, vocab)` for token ids `(batch, len)`.
    pub fn logits(&self, ids: &Tensor) -> Result<Tensor> {
        let (b, l) = ids.dims2()?;
        let eps = self.shape.rms_norm_eps as f32;
        let mut x = self.embed.index_select(&ids.flatten_all()?, 0)?;
        let mask = causal_mask(l, ids.device())?;
        for layer in &self.layers {
            let h = candle_nn::ops::rms_norm_slow(&x, &layer.input_norm, eps)?;
            x = (x + self.attention(layer, &h, &mask, b, l)?)?;
            let h = candle_nn::ops::rms_norm_slow(&x, &layer.post_norm, eps)?;
            let gate = apply(&h, &layer.gate_proj)?.silu()?;
            let up = apply(&h, &layer.up_proj)?;
            x = (x + apply(&(gate * up)?, &layer.down_proj)?)?;
        }
        let x = candle_nn::ops::rms_norm_slow(&x, &self.final_norm, eps)?;
        apply(&x, &self.embed)
    }

    fn attention(
        &self,
        layer: &Layer,
        h: &Tensor,
        mask: &Tensor,
        b: usize,
        l: usize,
    ) -> Result<Tensor> {
        let (heads, hd) = (self.shape.heads, self.shape.head_dim);
        let eps = self.shape.rms_norm_eps as f32;
        let split = |w: &Tensor, norm: Option<&Tensor>| -> Result<Tensor> {
            let t = apply(h, w)?.reshape((b, l, heads, hd))?;
            let t = match norm {
                Some(n) => candle_nn::ops::rms_norm_slow(&t, n, eps)?,
                None => t,
            };
            t.transpose(1, 2)?.contiguous()
        };
        let cos = self.cos.narrow(0, 0, l)?;
        let sin = self.sin.narrow(0, 0, l)?;
        let q = candle_nn::rotary_emb::rope_slow(
            &split(&layer.q_proj, Some(&layer.q_norm))?,
            &cos,
            &sin,
        )?;
        let k = candle_nn::rotary_emb::rope_slow(
            &split(&layer.k_proj, Some(&layer.k_norm))?,
            &cos,
            &sin,
        )?;
        let v = split(&layer.v_proj, None)?;
        let scores = (q.matmul(&k.t()?)? * (1.0 / (hd as f64).sqrt()))?.broadcast_add(mask)?;
        let probs = candle_nn::ops::softmax(&scores, D::Minus1)?;
        let ctx = probs
            .matmul(&v)?
            .transpose(1, 2)?
            .reshape((b * l, heads * hd))?;
        apply(&ctx, &layer.o_proj)
    }
}

/// Additive mask: 0 on and below the diagonal, a large negative above.
fn causal_mask(l: usize, device: &Device) -> Result<Tensor> {
    let values: Vec<f32> = (0..l)
        .flat_map(|i| (0..l).map(move |j| if j > i { -1e9 } else { 0.0 }))
        .collect();
    Tensor::from_vec(values, (l, l), device)
}

/// cos/sin of the rotary angles, `(max_positions, head_dim / 2)`, as in HF Qwen3.
fn rope_tables(shape: &ModelShape, device: &Device) -> Result<(Tensor, Tensor)> {
    let half = shape.head_dim / 2;
    let inv_freq: Vec<f32> = (0..half)
        .map(|i| {
            1.0 / shape
                .rope_theta
                .powf(2.0 * i as f64 / shape.head_dim as f64) as f32
        })
        .collect();
    let inv_freq = Tensor::from_vec(inv_freq, (1, half), device)?;
    let positions = Tensor::arange(0u32, shape.max_positions as u32, device)?
        .to_dtype(DType::F32)?
        .reshape((shape.max_positions, 1))?;
    let angles = positions.matmul(&inv_freq)?;
    Ok((angles.cos()?, angles.sin()?))
}

/// Mean next-token cross-entropy over the positions where `mask` is 1.
/// `logits` is `(n, vocab)`, `targets` u32 `(n,)`, `mask` f32 `(n,)`.
pub fn masked_cross_entropy(logits: &Tensor, targets: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let logp = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let picked = logp.gather(&targets.unsqueeze(1)?, 1)?.squeeze(1)?;
    let total = (picked * mask)?.sum_all()?;
    let count = mask.sum_all()?;
    total.neg()?.div(&count)
}
