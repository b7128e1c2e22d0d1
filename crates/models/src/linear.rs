//! A linear layer over a dense or a quantized weight.
//!
//! A dense weight is kept transposed: `[in, out]`, contiguous. candle_nn's
//! `Linear` multiplies by a transposed view of the `[out, in]` weight. On
//! the CPU the GEMM then repacks the whole weight on every call with more
//! than one input row, and at serving batch sizes that copy costs more than
//! the arithmetic (the bundled LLM's MLP shape, 160 x 448, one thread: 2
//! rows 24.6 us through the view against 5.6 us from the contiguous
//! transpose, 8 rows 32.9 against 17.2, 32 rows 74 against 54).
//!
//! A quantized weight (from a GGUF file) stays in its blocks, `[out, in]`,
//! and runs on candle's quantized matmul kernels.

use std::sync::Arc;

use candle_core::quantized::{ggml_file::qtensor_from_ggml, QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};

use crate::error::Result;
use crate::gguf::RawTensor;

/// A checkpoint's `[out, in]` weight matrix as loaded.
pub enum Matrix {
    Dense(Tensor),
    /// Quantization blocks as stored, on the host until a layer takes them.
    Quantized(RawTensor),
}

#[derive(Clone)]
enum Weight {
    /// `[in, out]`, contiguous.
    Dense(Tensor),
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
            weight: Weight::Dense(weight.t()?.contiguous()?),
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
            Weight::Dense(w) => Ok(w.index_select(ids, 1)?.t()?.contiguous()?),
            Weight::Quantized(q) => Ok(q.embedding(ids)?),
            Weight::Parts(_) => Err(candle_core::Error::Msg(
                "rows of a stacked layer are not an embedding table".into(),
            )
            .into()),
        }
    }
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
        return Ok(Weight::Dense(Tensor::cat(&dense, 0)?.t()?.contiguous()?));
    }
    if let Some(raw) = concat_rows(&weights) {
        return quantized(&raw, device);
    }
    // Mixed types (a Q4_K_M file's q/k/v can be): each part runs alone.
    let parts = weights
        .into_iter()
        .map(|m| match m {
            Matrix::Dense(t) => Ok(Weight::Dense(t.t()?.contiguous()?)),
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

/// Activation rows up to which a dense product runs on `small_batch_matmul`.
const SMALL_BATCH: usize = 8;
/// Weight rows below which one thread does the product alone.
const MIN_ROWS_PER_THREAD: usize = 64;
/// Columns per block: a block of a thread's slab of weight rows (at most a few hundred
/// KiB) stays in L2 while each activation row goes over it.
const COLUMNS_PER_BLOCK: usize = 256;

/// `x [m, in] @ w [in, out]` for f32 on the CPU and `m <= SMALL_BATCH`, reading the
/// weight once: its rows split in contiguous slabs over the rayon pool, each slab in
/// column blocks that every activation row uses while the block is in cache, the
/// threads' partial sums added at the end. At these sizes the product is bound by
/// reading the weight, and the GEMM crate did worse: it runs a one-row product on one
/// thread whatever its parallelism setting (SmolLM2 f32 at one request: 82% of the
/// samples on one of two threads), and at 8 rows it reached 40% of the memory-bound
/// speed. `None` for other dtypes and layouts, or a weight too short to split.
fn small_batch_matmul(x: &Tensor, w: &Tensor) -> Result<Option<Tensor>> {
    use candle_core::{DType, Storage};
    use rayon::prelude::*;
    let (k, n) = w.dims2()?;
    let m = x.dim(0)?;
    let parts = rayon::current_num_threads().min(k / MIN_ROWS_PER_THREAD);
    if m > SMALL_BATCH || parts < 2 || w.dtype() != DType::F32 || x.dtype() != DType::F32 {
        return Ok(None);
    }
    let (storage, layout) = w.storage_and_layout();
    let (Storage::Cpu(cpu), Some((start, end))) = (&*storage, layout.contiguous_offsets()) else {
        return Ok(None);
    };
    let w = &cpu.as_slice::<f32>()?[start..end];
    let x = x.flatten_all()?.to_vec1::<f32>()?;
    let rows_per_part = k.div_ceil(parts);
    let y = (0..k.div_ceil(rows_per_part))
        .into_par_iter()
        .map(|p| {
            let (r0, r1) = (p * rows_per_part, k.min((p + 1) * rows_per_part));
            let mut y = vec![0f32; m * n];
            // One row reads each weight row once anyway: whole rows stream best.
            let block = if m == 1 { n } else { COLUMNS_PER_BLOCK };
            for c0 in (0..n).step_by(block) {
                let c1 = n.min(c0 + block);
                for r in 0..m {
                    crate::gemv_cpu::add_rows(
                        &mut y[r * n + c0..r * n + c1],
                        &x[r * k + r0..r * k + r1],
                        &w[r0 * n + c0..r1 * n],
                        n,
                    );
                }
            }
            y
        })
        .collect::<Vec<Vec<f32>>>()
        .into_iter()
        // In slab order, so the sums do not depend on how the pool ran the slabs.
        .reduce(|mut a, b| {
            for (x, y) in a.iter_mut().zip(&b) {
                *x += y;
            }
            a
        })
        .expect("at least two slabs");
    Ok(Some(Tensor::from_vec(y, (m, n), &Device::Cpu)?))
}

impl Weight {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Weight::Dense(w) => match small_batch_matmul(x, w)? {
                Some(y) => y,
                None => x.matmul(w)?,
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
    fn a_small_batch_split_over_threads_matches_the_whole_product() {
        let dev = Device::Cpu;
        // 200 inputs over 3 threads: slabs of 67, 67 and 66 rows; 1000 outputs: column
        // blocks of 256 and a shorter last one.
        let w = Tensor::randn(0f32, 1.0, (1000, 200), &dev).unwrap();
        let ours = Linear::new(&w, None).unwrap();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        for m in [1, 3, SMALL_BATCH] {
            let x = Tensor::randn(0f32, 1.0, (m, 200), &dev).unwrap();
            let want = x.matmul(&w.t().unwrap()).unwrap();
            let got = pool.install(|| ours.forward(&x).unwrap());
            assert_eq!(got.dims(), &[m, 1000]);
            assert!(max_abs_diff(&got, &want) < 1e-4, "{m} rows");
        }
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
