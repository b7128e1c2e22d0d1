//! Rotary position embeddings: cos/sin tables indexed by each token's own position.

use candle_core::{DType, Device, Tensor};

use crate::config::{ModelConfig, RopeScaling};
use crate::error::Result;

/// cos/sin tables of shape [max_position, head_dim / 2].
pub struct RotaryEmbedding {
    cos: Tensor,
    sin: Tensor,
    max_position: usize,
}

/// The cos/sin rows of a batch's tokens, shared by all layers of one forward.
pub struct RopeRows {
    pub cos: Tensor,
    pub sin: Tensor,
}

impl RotaryEmbedding {
    pub fn new(cfg: &ModelConfig, dtype: DType, device: &Device) -> Result<Self> {
        let inv_freq = inv_frequencies(cfg);
        let half = inv_freq.len();
        let max_position = cfg.max_position_embeddings;
        let mut cos = Vec::with_capacity(max_position * half);
        let mut sin = Vec::with_capacity(max_position * half);
        for pos in 0..max_position {
            for f in &inv_freq {
                let angle = pos as f64 * f;
                cos.push(angle.cos() as f32);
                sin.push(angle.sin() as f32);
            }
        }
        let cos = Tensor::from_vec(cos, (max_position, half), device)?.to_dtype(dtype)?;
        let sin = Tensor::from_vec(sin, (max_position, half), device)?.to_dtype(dtype)?;
        Ok(Self {
            cos,
            sin,
            max_position,
        })
    }

    pub fn max_position(&self) -> usize {
        self.max_position
    }

    /// Rows of the tables at `positions` (u32, [T]).
    pub fn rows(&self, positions: &Tensor) -> Result<RopeRows> {
        Ok(RopeRows {
            cos: self.cos.index_select(positions, 0)?,
            sin: self.sin.index_select(positions, 0)?,
        })
    }
}

impl RopeRows {
    /// Rotates `x` of shape [T, heads, head_dim] (HF "rotate_half" convention).
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        let x = x.unsqueeze(0)?.contiguous()?;
        Ok(candle_nn::rotary_emb::rope_thd(&x, &self.cos, &self.sin)?.squeeze(0)?)
    }
}

fn inv_frequencies(cfg: &ModelConfig) -> Vec<f64> {
    let dim = cfg.head_dim;
    let base: Vec<f64> = (0..dim)
        .step_by(2)
        .map(|i| 1.0 / cfg.rope_theta.powf(i as f64 / dim as f64))
        .collect();
    match cfg.rope_scaling {
        RopeScaling::None => base,
        RopeScaling::Linear { factor } => base.into_iter().map(|f| f / factor).collect(),
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings,
        } => {
            let old = original_max_position_embeddings as f64;
            let low_wavelen = old / low_freq_factor;
            let high_wavelen = old / high_freq_factor;
            base.into_iter()
                .map(|f| {
                    let wavelen = 2.0 * std::f64::consts::PI / f;
                    if wavelen < high_wavelen {
                        f
                    } else if wavelen > low_wavelen {
                        f / factor
                    } else {
                        let smooth = (old / wavelen - low_freq_factor)
                            / (high_freq_factor - low_freq_factor);
                        (1.0 - smooth) * f / factor + smooth * f
                    }
                })
                .collect()
        }
    }
}
