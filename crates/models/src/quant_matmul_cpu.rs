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
use crate::output_columns::OutputColumns;

/// Elements per block, and bytes of a Q4_1 and a Q8_1 block
/// (`d`, `m` or `s` as f16, then the quants).
const QK: usize = 32;
const Q4_1_BYTES: usize = 20;
const Q8_0_BYTES: usize = 34;
const Q8_1_BYTES: usize = 36;

/// Output columns one task computes.
const COLUMNS_PER_TASK: usize = 16;

/// The instruction sets a kernel is compiled for: AVX2 (with FMA and F16C), or AVX2 with
/// AVX-512 VNNI, whose one `vpdpbusd` replaces the `vpmaddubsw` + `vpmaddwd` pair of
/// every block product (as llama.cpp's own kernels do where the CPU has it).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Isa {
    Avx2,
    Avx2Vnni,
}

impl Isa {
    /// The best this CPU runs, if it runs any.
    fn detect() -> Option<Isa> {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            if !(has!("avx2") && has!("fma") && has!("f16c")) {
                return None;
            }
            if has!("avx512vnni") && has!("avx512vl") {
                return Some(Isa::Avx2Vnni);
            }
            Some(Isa::Avx2)
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            None
        }
    }
}

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
    let Some(isa) = Isa::detect() else {
        return Ok(None);
    };
    if !matches!(x.device(), Device::Cpu) || x.dtype() != DType::F32 {
        return Ok(None);
    }
    let (n, k) = w.shape().dims2()?;
    let (m, xk) = x.dims2()?;
    if m == 0 || xk != k || !k.is_multiple_of(QK) {
        return Ok(None);
    }
    let x = x.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
    let weights = w.data()?;
    let y = matmul(kind, isa, &x, m, k, &weights, n);
    Ok(Some(Tensor::from_vec(y, (m, n), &Device::Cpu)?))
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
fn dot_rows<const R: usize>(kind: Kind, isa: Isa, w: &[u8], rows: &[Row; R]) -> [f32; R] {
    // SAFETY: `isa` came from `Isa::detect` (or a test that checked it); every slice
    // holds the row's blocks.
    unsafe {
        match (kind, isa) {
            (Kind::Q4_1, Isa::Avx2) => dot_tile_q4_1_avx2(w, rows),
            (Kind::Q4_1, Isa::Avx2Vnni) => dot_tile_q4_1_vnni(w, rows),
            (Kind::Q8_0, Isa::Avx2) => dot_tile_q8_0_avx2(w, rows),
            (Kind::Q8_0, Isa::Avx2Vnni) => dot_tile_q8_0_vnni(w, rows),
        }
    }
}

/// `x` row-major `[m, k]`, `weights` the `[n, k / 32]` blocks of `kind`;
/// returns `[m, n]` row-major. `isa` must be what the CPU runs.
fn matmul(
    kind: Kind,
    isa: Isa,
    x: &[f32],
    m: usize,
    k: usize,
    weights: &[u8],
    n: usize,
) -> Vec<f32> {
    let act = Q8Rows::new(x, k);
    let w_row = k / QK * kind.block_bytes();
    let mut y = vec![0f32; m * n];
    let out = OutputColumns::new(&mut y);
    // A task owns COLUMNS_PER_TASK output columns (weight rows). It goes through the
    // activations ROWS_PER_BLOCK rows at a time, so those rows stay in cache for all
    // its weight rows, and the weight rows (a few KiB) stay in L1 throughout.
    (0..n.div_ceil(COLUMNS_PER_TASK))
        .into_par_iter()
        .for_each(|task| {
            let columns = task * COLUMNS_PER_TASK..(n.min((task + 1) * COLUMNS_PER_TASK));
            for r0 in (0..m).step_by(ROWS_PER_BLOCK) {
                let r1 = m.min(r0 + ROWS_PER_BLOCK);
                for c in columns.clone() {
                    let w = &weights[c * w_row..(c + 1) * w_row];
                    // Whole tiles, then the rows left one at a time.
                    let mut r = r0;
                    while r + ROWS_PER_TILE <= r1 {
                        let rows: [Row; ROWS_PER_TILE] = std::array::from_fn(|t| act.row(r + t));
                        for (t, v) in dot_rows(kind, isa, w, &rows).into_iter().enumerate() {
                            // SAFETY: column c is this task's alone.
                            unsafe { out.set((r + t) * n + c, v) };
                        }
                        r += ROWS_PER_TILE;
                    }
                    for r in r..r1 {
                        // SAFETY: as above.
                        unsafe { out.set(r * n + c, dot_rows(kind, isa, w, &[act.row(r)])[0]) };
                    }
                }
            }
        });
    y
}

/// Activation rows a task works through before moving on (about 20-50 KiB of quants).
const ROWS_PER_BLOCK: usize = 64;

fn f16_at(bytes: &[u8], at: usize) -> f32 {
    half::f16::from_bits(u16::from_le_bytes([bytes[at], bytes[at + 1]])).to_f32()
}

/// The kernels compiled for each instruction set; the bodies are one generic each.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_tile_q4_1_avx2<const R: usize>(w: &[u8], rows: &[Row; R]) -> [f32; R] {
    dot_tile_q4_1::<R, false>(w, rows)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
unsafe fn dot_tile_q4_1_vnni<const R: usize>(w: &[u8], rows: &[Row; R]) -> [f32; R] {
    dot_tile_q4_1::<R, true>(w, rows)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_tile_q8_0_avx2<const R: usize>(w: &[u8], rows: &[Row; R]) -> [f32; R] {
    dot_tile_q8_0::<R, false>(w, rows)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
unsafe fn dot_tile_q8_0_vnni<const R: usize>(w: &[u8], rows: &[Row; R]) -> [f32; R] {
    dot_tile_q8_0::<R, true>(w, rows)
}

/// Sums of 4 adjacent u8 x i8 products, as i32 lanes: one VNNI instruction, or two
/// AVX2 ones (the pairs' i16 sums cannot overflow here: at most 2 * 127 * 127).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn dot_u8_i8<const VNNI: bool>(
    u: std::arch::x86_64::__m256i,
    s: std::arch::x86_64::__m256i,
) -> std::arch::x86_64::__m256i {
    use std::arch::x86_64::*;
    if VNNI {
        _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s)
    } else {
        _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1))
    }
}

/// One Q4_1 weight row against a tile of Q8_1 activation rows (llama.cpp's
/// `ggml_vec_dot_q4_1_q8_1`, AVX2 branch, with the weight block unpacked
/// once for the tile).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn dot_tile_q4_1<const R: usize, const VNNI: bool>(w: &[u8], rows: &[Row; R]) -> [f32; R] {
    use std::arch::x86_64::*;
    let nb = w.len() / Q4_1_BYTES;
    let low_nibbles = _mm_set1_epi8(0x0F);
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
            let sums = dot_u8_i8::<VNNI>(q4, q8);
            acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d4 * d8), _mm256_cvtepi32_ps(sums), acc[t]);
        }
    }
    std::array::from_fn(|t| sum_lanes(acc[t]) + offsets[t])
}

/// One Q8_0 weight row against a tile of 8-bit activation rows (llama.cpp's
/// `ggml_vec_dot_q8_0_q8_0`, AVX2 branch: |w| times a with w's signs, so
/// that the unsigned-by-signed multiply applies).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn dot_tile_q8_0<const R: usize, const VNNI: bool>(w: &[u8], rows: &[Row; R]) -> [f32; R] {
    use std::arch::x86_64::*;
    let nb = w.len() / Q8_0_BYTES;
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
            // |w| (at most 127 as u8) times a with w's signs.
            let sums = dot_u8_i8::<VNNI>(abs_w, _mm256_sign_epi8(qa, qw));
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
mod off_x86 {
    //! `Isa::detect` is `None` off x86-64, so these are never called.
    use super::Row;
    macro_rules! never {
        ($($name:ident),*) => {$(
            pub unsafe fn $name<const R: usize>(_w: &[u8], _rows: &[Row; R]) -> [f32; R] {
                unreachable!("no x86-64 kernels off x86-64")
            }
        )*};
    }
    never!(
        dot_tile_q4_1_avx2,
        dot_tile_q4_1_vnni,
        dot_tile_q8_0_avx2,
        dot_tile_q8_0_vnni
    );
}
#[cfg(not(target_arch = "x86_64"))]
use off_x86::*;

#[cfg(test)]
mod tests {
    use candle_core::quantized::QMatMul;
    use candle_core::Module;

    use super::*;

    /// Every instruction set this CPU runs, the best last.
    fn isas() -> Vec<Isa> {
        match Isa::detect() {
            None => vec![],
            Some(Isa::Avx2) => vec![Isa::Avx2],
            Some(Isa::Avx2Vnni) => vec![Isa::Avx2, Isa::Avx2Vnni],
        }
    }

    #[test]
    fn matches_candles_q4_1_and_q8_0_matmuls() {
        if isas().is_empty() {
            eprintln!("SKIPPED: no AVX2 on this CPU");
            return;
        }
        let dev = Device::Cpu;
        // Widths that are not multiples of 256, where candle does not repack Q8_0
        // for VNNI (that path rounds activations in other blocks).
        let shapes = [
            (1, 5, 64),
            (3, 17, 128),
            (17, 40, 576),
            (1, 64, 1600),
            (37, 33, 192),
            (70, 20, 64),
        ];
        for ((m, n, k), dtype, isa) in shapes.into_iter().flat_map(|s| {
            [GgmlDType::Q4_1, GgmlDType::Q8_0]
                .into_iter()
                .flat_map(move |t| isas().into_iter().map(move |i| (s, t, i)))
        }) {
            let w = Tensor::randn(0f32, 1.0, (n, k), &dev).unwrap();
            let q = QTensor::quantize(&w, dtype).unwrap();
            let x = Tensor::randn(0f32, 1.0, (m, k), &dev).unwrap();
            let kind = Kind::of(dtype).unwrap();
            let x_rows = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let y = matmul(kind, isa, &x_rows, m, k, &q.data().unwrap(), n);
            let ours = Tensor::from_vec(y, (m, n), &dev).unwrap();
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
                "{dtype:?} {isa:?} {m}x{n}x{k}: {diff} (scale {scale})"
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
