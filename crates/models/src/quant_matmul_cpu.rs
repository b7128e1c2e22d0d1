//! Q4_1 and Q8_0 weights times f32 activations on x86-64 CPUs with AVX2.
//!
//! candle 0.11 runs Q4_1 with scalar code: SmolLM2-135M Q4_1 decoded at 25
//! tokens/s whatever the batch, 0.15x its own f32 copy at batch 32
//! (`benches/forward.rs`). Its Q8_0 kernel is SIMD but reads a weight row
//! once per activation row unless the shape suits its VNNI repacking (not
//! SmolLM2's 576-wide LM head, which took a fifth of a serving profile).
//! Here a weight row's blocks are unpacked once for a tile of activation
//! rows. The arithmetic is candle's (and llama.cpp's): every activation row
//! is rounded to 8-bit blocks by candle's own `BlockQ8_1::from_float` (Q8_0
//! rounds the same way), and a block pair contributes `dw * da * sum(qw *
//! qa)`, plus `m4 * s8` for Q4_1, the integer sum exact; only the order in
//! which the blocks' float terms are added differs.

use candle_core::quantized::k_quants::{BlockQ8_1, GgmlType};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use rayon::prelude::*;

use crate::error::Result;

/// Elements per block, and bytes of a Q4_1 and a Q8_1 block
/// (`d`, `m` or `s` as f16, then the quants).
const QK: usize = 32;
const Q4_1_BYTES: usize = 20;
const Q8_0_BYTES: usize = 34;
const Q8_1_BYTES: usize = 36;

/// Output columns one task computes.
const COLUMNS_PER_TASK: usize = 16;

/// The weight types this module runs.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Q4_1,
    Q8_0,
}

impl Kind {
    fn of(dtype: GgmlDType) -> Option<Kind> {
        match dtype {
            GgmlDType::Q4_1 => Some(Kind::Q4_1),
            GgmlDType::Q8_0 => Some(Kind::Q8_0),
            _ => None,
        }
    }

    fn block_bytes(self) -> usize {
        match self {
            Kind::Q4_1 => Q4_1_BYTES,
            Kind::Q8_0 => Q8_0_BYTES,
        }
    }
}

/// `x [m, k] @ w^T` for a CPU Q4_1 or Q8_0 `w [n, k]`, or `None` when this
/// kernel does not apply (another type or device, non-f32 input, no
/// AVX2/FMA/F16C).
pub fn try_matmul(w: &QTensor, x: &Tensor) -> Result<Option<Tensor>> {
    let Some(kind) = Kind::of(w.dtype()) else {
        return Ok(None);
    };
    if !matches!(x.device(), Device::Cpu) || x.dtype() != DType::F32 || !has_avx2() {
        return Ok(None);
    }
    let (n, k) = w.shape().dims2()?;
    let (m, xk) = x.dims2()?;
    if m == 0 || xk != k || !k.is_multiple_of(QK) {
        return Ok(None);
    }
    let x = x.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
    let weights = w.data()?;
    let y = matmul(kind, &x, m, k, &weights, n);
    Ok(Some(Tensor::from_vec(y, (m, n), &Device::Cpu)?))
}

fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
            && std::arch::is_x86_feature_detected!("f16c")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Activation rows rounded to Q8_1, split for the kernel: each block's
/// scale `d` and `s = d * sum(q)` as f32, and its 32 quants.
struct Q8Rows {
    scales: Vec<[f32; 2]>,
    quants: Vec<i8>,
    blocks_per_row: usize,
}

impl Q8Rows {
    fn new(x: &[f32], k: usize) -> Self {
        let nb = k / QK;
        let rows = x.len() / k;
        let mut blocks = vec![BlockQ8_1::zeros(); rows * nb];
        for (row, out) in x.chunks_exact(k).zip(blocks.chunks_exact_mut(nb)) {
            BlockQ8_1::from_float(row, out);
        }
        // SAFETY: BlockQ8_1 is repr(C), 36 bytes (asserted by candle), plain data.
        let bytes: &[u8] = unsafe {
            std::slice::from_raw_parts(blocks.as_ptr() as *const u8, rows * nb * Q8_1_BYTES)
        };
        let mut scales = Vec::with_capacity(rows * nb);
        let mut quants = Vec::with_capacity(rows * k);
        for block in bytes.chunks_exact(Q8_1_BYTES) {
            scales.push([f16_at(block, 0), f16_at(block, 2)]);
            quants.extend(block[4..].iter().map(|&q| q as i8));
        }
        Q8Rows {
            scales,
            quants,
            blocks_per_row: nb,
        }
    }

    fn row(&self, r: usize) -> Row<'_> {
        let nb = self.blocks_per_row;
        (
            &self.scales[r * nb..(r + 1) * nb],
            &self.quants[r * nb * QK..(r + 1) * nb * QK],
        )
    }
}

/// Activation rows one weight row is read for at a time: its blocks are
/// unpacked once per tile instead of once per row.
const ROWS_PER_TILE: usize = 4;

/// One activation row: its blocks' `[d, s]` and its quants.
type Row<'a> = (&'a [[f32; 2]], &'a [i8]);

/// One weight row of `kind` against `R` activation rows.
fn dot_rows<const R: usize>(kind: Kind, w: &[u8], rows: &[Row; R]) -> [f32; R] {
    // SAFETY: `try_matmul` checked the CPU features; every slice holds the
    // row's blocks.
    unsafe {
        match kind {
            Kind::Q4_1 => dot_tile_q4_1(w, rows),
            Kind::Q8_0 => dot_tile_q8_0(w, rows),
        }
    }
}

/// `x` row-major `[m, k]`, `weights` the `[n, k / 32]` blocks of `kind`;
/// returns `[m, n]` row-major. Callers check AVX2, FMA and F16C first.
fn matmul(kind: Kind, x: &[f32], m: usize, k: usize, weights: &[u8], n: usize) -> Vec<f32> {
    let act = Q8Rows::new(x, k);
    let w_row = k / QK * kind.block_bytes();
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
                // Whole tiles, then the rows left one at a time.
                let mut r = 0;
                while r + ROWS_PER_TILE <= m {
                    let rows: [Row; ROWS_PER_TILE] = std::array::from_fn(|t| act.row(r + t));
                    column[r..r + ROWS_PER_TILE].copy_from_slice(&dot_rows(kind, w, &rows));
                    r += ROWS_PER_TILE;
                }
                for (y, r) in column[r..].iter_mut().zip(r..m) {
                    *y = dot_rows(kind, w, &[act.row(r)])[0];
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

/// One Q4_1 weight row against a tile of Q8_1 activation rows (llama.cpp's
/// `ggml_vec_dot_q4_1_q8_1`, AVX2 branch, with the weight block unpacked
/// once for the tile).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_tile_q4_1<const R: usize>(w: &[u8], rows: &[Row; R]) -> [f32; R] {
    use std::arch::x86_64::*;
    let nb = w.len() / Q4_1_BYTES;
    let low_nibbles = _mm_set1_epi8(0x0F);
    let ones = _mm256_set1_epi16(1);
    let mut acc = [_mm256_setzero_ps(); R];
    let mut offsets = [0f32; R];
    for b in 0..nb {
        let wb = w.as_ptr().add(b * Q4_1_BYTES);
        // d and m, two f16s side by side.
        let dm = _mm_cvtph_ps(_mm_cvtsi32_si128((wb as *const i32).read_unaligned()));
        let d4 = _mm_cvtss_f32(dm);
        let m4 = _mm_cvtss_f32(_mm_shuffle_ps(dm, dm, 1));
        // Quants 0..16 are the low nibbles of the 16 bytes, 16..32 the high ones.
        let packed = _mm_loadu_si128(wb.add(4) as *const __m128i);
        let lo = _mm_and_si128(packed, low_nibbles);
        let hi = _mm_and_si128(_mm_srli_epi16(packed, 4), low_nibbles);
        let q4 = _mm256_set_m128i(hi, lo);
        for t in 0..R {
            let (scales, quants) = rows[t];
            let [d8, s8] = *scales.get_unchecked(b);
            offsets[t] += m4 * s8;
            let q8 = _mm256_loadu_si256(quants.as_ptr().add(b * QK) as *const __m256i);
            // u8 x i8 pairs summed to i16 (at most 2 * 15 * 127), then to i32.
            let sums = _mm256_madd_epi16(_mm256_maddubs_epi16(q4, q8), ones);
            acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d4 * d8), _mm256_cvtepi32_ps(sums), acc[t]);
        }
    }
    std::array::from_fn(|t| sum_lanes(acc[t]) + offsets[t])
}

/// One Q8_0 weight row against a tile of 8-bit activation rows (llama.cpp's
/// `ggml_vec_dot_q8_0_q8_0`, AVX2 branch: |w| times a with w's signs, so
/// that the unsigned-by-signed multiply applies).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_tile_q8_0<const R: usize>(w: &[u8], rows: &[Row; R]) -> [f32; R] {
    use std::arch::x86_64::*;
    let nb = w.len() / Q8_0_BYTES;
    let ones = _mm256_set1_epi16(1);
    let mut acc = [_mm256_setzero_ps(); R];
    for b in 0..nb {
        let wb = w.as_ptr().add(b * Q8_0_BYTES);
        let scale = (wb as *const u16).read_unaligned() as i32;
        let dw = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(scale)));
        let qw = _mm256_loadu_si256(wb.add(2) as *const __m256i);
        let abs_w = _mm256_sign_epi8(qw, qw);
        for t in 0..R {
            let (scales, quants) = rows[t];
            let [da, _] = *scales.get_unchecked(b);
            let qa = _mm256_loadu_si256(quants.as_ptr().add(b * QK) as *const __m256i);
            // |w| (at most 127 as u8) times a with w's signs: pairs fit i16.
            let sums =
                _mm256_madd_epi16(_mm256_maddubs_epi16(abs_w, _mm256_sign_epi8(qa, qw)), ones);
            acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(dw * da), _mm256_cvtepi32_ps(sums), acc[t]);
        }
    }
    std::array::from_fn(|t| sum_lanes(acc[t]))
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn sum_lanes(v: std::arch::x86_64::__m256) -> f32 {
    use std::arch::x86_64::*;
    let quad = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let pair = _mm_add_ps(quad, _mm_movehl_ps(quad, quad));
    _mm_cvtss_f32(_mm_add_ss(pair, _mm_shuffle_ps(pair, pair, 1)))
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn dot_tile_q4_1<const R: usize>(_w: &[u8], _rows: &[Row; R]) -> [f32; R] {
    unreachable!("has_avx2 is false off x86-64")
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn dot_tile_q8_0<const R: usize>(_w: &[u8], _rows: &[Row; R]) -> [f32; R] {
    unreachable!("has_avx2 is false off x86-64")
}

#[cfg(test)]
mod tests {
    use candle_core::quantized::QMatMul;
    use candle_core::Module;

    use super::*;

    #[test]
    fn matches_candles_q4_1_and_q8_0_matmuls() {
        if !has_avx2() {
            eprintln!("SKIPPED: no AVX2 on this CPU");
            return;
        }
        let dev = Device::Cpu;
        // Widths that are not multiples of 256, where candle does not repack Q8_0
        // for VNNI (that path rounds activations in other blocks).
        let shapes = [(1, 5, 64), (3, 17, 128), (17, 40, 576), (1, 64, 1600)];
        for ((m, n, k), dtype) in shapes
            .into_iter()
            .flat_map(|s| [(s, GgmlDType::Q4_1), (s, GgmlDType::Q8_0)])
        {
            let w = Tensor::randn(0f32, 1.0, (n, k), &dev).unwrap();
            let q = QTensor::quantize(&w, dtype).unwrap();
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
            assert!(
                diff <= 1e-5 * scale,
                "{dtype:?} {m}x{n}x{k}: {diff} (scale {scale})"
            );
        }
    }

    #[test]
    fn other_types_and_dtypes_are_left_to_candle() {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 1.0, (4, 32), &dev).unwrap();
        let q4_0 = QTensor::quantize(&w, GgmlDType::Q4_0).unwrap();
        let x = Tensor::randn(0f32, 1.0, (2, 32), &dev).unwrap();
        assert!(try_matmul(&q4_0, &x).unwrap().is_none());
        let q4 = QTensor::quantize(&w, GgmlDType::Q4_1).unwrap();
        let bf16 = x.to_dtype(DType::BF16).unwrap();
        assert!(try_matmul(&q4, &bf16).unwrap().is_none());
        let empty = Tensor::zeros((0, 32), DType::F32, &dev).unwrap();
        assert!(try_matmul(&q4, &empty).unwrap().is_none());
    }
}
