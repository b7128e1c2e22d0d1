//! The tile kernel of CPU paged attention (AVX2+FMA), for tasks with many query rows.
//!
//! Per K/V block: the block's keys are transposed once to [head_dim][keys] (and widened to
//! f32), so scores come 4 rows x 16 keys at a time from broadcast-FMAs with no horizontal
//! sums; softmax weights use a vector `exp`; each row's output is held in registers while
//! the block's values are added into it. The row kernel in `attention_cpu` reads keys in
//! place instead, which is cheaper for the few rows of a decode step.

use std::arch::x86_64::*;

use crate::attention_cpu::{
    kv_blocks, normalize_rows, AttnShape, CacheElem, KvBlock, SeqSpan, TaskQueries,
};

/// Keys per score tile: two 8-lane vectors.
const TILE_KEYS: usize = 16;
/// Query rows per score tile: 4 rows x 2 vectors = 8 independent accumulators, enough to
/// cover the FMA latency.
const TILE_ROWS: usize = 4;

/// Whether the kernel handles `shape`: whole vectors per head and whole score tiles per
/// block.
pub(crate) fn fits(shape: &AttnShape) -> bool {
    shape.head_dim.is_multiple_of(8) && shape.block_size.is_multiple_of(TILE_KEYS)
}

/// One task's attention (as the row kernel's `attend_task`). Returns [rows, head_dim].
///
/// # Safety
/// The CPU must have AVX2 and FMA, and `fits(shape)` must hold.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn attend_tile<T: CacheElem>(
    mut queries: TaskQueries,
    k_cache: &[T],
    v_cache: &[T],
    seq: &SeqSpan<'_>,
    g: usize,
    shape: &AttnShape,
) -> Vec<f32> {
    let (d, bs) = (shape.head_dim, shape.block_size);
    let nq = queries.rows();
    let blocks = kv_blocks(&queries, k_cache, v_cache, seq, g, shape, true);
    let max_pos = queries.pos[nq - 1];
    // Whole score tiles: pad with copies of the last row, computed and dropped.
    while !queries.rows().is_multiple_of(TILE_ROWS) {
        queries.qs.extend_from_within((nq - 1) * d..nq * d);
        queries.pos.push(max_pos);
    }
    let (qs, pos) = (&queries.qs, &queries.pos);

    let mut m = vec![f32::NEG_INFINITY; nq];
    let mut l = vec![0f32; nq];
    let mut acc = vec![0f32; nq * d];
    let mut scores = vec![0f32; pos.len() * bs];
    let mut keys_t = vec![0f32; d * bs];
    let mut values = Vec::new();

    for KvBlock {
        start: block_start,
        len,
        base,
    } in blocks
    {
        // Rows that see a key of this block; positions and first visible positions both
        // grow with the row, so they are one range.
        let r0 = pos[..nq].partition_point(|&p| p < block_start);
        let r1 = pos[..nq].partition_point(|&p| shape.first_visible(p) < block_start + len);
        if r0 >= r1 {
            continue;
        }
        for j in 0..len {
            for (i, k) in k_cache[base + j * d..base + (j + 1) * d].iter().enumerate() {
                keys_t[i * bs + j] = k.to_f32();
            }
        }
        let vb: &[f32] = match as_f32(&v_cache[base..base + len * d]) {
            Some(v) => v,
            None => {
                values.clear();
                values.extend(v_cache[base..base + len * d].iter().map(|x| x.to_f32()));
                &values
            }
        };

        let mut r = r0 / TILE_ROWS * TILE_ROWS;
        while r < r1 {
            for k0 in (0..len).step_by(TILE_KEYS) {
                score_tile(qs, r, &keys_t, bs, k0, d, &mut scores);
            }
            r += TILE_ROWS;
        }
        for row in r0..r1 {
            let p = pos[row];
            let lo = shape.first_visible(p).max(block_start) - block_start;
            let hi = (p + 1 - block_start).min(len);
            let s = &mut scores[row * bs + lo..row * bs + hi];
            let correction = softmax_step(s, &mut m[row], &mut l[row]);
            add_weighted_values(
                &mut acc[row * d..(row + 1) * d],
                correction,
                s,
                &vb[lo * d..hi * d],
            );
        }
    }
    normalize_rows(&mut acc, &l, d);
    acc
}

/// One online-softmax step of a row over one block's scores: turns `s` into the weights
/// exp(s - m') for the new running maximum m', updates the row's maximum `m` and
/// denominator `l`, and returns the factor exp(m - m') that rescales what the row has
/// accumulated so far.
#[target_feature(enable = "avx2,fma")]
unsafe fn softmax_step(s: &mut [f32], m: &mut f32, l: &mut f32) -> f32 {
    // 8 lanes at a time; the last, partial group padded with -inf, which never wins the
    // maximum and weighs exactly 0.
    let padded = |c: &[f32]| {
        let mut lanes = [f32::NEG_INFINITY; 8];
        lanes[..c.len()].copy_from_slice(c);
        lanes
    };
    let mut vmax = _mm256_set1_ps(f32::NEG_INFINITY);
    for c in s.chunks(8) {
        vmax = _mm256_max_ps(vmax, _mm256_loadu_ps(padded(c).as_ptr()));
    }
    let new_m = m.max(hmax(vmax));
    let correction = if new_m == *m { 1.0 } else { (*m - new_m).exp() };
    let mv = _mm256_set1_ps(new_m);
    let mut vsum = _mm256_setzero_ps();
    for c in s.chunks_mut(8) {
        let mut lanes = padded(c);
        let w = exp8(_mm256_sub_ps(_mm256_loadu_ps(lanes.as_ptr()), mv));
        vsum = _mm256_add_ps(vsum, w);
        _mm256_storeu_ps(lanes.as_mut_ptr(), w);
        let n = c.len();
        c.copy_from_slice(&lanes[..n]);
    }
    *l = *l * correction + hsum(vsum);
    *m = new_m;
    correction
}

/// Largest of 8 lanes.
#[target_feature(enable = "avx2,fma")]
unsafe fn hmax(v: __m256) -> f32 {
    let x = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let x = _mm_max_ps(x, _mm_movehl_ps(x, x));
    _mm_cvtss_f32(_mm_max_ss(x, _mm_movehdup_ps(x)))
}

/// Sum of 8 lanes.
#[target_feature(enable = "avx2,fma")]
unsafe fn hsum(v: __m256) -> f32 {
    let x = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let x = _mm_add_ps(x, _mm_movehl_ps(x, x));
    _mm_cvtss_f32(_mm_add_ss(x, _mm_movehdup_ps(x)))
}

/// `cache` as f32 when that is its element type (values need no widening then).
fn as_f32<T: CacheElem>(cache: &[T]) -> Option<&[f32]> {
    if std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>() {
        // SAFETY: T is f32, so the slice's layout is unchanged.
        Some(unsafe { std::slice::from_raw_parts(cache.as_ptr() as *const f32, cache.len()) })
    } else {
        None
    }
}

/// Scores of rows `r..r+4` against keys `k0..k0+16`: `scores[row * stride + k]` =
/// `qs[row] . key k`, from `keys_t` ([head_dim][stride]).
#[target_feature(enable = "avx2,fma")]
unsafe fn score_tile(
    qs: &[f32],
    r: usize,
    keys_t: &[f32],
    stride: usize,
    k0: usize,
    d: usize,
    scores: &mut [f32],
) {
    assert!((r + TILE_ROWS) * d <= qs.len() && (r + TILE_ROWS) * stride <= scores.len());
    assert!(k0 + TILE_KEYS <= stride && d * stride <= keys_t.len());
    let q = qs.as_ptr().add(r * d);
    let k = keys_t.as_ptr().add(k0);
    let mut a = [_mm256_setzero_ps(); 2 * TILE_ROWS];
    for i in 0..d {
        // SAFETY (all pointer reads and writes here): within the bounds asserted above.
        let k_lo = _mm256_loadu_ps(k.add(i * stride));
        let k_hi = _mm256_loadu_ps(k.add(i * stride + 8));
        for row in 0..TILE_ROWS {
            let qb = _mm256_broadcast_ss(&*q.add(row * d + i));
            a[2 * row] = _mm256_fmadd_ps(qb, k_lo, a[2 * row]);
            a[2 * row + 1] = _mm256_fmadd_ps(qb, k_hi, a[2 * row + 1]);
        }
    }
    let out = scores.as_mut_ptr().add(r * stride + k0);
    for row in 0..TILE_ROWS {
        _mm256_storeu_ps(out.add(row * stride), a[2 * row]);
        _mm256_storeu_ps(out.add(row * stride + 8), a[2 * row + 1]);
    }
}

/// `acc = acc * correction + sum_j w[j] * values[j]` (values: [w.len()][acc.len()]).
#[target_feature(enable = "avx2,fma")]
unsafe fn add_weighted_values(acc: &mut [f32], correction: f32, w: &[f32], values: &[f32]) {
    let d = acc.len();
    assert!(values.len() == w.len() * d && d.is_multiple_of(8));
    let mut c = 0;
    while c < d {
        // As many 8-lane accumulators as fit in registers beside the operands.
        let chunks = match (d - c) / 8 {
            n if n >= 8 => 8,
            n if n >= 4 => 4,
            n if n >= 2 => 2,
            _ => 1,
        };
        let (a, v) = (acc.as_mut_ptr().add(c), values.as_ptr().add(c));
        match chunks {
            8 => weighted_values_chunks::<8>(a, correction, w, v, d),
            4 => weighted_values_chunks::<4>(a, correction, w, v, d),
            2 => weighted_values_chunks::<2>(a, correction, w, v, d),
            _ => weighted_values_chunks::<1>(a, correction, w, v, d),
        }
        c += chunks * 8;
    }
}

/// `add_weighted_values` on `N` 8-lane chunks of a row starting at `acc` / `values`
/// (row stride `d`), with the chunks in registers across all of `w`.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn weighted_values_chunks<const N: usize>(
    acc: *mut f32,
    correction: f32,
    w: &[f32],
    values: *const f32,
    d: usize,
) {
    let cv = _mm256_set1_ps(correction);
    let mut a = [_mm256_setzero_ps(); N];
    for (c, x) in a.iter_mut().enumerate() {
        *x = _mm256_mul_ps(_mm256_loadu_ps(acc.add(8 * c)), cv);
    }
    for (j, &wj) in w.iter().enumerate() {
        let wb = _mm256_set1_ps(wj);
        let row = values.add(j * d);
        for (c, x) in a.iter_mut().enumerate() {
            *x = _mm256_fmadd_ps(wb, _mm256_loadu_ps(row.add(8 * c)), *x);
        }
    }
    for (c, x) in a.iter().enumerate() {
        _mm256_storeu_ps(acc.add(8 * c), *x);
    }
}

/// `x = exp(x - m)` over a slice, 8 lanes at a time.
///
/// # Safety
/// The CPU must have AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn exp_shifted(x: &mut [f32], m: f32) {
    let mv = _mm256_set1_ps(m);
    let mut chunks = x.chunks_exact_mut(8);
    for c in &mut chunks {
        let v = _mm256_loadu_ps(c.as_ptr());
        _mm256_storeu_ps(c.as_mut_ptr(), exp8(_mm256_sub_ps(v, mv)));
    }
    for v in chunks.into_remainder() {
        *v = (*v - m).exp();
    }
}

/// `exp` of 8 lanes to within a few ulp; lanes below -87 (where f32 `exp` is at most
/// subnormal), -inf included, give exactly 0. Cody-Waite reduction x = n ln2 + r,
/// |r| <= ln2 / 2, then a degree-6 Taylor polynomial for e^r (error below 2e-7 relative).
#[target_feature(enable = "avx2,fma")]
unsafe fn exp8(x: __m256) -> __m256 {
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let lowest = _mm256_set1_ps(-87.0);
    let keep = _mm256_cmp_ps::<_CMP_GE_OQ>(x, lowest);
    let x = _mm256_min_ps(_mm256_max_ps(x, lowest), _mm256_set1_ps(88.0));
    let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(
        x,
        _mm256_set1_ps(std::f32::consts::LOG2_E),
    ));
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), x);
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_LO), r);
    let mut p = _mm256_set1_ps(1.0 / 720.0);
    for c in [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
    }
    let pow2n = _mm256_slli_epi32::<23>(_mm256_add_epi32(
        _mm256_cvtps_epi32(n),
        _mm256_set1_epi32(127),
    ));
    _mm256_and_ps(_mm256_mul_ps(p, _mm256_castsi256_ps(pow2n)), keep)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn has_avx2_fma() -> bool {
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
    }

    #[test]
    fn vector_exp_matches_std_exp() {
        if !has_avx2_fma() {
            eprintln!("skipped: this CPU has no AVX2+FMA");
            return;
        }
        let mut xs: Vec<f32> = (0..4000).map(|i| -90.0 + i as f32 * 0.0225).collect();
        xs.extend([0.0, -0.0, -1e-8, -86.99, f32::NEG_INFINITY, 1.0, 10.0]);
        let mut got = xs.clone();
        // SAFETY: AVX2+FMA checked above.
        unsafe { exp_shifted(&mut got, 0.0) };
        for (x, y) in xs.iter().zip(&got) {
            let want = x.exp();
            if *x < -87.0 {
                assert_eq!(*y, 0.0, "exp({x})");
            } else {
                assert!(
                    (y - want).abs() <= 4e-7 * want,
                    "exp({x}) = {want}, got {y}"
                );
            }
        }
    }
}
