//! f32 products `x [m, k] @ w^T` with `w [n, k]` for a few activation rows (decode
//! batches) on x86-64 CPUs with AVX2 or AVX-512.
//!
//! At these sizes the product is bound by reading the weight, and the GEMM crate did
//! worse than that bound: it runs a one-row product on one thread whatever its
//! parallelism setting (SmolLM2 f32 at one request: 82% of the samples on one of two
//! threads), and at 8 rows it reached 40% of the memory-bound speed. Here each task owns
//! output columns, i.e. weight rows, read front to back once (a stream the hardware
//! prefetcher follows) for every activation row: a tile of `R` activation rows by `C`
//! weight rows keeps its `R x C` partial sums in registers, so a loaded weight vector
//! serves `R` products and an activation vector `C`.

use candle_core::{DType, Device, Storage, Tensor};
use rayon::prelude::*;

use crate::error::Result;
use crate::output_columns::OutputColumns;

/// Activation rows up to which a dense product runs here.
pub(crate) const MAX_ROWS: usize = 32;

/// `x [m, k] @ w^T` for an f32 `w [n, k]` on the CPU and `m <= MAX_ROWS`, giving
/// `[m, n]`; `None` for other dtypes, devices, sizes and strides, or a CPU without AVX2
/// and FMA.
pub(crate) fn try_matmul(x: &Tensor, w: &Tensor) -> Result<Option<Tensor>> {
    let (n, k) = w.dims2()?;
    let (m, xk) = x.dims2()?;
    let Some(isa) = Isa::detect() else {
        return Ok(None);
    };
    if m == 0 || m > MAX_ROWS || xk != k || w.dtype() != DType::F32 || x.dtype() != DType::F32 {
        return Ok(None);
    }
    let (storage, w_layout) = w.storage_and_layout();
    let (Storage::Cpu(cpu), Some((start, end))) = (&*storage, w_layout.contiguous_offsets()) else {
        return Ok(None);
    };
    let w = &cpu.as_slice::<f32>()?[start..end];
    let x = x.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
    let ops = Operands { x: &x, m, k, w, n };
    let y = matmul(isa, &ops);
    Ok(Some(Tensor::from_vec(y, (m, n), &Device::Cpu)?))
}

/// The instruction sets the tile is compiled for.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Isa {
    Avx2,
    Avx512,
}

impl Isa {
    fn detect() -> Option<Isa> {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                return Some(Isa::Avx512);
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return Some(Isa::Avx2);
            }
        }
        None
    }

    /// Activation rows and weight rows of one tile: its sums, the weight vectors
    /// and one activation vector fit the registers. One or two activation rows take
    /// more weight rows: more rows streamed at once kept memory busier (one row, 230 MB
    /// from DRAM: 4 weight rows 9.3 ms, 8 rows 7.3 ms).
    fn tile_shape(self, m: usize) -> (usize, usize) {
        match (self, m) {
            (Isa::Avx2, 1) => (1, 6),
            (Isa::Avx2, _) => (3, 3),
            (Isa::Avx512, 1) => (1, 8),
            (Isa::Avx512, 2) => (2, 8),
            (Isa::Avx512, _) => (4, 4),
        }
    }
}

/// One product's operands: `x` row-major `[m, k]`, `w` row-major `[n, k]`.
struct Operands<'a> {
    x: &'a [f32],
    m: usize,
    k: usize,
    w: &'a [f32],
    n: usize,
}

/// `x @ w^T`, returned `[m, n]`. The output columns (weight rows) are split into about
/// four tasks per thread, so a thread that finishes early takes over work; a task reads
/// its weight rows front to back once for all activation rows, tile by tile.
fn matmul(isa: Isa, ops: &Operands) -> Vec<f32> {
    let (tile_rows, tile_cols) = isa.tile_shape(ops.m);
    let mut y = vec![0f32; ops.m * ops.n];
    let out = OutputColumns::new(&mut y);
    let tiles = ops.n.div_ceil(tile_cols);
    let tasks = (rayon::current_num_threads() * 4).clamp(1, tiles.max(1));
    let per_task = tiles.div_ceil(tasks).max(1) * tile_cols;
    (0..ops.n.div_ceil(per_task))
        .into_par_iter()
        .for_each(|task| {
            let c_end = ops.n.min((task + 1) * per_task);
            for c0 in (task * per_task..c_end).step_by(tile_cols) {
                let cols = tile_cols.min(c_end - c0);
                for r0 in (0..ops.m).step_by(tile_rows) {
                    let rows = tile_rows.min(ops.m - r0);
                    let t = Tile { r0, rows, c0, cols };
                    // SAFETY: `isa` was detected; the columns are this task's alone.
                    unsafe { tile(isa, ops, &out, t) };
                }
            }
        });
    y
}

/// Activation rows `r0..r0 + rows` and weight rows (output columns) `c0..c0 + cols`.
#[derive(Clone, Copy)]
struct Tile {
    r0: usize,
    rows: usize,
    c0: usize,
    cols: usize,
}

/// Writes every dot product of the tile's activation and weight rows to the output.
///
/// # Safety
/// `isa` is supported by the CPU; no other task writes those output columns.
unsafe fn tile(isa: Isa, ops: &Operands, out: &OutputColumns, t: Tile) {
    assert!(t.r0 + t.rows <= ops.m && t.c0 + t.cols <= ops.n);
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => tile_avx512(ops, out, t),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => tile_avx2(ops, out, t),
        #[cfg(not(target_arch = "x86_64"))]
        _ => unreachable!("Isa::detect is None off x86-64"),
    }
}

/// Every (rows, cols) a tile can have, each compiled with its sums in
/// registers, inside a function compiled for the instruction set.
macro_rules! tiles {
    ($name:ident, $features:literal, $v:ty, [$($r:literal)*], $cs:tt) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $features)]
        unsafe fn $name(ops: &Operands, out: &OutputColumns, t: Tile) {
            match t.rows {
                $($r => tiles!(@cols $v, $r, $cs, ops, out, t),)*
                _ => unreachable!("at most tile_shape rows"),
            }
        }
    };
    (@cols $v:ty, $r:literal, [$($c:literal)*], $ops:ident, $out:ident, $t:ident) => {
        match $t.cols {
            $($c => tile_generic::<$v, $r, $c>($ops, $out, $t.r0, $t.c0),)*
            _ => unreachable!("at most tile_shape columns"),
        }
    };
}
tiles!(tile_avx512, "avx512f", simd::Avx512, [1 2 3 4], [1 2 3 4 5 6 7 8]);
tiles!(tile_avx2, "avx2,fma", simd::Avx2, [1 2 3], [1 2 3 4 5 6]);

/// A tile: `R x C` vectors of partial dot products in registers while it walks
/// along `k`, each weight vector loaded once for `R` rows and each activation vector once
/// for `C` weight rows; the lanes added at the end.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn tile_generic<V: simd::Vector, const R: usize, const C: usize>(
    ops: &Operands,
    out: &OutputColumns,
    r0: usize,
    c0: usize,
) {
    let (n, k) = (ops.n, ops.k);
    let x = |r: usize| ops.x.as_ptr().add((r0 + r) * k);
    let w = |c: usize| ops.w.as_ptr().add((c0 + c) * k);
    let mut acc = [[V::zero(); C]; R];
    let whole = k - k % V::LANES;
    for i in (0..whole).step_by(V::LANES) {
        // The same place two tiles on: with several rows streamed at once the hardware
        // prefetcher alone left the loads waiting on memory (SmolLM2-sized rows from
        // DRAM, 8 activation rows: 13.7 -> 10.9 ms per 230 MB).
        for c in 0..C {
            let ahead = w(c).wrapping_add(i + 2 * C * k) as *const i8;
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(ahead);
        }
        let wv: [V; C] = std::array::from_fn(|c| V::load(w(c).add(i)));
        for (r, sums) in acc.iter_mut().enumerate() {
            let xv = V::load(x(r).add(i));
            for (s, wc) in sums.iter_mut().zip(&wv) {
                *s = V::fma(xv, *wc, *s);
            }
        }
    }
    for (r, sums) in acc.iter().enumerate() {
        for (c, s) in sums.iter().enumerate() {
            let tail = (whole..k).map(|i| *x(r).add(i) * *w(c).add(i)).sum::<f32>();
            out.set((r0 + r) * n + c0 + c, V::sum(*s) + tail);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod simd {
    //! The few vector operations the tile uses, for each instruction set. Always
    //! inlined into a function compiled for that set.
    use std::arch::x86_64::*;

    pub(super) trait Vector: Copy {
        const LANES: usize;
        unsafe fn zero() -> Self;
        unsafe fn load(p: *const f32) -> Self;
        /// `a * b + c`.
        unsafe fn fma(a: Self, b: Self, c: Self) -> Self;
        /// The sum of the lanes.
        unsafe fn sum(v: Self) -> f32;
    }

    /// A register type and its intrinsics; `sum` differs by more than a name.
    macro_rules! vector {
        ($name:ident, $reg:ty, $lanes:literal, $zero:ident, $load:ident, $fma:ident, |$v:ident| $sum:expr) => {
            #[derive(Clone, Copy)]
            pub(super) struct $name($reg);

            impl Vector for $name {
                const LANES: usize = $lanes;
                #[inline(always)]
                unsafe fn zero() -> Self {
                    $name($zero())
                }
                #[inline(always)]
                unsafe fn load(p: *const f32) -> Self {
                    $name($load(p))
                }
                #[inline(always)]
                unsafe fn fma(a: Self, b: Self, c: Self) -> Self {
                    $name($fma(a.0, b.0, c.0))
                }
                #[inline(always)]
                unsafe fn sum($v: Self) -> f32 {
                    $sum
                }
            }
        };
    }

    vector!(
        Avx2,
        __m256,
        8,
        _mm256_setzero_ps,
        _mm256_loadu_ps,
        _mm256_fmadd_ps,
        |v| {
            let quad = _mm_add_ps(_mm256_castps256_ps128(v.0), _mm256_extractf128_ps::<1>(v.0));
            let pair = _mm_add_ps(quad, _mm_movehl_ps(quad, quad));
            _mm_cvtss_f32(_mm_add_ss(pair, _mm_movehdup_ps(pair)))
        }
    );
    vector!(
        Avx512,
        __m512,
        16,
        _mm512_setzero_ps,
        _mm512_loadu_ps,
        _mm512_fmadd_ps,
        |v| _mm512_reduce_add_ps(v.0)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `[m, n]` from `x [m, k]` and `w [n, k]`.
    fn naive(x: &[f32], m: usize, k: usize, w: &[f32], n: usize) -> Vec<f32> {
        let mut y = vec![0f32; m * n];
        for r in 0..m {
            for c in 0..n {
                y[r * n + c] = (0..k).map(|i| x[r * k + i] * w[c * k + i]).sum();
            }
        }
        y
    }

    fn isas() -> Vec<Isa> {
        match Isa::detect() {
            None => vec![],
            Some(Isa::Avx2) => vec![Isa::Avx2],
            Some(Isa::Avx512) => vec![Isa::Avx2, Isa::Avx512],
        }
    }

    #[test]
    fn matches_a_plain_loop_for_every_tile_shape_and_tail() {
        if isas().is_empty() {
            eprintln!("skipped: this CPU has neither AVX2+FMA nor AVX-512");
            return;
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        // k: whole vectors of both widths and a 5-element tail; n: tiles of every width
        // and ones cut short; then a product shorter than a vector.
        for (k, n) in [(133, 295), (5, 7)] {
            let w: Vec<f32> = (0..n * k)
                .map(|i| ((i * 31) % 17) as f32 / 8.0 - 1.0)
                .collect();
            for isa in isas() {
                for m in 1..=MAX_ROWS {
                    let x: Vec<f32> = (0..m * k)
                        .map(|i| ((i * 7) % 13) as f32 / 6.0 - 1.0)
                        .collect();
                    let want = naive(&x, m, k, &w, n);
                    let ops = Operands {
                        x: &x,
                        m,
                        k,
                        w: &w,
                        n,
                    };
                    let got = pool.install(|| matmul(isa, &ops));
                    for (i, (g, e)) in got.iter().zip(&want).enumerate() {
                        assert!(
                            (g - e).abs() < 1e-3,
                            "{isa:?}, k {k}, {m} rows: row {} column {}: {g} vs {e}",
                            i / n,
                            i % n
                        );
                    }
                }
            }
        }
    }
}
