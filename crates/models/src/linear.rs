//! A linear layer over a dense or a quantized weight.
//!
//! A dense weight is kept transposed for the GEMM: `[in, out]`, contiguous.
//! candle_nn's `Linear` multiplies by a transposed view of the `[out, in]`
//! weight. On the CPU the GEMM then repacks the whole weight on every call
//! with more than one input row (the bundled LLM's MLP shape, 160 x 448, one
//! thread: 2 rows 24.6 us through the view against 5.6 us from the contiguous
//! transpose; SmolLM2's 576 x 576 at 64 rows, 556 against 291 us). Decode
//! batches on the CPU run on `small_matmul_cpu` instead, which reads the
//! `[out, in]` layout: in f32 a layer holds both (`dense_weight`).
//!
//! A quantized weight (from a GGUF file) stays in its blocks, `[out, in]`,
//! and runs on candle's quantized matmul kernels.

use std::sync::Arc;

use candle_core::quantized::{ggml_file::qtensor_from_ggml, QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};

use crate::error::Result;
use crate::gguf::RawTensor;
use crate::small_matmul_cpu;

/// A checkpoint's `[out, in]` weight matrix as loaded.
pub enum Matrix {
    Dense(Tensor),
    /// Quantization blocks as stored, on the host until a layer takes them.
    Quantized(RawTensor),
}

#[derive(Clone)]
enum Weight {
    /// `[in, out]`, contiguous, for the GEMM; on the CPU in f32 also `[out, in]`, for
    /// batches of up to `small_matmul_cpu::MAX_ROWS` rows (see `dense`).
    Dense {
        in_out: Tensor,
        out_in: Option<Tensor>,
    },
    /// `[out, in]`, contiguous: the LM head (see `Linear::lm_head`).
    DenseRows(Tensor),
    /// `[out, in]` in quantization blocks.
    Quantized(Arc<QTensor>),
    /// Layers stacked from weights of different types: each runs alone and
    /// their outputs are put side by side.
    Parts(Vec<Weight>),
}

#[derive(Clone)]
pub struct Linear {
    weight: Weight,
    bias: Option<Tensor>,
}

impl Linear {
    /// From a checkpoint's `[out, in]` weight (transposed once, here).
    #[cfg(test)]
    pub fn new(weight: &Tensor, bias: Option<Tensor>) -> Result<Self> {
        Ok(Self {
            weight: dense_weight(weight.clone())?,
            bias,
        })
    }

    /// Layers that read the same input, as one: their `[out_i, in]`
    /// weights (and biases) stacked, so that one matmul serves them all and
    /// `forward` returns their outputs side by side, `[T, sum of out_i]`.
    /// Quantized weights of one type stack by their rows of blocks.
    pub fn stacked(
        weights: Vec<Matrix>,
        biases: Option<&[Tensor]>,
        device: &Device,
    ) -> Result<Self> {
        let bias = biases.map(|b| Tensor::cat(b, 0)).transpose()?;
        let weight = stack(weights, device)?;
        Ok(Self { weight, bias })
    }

    /// The LM head, from its `[vocab, hidden]` weight. Dense, it stays `[out, in]`: it
    /// only ever multiplies the few rows whose logits are wanted, and a decode batch
    /// reads each of its rows front to back (`small_matmul_cpu`); walking down a
    /// transposed copy's 49,152-wide rows instead (SmolLM2) ran at half the speed. Its
    /// rows are the token embeddings when tied.
    pub fn lm_head(weight: Matrix, device: &Device) -> Result<Self> {
        let weight = match weight {
            Matrix::Dense(w) => Weight::DenseRows(w.contiguous()?),
            quantized => stack(vec![quantized], device)?,
        };
        Ok(Self { weight, bias: None })
    }

    /// `x [T, in]` -> `[T, out]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = self.weight.forward(x)?;
        Ok(match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        })
    }

    /// Rows `ids` of the `[out, in]` weight as `[n, in]` (f32 when the
    /// weight is quantized): the token embeddings when the LM head is tied
    /// to them, so the table is held once, or a quantized embedding table.
    pub fn weight_rows(&self, ids: &Tensor) -> Result<Tensor> {
        match &self.weight {
            Weight::Dense { in_out, .. } => Ok(in_out.index_select(ids, 1)?.t()?.contiguous()?),
            Weight::DenseRows(w) => Ok(w.index_select(ids, 0)?),
            Weight::Quantized(q) => Ok(q.embedding(ids)?),
            Weight::Parts(_) => Err(candle_core::Error::Msg(
                "rows of a stacked layer are not an embedding table".into(),
            )
            .into()),
        }
    }
}

/// A dense layer from its `[out, in]` weight. On the CPU in f32 it is held twice: the
/// GEMM of a long prompt wants `[in, out]` (through a transposed view it ran 1.2-4.5x
/// slower: it repacks the weight on every call), while a decode batch reads `[out, in]`
/// rows front to back, which the hardware prefetcher follows; walking down `[in, out]`
/// instead, from memory, ran at a third of the speed (SmolLM2 f32, 8 requests).
fn dense_weight(w: Tensor) -> Result<Weight> {
    let out_in = (w.device().is_cpu() && w.dtype() == candle_core::DType::F32)
        .then(|| w.contiguous())
        .transpose()?;
    Ok(Weight::Dense {
        in_out: w.t()?.contiguous()?,
        out_in,
    })
}

fn stack(weights: Vec<Matrix>, device: &Device) -> Result<Weight> {
    if weights.iter().all(|m| matches!(m, Matrix::Dense(_))) {
        let dense: Vec<Tensor> = weights
            .into_iter()
            .filter_map(|m| match m {
                Matrix::Dense(t) => Some(t),
                Matrix::Quantized(_) => None,
            })
            .collect();
        return dense_weight(Tensor::cat(&dense, 0)?);
    }
    if let Some(raw) = concat_rows(&weights) {
        return quantized(&raw, device);
    }
    // Mixed types (a Q4_K_M file's q/k/v can be): each part runs alone.
    let parts = weights
        .into_iter()
        .map(|m| match m {
            Matrix::Dense(t) => dense_weight(t),
            Matrix::Quantized(raw) => quantized(&raw, device),
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Weight::Parts(parts))
}

/// Quantized matrices of one type and width as one: their rows of blocks
/// one after another. `None` if any differs.
fn concat_rows(weights: &[Matrix]) -> Option<RawTensor> {
    let mut merged: Option<RawTensor> = None;
    for m in weights {
        let Matrix::Quantized(r) = m else {
            return None;
        };
        match merged.as_mut() {
            None => merged = Some(r.clone()),
            Some(acc) if acc.dtype == r.dtype && acc.dims[1..] == r.dims[1..] => {
                acc.dims[0] += r.dims[0];
                acc.bytes.extend_from_slice(&r.bytes);
            }
            Some(_) => return None,
        }
    }
    merged
}

fn quantized(raw: &RawTensor, device: &Device) -> Result<Weight> {
    let q = qtensor_from_ggml(raw.dtype, &raw.bytes, raw.dims.clone(), device)?;
    Ok(Weight::Quantized(Arc::new(q)))
}

impl Weight {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Weight::Dense { in_out, out_in } => {
                let small = match out_in {
                    Some(w) => small_matmul_cpu::try_matmul(x, w)?,
                    None => None,
                };
                match small {
                    Some(y) => y,
                    None => x.matmul(in_out)?,
                }
            }
            Weight::DenseRows(w) => match small_matmul_cpu::try_matmul(x, w)? {
                Some(y) => y,
                None => x.matmul(&w.t()?)?,
            },
            // candle's quantized matmul reads its input as one contiguous slice.
            Weight::Quantized(q) => match crate::quant_matmul_cpu::try_matmul(q, x)? {
                Some(y) => y,
                None => QMatMul::QTensor(q.clone()).forward(&x.contiguous()?)?,
            },
            Weight::Parts(parts) => {
                let outs = parts
                    .iter()
                    .map(|p| p.forward(x))
                    .collect::<Result<Vec<_>>>()?;
                Tensor::cat(&outs, 1)?
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Module};

    use super::*;

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .and_then(|d| d.abs()?.max_all()?.to_scalar::<f32>())
            .expect("same shapes")
    }

    #[test]
    fn layers_and_the_lm_head_match_the_whole_product_at_every_batch_size() {
        let dev = Device::Cpu;
        // 200 inputs, 1000 outputs, over 3 threads; up to MAX_ROWS rows on the own
        // kernels, past it on candle's matmul.
        let w = Tensor::randn(0f32, 1.0, (1000, 200), &dev).unwrap();
        let layer = Linear::new(&w, None).unwrap();
        let head = Linear::lm_head(Matrix::Dense(w.clone()), &dev).unwrap();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        for m in [
            1,
            3,
            8,
            small_matmul_cpu::MAX_ROWS,
            small_matmul_cpu::MAX_ROWS + 1,
        ] {
            let x = Tensor::randn(0f32, 1.0, (m, 200), &dev).unwrap();
            let want = x.matmul(&w.t().unwrap()).unwrap();
            for (name, linear) in [("layer", &layer), ("LM head", &head)] {
                let got = pool.install(|| linear.forward(&x).unwrap());
                assert_eq!(got.dims(), &[m, 1000]);
                assert!(max_abs_diff(&got, &want) < 1e-4, "{name}, {m} rows");
            }
        }
        let ids = Tensor::new(&[999u32, 0, 5], &dev).unwrap();
        assert_eq!(
            head.weight_rows(&ids).unwrap().to_vec2::<f32>().unwrap(),
            w.index_select(&ids, 0).unwrap().to_vec2::<f32>().unwrap()
        );
    }

    #[test]
    fn matches_candle_nn_linear_and_reads_weight_rows() {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 1.0, (7, 5), &dev).unwrap();
        let b = Tensor::randn(0f32, 1.0, 7, &dev).unwrap();
        let ours = Linear::new(&w, Some(b.clone())).unwrap();
        let theirs = candle_nn::Linear::new(w.clone(), Some(b.clone()));
        for rows in [1, 2, 9] {
            let x = Tensor::randn(0f32, 1.0, (rows, 5), &dev).unwrap();
            let diff = max_abs_diff(&ours.forward(&x).unwrap(), &theirs.forward(&x).unwrap());
            assert!(diff < 1e-5, "{rows} rows: {diff}");
        }
        // Stacked: the two layers' outputs side by side.
        let w2 = Tensor::randn(0f32, 1.0, (3, 5), &dev).unwrap();
        let b2 = Tensor::randn(0f32, 1.0, 3, &dev).unwrap();
        let both = Linear::stacked(
            vec![Matrix::Dense(w.clone()), Matrix::Dense(w2.clone())],
            Some(&[b.clone(), b2.clone()]),
            &dev,
        )
        .unwrap();
        let second = Linear::new(&w2, Some(b2)).unwrap();
        let x = Tensor::randn(0f32, 1.0, (4, 5), &dev).unwrap();
        let y = both.forward(&x).unwrap();
        for (layer, start, len) in [(&ours, 0, 7), (&second, 7, 3)] {
            let part = y.narrow(1, start, len).unwrap();
            let diff = max_abs_diff(&part, &layer.forward(&x).unwrap());
            assert!(diff < 1e-5, "columns {start}..: {diff}");
        }
        let ids = Tensor::new(&[3u32, 0, 3, 6], &dev).unwrap();
        let got = ours.weight_rows(&ids).unwrap();
        let want = w.index_select(&ids, 0).unwrap();
        assert_eq!(
            got.to_vec2::<f32>().unwrap(),
            want.to_vec2::<f32>().unwrap()
        );
    }
}
