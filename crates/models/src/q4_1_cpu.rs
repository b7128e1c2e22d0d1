//! Q4_1 weights times f32 activations on x86-64 CPUs with AVX2.
//!
//! candle 0.11 has SIMD dot products for Q4_0, Q8_0 and the K-quants but runs
//! Q4_1 with scalar code: SmolLM2-135M Q4_1 decoded at 25 tokens/s whatever
//! the batch, 0.15x its own f32 copy at batch 32 (`benches/forward.rs`).
//! This is the same arithmetic as candle's (and llama.cpp's): every
//! activation row is rounded to Q8_1 blocks by candle's own
//! `BlockQ8_1::from_float`, and a block pair contributes
//! `d4 * d8 * sum(q4 * q8) + m4 * s8`, the integer sum exact; only the order
//! in which the blocks' float terms are added differs.

use candle_core::quantized::k_quants::{BlockQ8_1, GgmlType};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use rayon::prelude::*;

use crate::error::Result;

/// Elements per block, and bytes of a Q4_1 and a Q8_1 block
/// (`d`, `m` or `s` as f16, then the quants).
const QK: usize = 32;
const Q4_1_BYTES: usize = 20;
const Q8_1_BYTES: usize = 36;

/// Output columns one task computes.
const COLUMNS_PER_TASK: usize = 16;

/// `x [m, k] @ w^T` for a CPU Q4_1 `w [n, k]`, or `None` when this kernel
/// does not apply (another type or device, non-f32 input, no AVX2/FMA).
pub fn try_matmul(w: &QTensor, x: &Tensor) -> Result<Option<Tensor>> {
    if w.dtype() != GgmlDType::Q4_1
        || !matches!(x.device(), Device::Cpu)
        || x.dtype() != DType::F32
        || !has_avx2()
    {
        return Ok(None);
    }
    let (n, k) = w.shape().dims2()?;
    let (m, xk) = x.dims2()?;
    if m == 0 || xk != k || !k.is_multiple_of(QK) {
        return Ok(None);
    }
    let x = x.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
    let weights = w.data()?;
    let y = matmul(&x, m, k, &weights, n);
    Ok(Some(Tensor::from_vec(y, (m, n), &Device::Cpu)?))
}

fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `x` row-major `[m, k]`, `weights` the `[n, k / 32]` Q4_1 blocks; returns
/// `[m, n]` row-major. Callers check AVX2 and FMA first.
fn matmul(x: &[f32], m: usize, k: usize, weights: &[u8], n: usize) -> Vec<f32> {
    let nb = k / QK;
    let mut activations = vec![BlockQ8_1::zeros(); m * nb];
    for (row, blocks) in x.chunks_exact(k).zip(activations.chunks_exact_mut(nb)) {
        BlockQ8_1::from_float(row, blocks);
    }
    // SAFETY: BlockQ8_1 is repr(C), 36 bytes (asserted by candle), plain data.
    let act: &[u8] = unsafe {
        std::slice::from_raw_parts(activations.as_ptr() as *const u8, m * nb * Q8_1_BYTES)
    };
    let w_row = nb * Q4_1_BYTES;
    let a_row = nb * Q8_1_BYTES;
    // Column-major while computing, so each task owns a contiguous slice and
    // reads each weight row once for all m activation rows.
    let mut by_column = vec![0f32; n * m];
    by_column
        .par_chunks_mut(COLUMNS_PER_TASK * m)
        .enumerate()
        .for_each(|(task, out)| {
            let first = task * COLUMNS_PER_TASK;
            for (j, column) in out.chunks_exact_mut(m).enumerate() {
                let w = &weights[(first + j) * w_row..(first + j + 1) * w_row];
                for (r, y) in column.iter_mut().enumerate() {
                    let a = &act[r * a_row..(r + 1) * a_row];
                    // SAFETY: `try_matmul` checked AVX2 and FMA; both slices hold nb blocks.
                    *y = unsafe { dot(w, a, nb) };
                }
            }
        });
    if m == 1 {
        return by_column;
    }
    let mut y = vec![0f32; m * n];
    for (c, column) in by_column.chunks_exact(m).enumerate() {
        for (r, v) in column.iter().enumerate() {
            y[r * n + c] = *v;
        }
    }
    y
}

fn f16_at(bytes: &[u8], at: usize) -> f32 {
    half::f16::from_bits(u16::from_le_bytes([bytes[at], bytes[at + 1]])).to_f32()
}

/// One Q4_1 row against one Q8_1 row, `nb` blocks each (llama.cpp's
/// `ggml_vec_dot_q4_1_q8_1`, AVX2 branch).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot(w: &[u8], a: &[u8], nb: usize) -> f32 {
    use std::arch::x86_64::*;
    let low_nibbles = _mm_set1_epi8(0x0F);
    let ones = _mm256_set1_epi16(1);
    let mut acc = _mm256_setzero_ps();
    let mut offsets = 0f32;
    for b in 0..nb {
        let wb = &w[b * Q4_1_BYTES..(b + 1) * Q4_1_BYTES];
        let ab = &a[b * Q8_1_BYTES..(b + 1) * Q8_1_BYTES];
        let (d4, m4) = (f16_at(wb, 0), f16_at(wb, 2));
        let (d8, s8) = (f16_at(ab, 0), f16_at(ab, 2));
        offsets += m4 * s8;
        // Quants 0..16 are the low nibbles of the 16 bytes, 16..32 the high ones.
        let packed = _mm_loadu_si128(wb.as_ptr().add(4) as *const __m128i);
        let lo = _mm_and_si128(packed, low_nibbles);
        let hi = _mm_and_si128(_mm_srli_epi16(packed, 4), low_nibbles);
        let q4 = _mm256_set_m128i(hi, lo);
        let q8 = _mm256_loadu_si256(ab.as_ptr().add(4) as *const __m256i);
        // u8 x i8 pairs summed to i16 (at most 2 * 15 * 127), then to i32.
        let pairs = _mm256_maddubs_epi16(q4, q8);
        let sums = _mm256_madd_epi16(pairs, ones);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d4 * d8), _mm256_cvtepi32_ps(sums), acc);
    }
    let quad = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
    let pair = _mm_add_ps(quad, _mm_movehl_ps(quad, quad));
    let one = _mm_add_ss(pair, _mm_shuffle_ps(pair, pair, 1));
    _mm_cvtss_f32(one) + offsets
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn dot(_w: &[u8], _a: &[u8], _nb: usize) -> f32 {
    unreachable!("has_avx2 is false off x86-64")
}

#[cfg(test)]
mod tests {
    use candle_core::quantized::QMatMul;
    use candle_core::Module;

    use super::*;

    #[test]
    fn matches_candles_scalar_q4_1_matmul() {
        if !has_avx2() {
            eprintln!("SKIPPED: no AVX2 on this CPU");
            return;
        }
        let dev = Device::Cpu;
        for (m, n, k) in [(1, 5, 64), (3, 17, 128), (17, 40, 576), (1, 64, 1536)] {
            let w = Tensor::randn(0f32, 1.0, (n, k), &dev).unwrap();
            let q = QTensor::quantize(&w, GgmlDType::Q4_1).unwrap();
            let x = Tensor::randn(0f32, 1.0, (m, k), &dev).unwrap();
            let ours = try_matmul(&q, &x).unwrap().expect("applies");
            let theirs = QMatMul::from_qtensor(q).unwrap().forward(&x).unwrap();
            let scale = theirs
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            let diff = (ours - theirs)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(diff <= 1e-5 * scale, "{m}x{n}x{k}: {diff} (scale {scale})");
        }
    }

    #[test]
    fn other_types_and_dtypes_are_left_to_candle() {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 1.0, (4, 32), &dev).unwrap();
        let q8 = QTensor::quantize(&w, GgmlDType::Q8_0).unwrap();
        let x = Tensor::randn(0f32, 1.0, (2, 32), &dev).unwrap();
        assert!(try_matmul(&q8, &x).unwrap().is_none());
        let q4 = QTensor::quantize(&w, GgmlDType::Q4_1).unwrap();
        let bf16 = x.to_dtype(DType::BF16).unwrap();
        assert!(try_matmul(&q4, &bf16).unwrap().is_none());
        let empty = Tensor::zeros((0, 32), DType::F32, &dev).unwrap();
        assert!(try_matmul(&q4, &empty).unwrap().is_none());
    }
}
