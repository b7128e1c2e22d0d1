//! CPU paged attention over a ragged batch.
//!
//! Work is split into independent tasks (sequence x kv head x chunk of query tokens) run
//! with rayon. A task reads each K/V block of its sequence once and serves every query
//! head of the group from it, using an online (streaming) softmax with f32 accumulation.
//! Two kernels do a task: the row kernel (below) scores each query row against the keys
//! where they lie, which suits the few rows of a decode step; the tile kernel
//! (`attention_cpu_tile`, AVX2+FMA) transposes each key block once and scores 4 rows x 16
//! keys at a time, which pays off from a handful of rows up (prefill chunks, verification).
//!
//! Cache layout per layer: [num_blocks, kv_heads, block_size, head_dim].

use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
use crate::attention_cpu_tile;

/// Element type of a KV cache buffer (math is always f32).
pub trait CacheElem: Copy + Send + Sync + Default + 'static {
    fn to_f32(self) -> f32;
    fn from_f32(x: f32) -> Self;
}

impl CacheElem for f32 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
    #[inline(always)]
    fn from_f32(x: f32) -> Self {
        x
    }
}

impl CacheElem for half::bf16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        half::bf16::to_f32(self)
    }
    #[inline(always)]
    fn from_f32(x: f32) -> Self {
        half::bf16::from_f32(x)
    }
}

/// Shapes shared by every sequence of one attention call.
#[derive(Debug, Clone, Copy)]
pub struct AttnShape {
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub block_size: usize,
    pub scale: f32,
    /// Attend only to the last `window` positions (the query's own included).
    pub window: Option<usize>,
}

/// One sequence's new tokens: rows `token_start..token_start+num_tokens` of q/out,
/// at positions `start_pos..`.
#[derive(Debug, Clone, Copy)]
pub struct SeqSpan<'a> {
    pub token_start: usize,
    pub num_tokens: usize,
    pub start_pos: usize,
    pub block_table: &'a [u32],
}

/// Query tokens per task: enough to amortise reading K/V, small enough to spread a long
/// prefill over cores.
const QUERY_CHUNK: usize = 32;

/// Query rows from which a task uses the tile kernel (prefill chunks, speculative
/// verification); below it (decode: one token x the group) the row kernel, which reads
/// keys in place instead of transposing each block first.
#[cfg(target_arch = "x86_64")]
const TILE_MIN_ROWS: usize = 8;

impl AttnShape {
    /// First position a query at `pos` attends to.
    pub(crate) fn first_visible(&self, pos: usize) -> usize {
        self.window.map_or(0, |w| (pos + 1).saturating_sub(w))
    }

    /// Offset of kv head `g`'s rows in logical block `b` of `seq`.
    pub(crate) fn block_base(&self, seq: &SeqSpan<'_>, b: usize, g: usize) -> usize {
        ((seq.block_table[b] as usize * self.num_kv_heads + g) * self.block_size) * self.head_dim
    }
}

/// One task's query rows, row `t * group + j` for token `t` of the chunk and query head
/// `j` of the kv head's group: pre-scaled vectors and each row's position (nondecreasing
/// in the row).
pub(crate) struct TaskQueries {
    pub qs: Vec<f32>,
    pub pos: Vec<usize>,
}

impl TaskQueries {
    fn gather(
        q: &[f32],
        seq: &SeqSpan<'_>,
        g: usize,
        first: usize,
        n: usize,
        shape: &AttnShape,
    ) -> Self {
        let (h, d) = (shape.num_heads, shape.head_dim);
        let group = h / shape.num_kv_heads;
        let mut qs = vec![0f32; n * group * d];
        let mut pos = vec![0usize; n * group];
        for t in 0..n {
            let tok = seq.token_start + first + t;
            for j in 0..group {
                let src = (tok * h + g * group + j) * d;
                let qi = t * group + j;
                for (o, x) in qs[qi * d..(qi + 1) * d].iter_mut().zip(&q[src..src + d]) {
                    *o = x * shape.scale;
                }
                pos[qi] = seq.start_pos + first + t;
            }
        }
        Self { qs, pos }
    }

    pub fn rows(&self) -> usize {
        self.pos.len()
    }

    /// The blocks any row attends to, first and last.
    pub fn block_range(&self, shape: &AttnShape) -> (usize, usize) {
        let lo = shape.first_visible(self.pos[0]);
        (
            lo / shape.block_size,
            self.pos[self.rows() - 1] / shape.block_size,
        )
    }
}

/// Writes `k`/`v` ([T, kv_heads, head_dim], f32) into the cache at `slots[t]`.
pub fn write_kv<T: CacheElem>(
    k_cache: &mut [T],
    v_cache: &mut [T],
    k: &[f32],
    v: &[f32],
    slots: &[usize],
    shape: &AttnShape,
) {
    let (kvh, d, bs) = (shape.num_kv_heads, shape.head_dim, shape.block_size);
    for (t, &slot) in slots.iter().enumerate() {
        let (block, offset) = (slot / bs, slot % bs);
        for g in 0..kvh {
            let src = (t * kvh + g) * d;
            let dst = ((block * kvh + g) * bs + offset) * d;
            for (o, x) in k_cache[dst..dst + d].iter_mut().zip(&k[src..src + d]) {
                *o = T::from_f32(*x);
            }
            for (o, x) in v_cache[dst..dst + d].iter_mut().zip(&v[src..src + d]) {
                *o = T::from_f32(*x);
            }
        }
    }
}

/// Causal attention of `q` ([T, heads, head_dim]) over the cached context of each
/// sequence (which must already hold the new tokens' K/V). Returns [T, heads, head_dim].
pub fn paged_attention<T: CacheElem>(
    q: &[f32],
    k_cache: &[T],
    v_cache: &[T],
    seqs: &[SeqSpan<'_>],
    shape: &AttnShape,
) -> Vec<f32> {
    let (h, kvh, d) = (shape.num_heads, shape.num_kv_heads, shape.head_dim);
    let group = h / kvh;
    let total_tokens: usize = seqs.iter().map(|s| s.num_tokens).sum();
    let mut tasks = Vec::new();
    for (si, s) in seqs.iter().enumerate() {
        for g in 0..kvh {
            let mut first = 0;
            while first < s.num_tokens {
                let n = QUERY_CHUNK.min(s.num_tokens - first);
                tasks.push((si, g, first, n));
                first += n;
            }
        }
    }
    let results: Vec<Vec<f32>> = tasks
        .par_iter()
        .map(|&(si, g, first, n)| {
            let queries = TaskQueries::gather(q, &seqs[si], g, first, n, shape);
            attend_dispatch(queries, k_cache, v_cache, &seqs[si], g, shape)
        })
        .collect();

    let mut out = vec![0f32; total_tokens * h * d];
    for (&(si, g, first, n), res) in tasks.iter().zip(&results) {
        let s = &seqs[si];
        for t in 0..n {
            let tok = s.token_start + first + t;
            let dst = (tok * h + g * group) * d;
            let src = t * group * d;
            out[dst..dst + group * d].copy_from_slice(&res[src..src + group * d]);
        }
    }
    out
}

/// Runs the tile kernel or the row kernel compiled for AVX2+FMA when the CPU has them
/// (the crate itself is built for baseline x86-64, where the inner loops would be 4-wide
/// without FMA).
fn attend_dispatch<T: CacheElem>(
    queries: TaskQueries,
    k_cache: &[T],
    v_cache: &[T],
    seq: &SeqSpan<'_>,
    g: usize,
    shape: &AttnShape,
) -> Vec<f32> {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            if queries.rows() >= TILE_MIN_ROWS && attention_cpu_tile::fits(shape) {
                // SAFETY: the features the kernel is compiled for were detected just above.
                return unsafe {
                    attention_cpu_tile::attend_tile(queries, k_cache, v_cache, seq, g, shape)
                };
            }
            // SAFETY: as above.
            return unsafe { attend_task_avx2(&queries, k_cache, v_cache, seq, g, shape) };
        }
    }
    attend_task::<T, false>(&queries, k_cache, v_cache, seq, g, shape)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn attend_task_avx2<T: CacheElem>(
    queries: &TaskQueries,
    k_cache: &[T],
    v_cache: &[T],
    seq: &SeqSpan<'_>,
    g: usize,
    shape: &AttnShape,
) -> Vec<f32> {
    attend_task::<T, true>(queries, k_cache, v_cache, seq, g, shape)
}

/// One K/V block a task reads: its first position, the keys the task uses in it (the
/// last block ends at the task's last query), and its offset in the cache.
pub(crate) struct KvBlock {
    pub start: usize,
    pub len: usize,
    pub base: usize,
}

/// The blocks of kv head `g` that a task's rows attend to, in order. With `prefetch`, each
/// step first asks the CPU for the block about 8 KiB of keys further on: blocks are
/// scattered in memory, which defeats the hardware prefetcher.
pub(crate) fn kv_blocks<'a, T: CacheElem>(
    queries: &TaskQueries,
    k_cache: &'a [T],
    v_cache: &'a [T],
    seq: &'a SeqSpan<'a>,
    g: usize,
    shape: &'a AttnShape,
    prefetch: bool,
) -> impl Iterator<Item = KvBlock> + 'a {
    let (first, last) = queries.block_range(shape);
    let max_pos = queries.pos[queries.rows() - 1];
    let bs = shape.block_size;
    let block_elems = bs * shape.head_dim;
    let ahead = (8192 / (block_elems * std::mem::size_of::<T>())).max(1);
    let fetch = move |b: usize| {
        if prefetch && b <= last {
            let base = shape.block_base(seq, b, g);
            self::prefetch(&k_cache[base..base + block_elems]);
            self::prefetch(&v_cache[base..base + block_elems]);
        }
    };
    for b in first..first + ahead {
        fetch(b);
    }
    (first..=last).map(move |b| {
        fetch(b + ahead);
        let start = b * bs;
        KvBlock {
            start,
            len: bs.min(max_pos + 1 - start),
            base: shape.block_base(seq, b, g),
        }
    })
}

/// The row kernel: one task's query rows, each scored against the keys where they lie.
/// Returns [rows, head_dim]. `FMA`: use fused multiply-add and the vector `exp` (only
/// where the CPU has them, elsewhere `mul_add` is a slow library call).
#[inline(always)]
fn attend_task<T: CacheElem, const FMA: bool>(
    queries: &TaskQueries,
    k_cache: &[T],
    v_cache: &[T],
    seq: &SeqSpan<'_>,
    g: usize,
    shape: &AttnShape,
) -> Vec<f32> {
    let (d, bs) = (shape.head_dim, shape.block_size);
    let nq = queries.rows();
    let (qs, qpos) = (&queries.qs, &queries.pos);

    let mut m = vec![f32::NEG_INFINITY; nq];
    let mut l = vec![0f32; nq];
    let mut acc = vec![0f32; nq * d];
    let mut scores = vec![0f32; bs];

    for KvBlock {
        start: block_start,
        len: block_len,
        base,
    } in kv_blocks(queries, k_cache, v_cache, seq, g, shape, FMA)
    {
        let kb = &k_cache[base..base + block_len * d];
        let vb = &v_cache[base..base + block_len * d];
        for qi in 0..nq {
            let p = qpos[qi];
            let lo = shape.first_visible(p).max(block_start) - block_start;
            if p < block_start || lo >= block_len {
                continue;
            }
            let hi = (p + 1 - block_start).min(block_len);
            let qv = &qs[qi * d..(qi + 1) * d];
            let mut block_max = f32::NEG_INFINITY;
            for j in lo..hi {
                let s = dot::<T, FMA>(qv, &kb[j * d..(j + 1) * d]);
                scores[j] = s;
                block_max = block_max.max(s);
            }
            let new_m = m[qi].max(block_max);
            let correction = (m[qi] - new_m).exp();
            let a = &mut acc[qi * d..(qi + 1) * d];
            if correction != 1.0 {
                for x in a.iter_mut() {
                    *x *= correction;
                }
            }
            exp_shifted::<FMA>(&mut scores[lo..hi], new_m);
            let mut sum = l[qi] * correction;
            for j in lo..hi {
                sum += scores[j];
                axpy::<T, FMA>(a, scores[j], &vb[j * d..(j + 1) * d]);
            }
            l[qi] = sum;
            m[qi] = new_m;
        }
    }
    normalize_rows(&mut acc, &l, d);
    acc
}

/// Divides each row of `acc` by its softmax denominator.
pub(crate) fn normalize_rows(acc: &mut [f32], l: &[f32], d: usize) {
    for (row, &z) in acc.chunks_exact_mut(d).zip(l) {
        let inv = if z > 0.0 { 1.0 / z } else { 0.0 };
        for x in row.iter_mut() {
            *x *= inv;
        }
    }
}

/// `x = exp(x - m)` over a slice; `VECTOR`: with the AVX2 `exp` (the caller runs with
/// AVX2+FMA enabled).
#[inline(always)]
fn exp_shifted<const VECTOR: bool>(x: &mut [f32], m: f32) {
    #[cfg(target_arch = "x86_64")]
    if VECTOR {
        // SAFETY: `VECTOR` is only set by callers compiled for, and running on, AVX2+FMA.
        unsafe { attention_cpu_tile::exp_shifted(x, m) };
        return;
    }
    for v in x.iter_mut() {
        *v = (*v - m).exp();
    }
}

/// Asks the CPU to pull `data` into cache (a hint: it never faults).
#[inline(always)]
fn prefetch<T>(data: &[T]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let bytes = std::mem::size_of_val(data);
        let ptr = data.as_ptr() as *const i8;
        for off in (0..bytes).step_by(64) {
            // SAFETY: `ptr + off` stays inside `data`; prefetches have no side effects.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(ptr.add(off)) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = data;
}

#[inline(always)]
fn madd<const FMA: bool>(a: f32, b: f32, acc: f32) -> f32 {
    if FMA {
        a.mul_add(b, acc)
    } else {
        acc + a * b
    }
}

/// Dot product in 16 independent lanes so it vectorises without fast-math.
#[inline(always)]
fn dot<T: CacheElem, const FMA: bool>(a: &[f32], b: &[T]) -> f32 {
    const LANES: usize = 16;
    let mut lanes = [0f32; LANES];
    let mut ca = a.chunks_exact(LANES);
    let mut cb = b.chunks_exact(LANES);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for i in 0..LANES {
            lanes[i] = madd::<FMA>(x[i], y[i].to_f32(), lanes[i]);
        }
    }
    let mut s: f32 = lanes.iter().sum();
    for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
        s = madd::<FMA>(*x, y.to_f32(), s);
    }
    s
}

/// `acc += w * v`.
#[inline(always)]
fn axpy<T: CacheElem, const FMA: bool>(acc: &mut [f32], w: f32, v: &[T]) {
    for (a, x) in acc.iter_mut().zip(v) {
        *a = madd::<FMA>(w, x.to_f32(), *a);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plain softmax attention of one query over a contiguous context, positions
    /// `lo..=qpos`, for comparison.
    fn naive(q: &[f32], k: &[f32], v: &[f32], lo: usize, qpos: usize, d: usize) -> Vec<f32> {
        let scale = 1.0 / (d as f32).sqrt();
        let scores: Vec<f32> = (lo..=qpos)
            .map(|j| (0..d).map(|i| q[i] * k[j * d + i]).sum::<f32>() * scale)
            .collect();
        let max = scores.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let w: Vec<f32> = scores.iter().map(|s| (s - max).exp()).collect();
        let z: f32 = w.iter().sum();
        (0..d)
            .map(|i| {
                w.iter()
                    .enumerate()
                    .map(|(j, wj)| wj * v[(lo + j) * d + i])
                    .sum::<f32>()
                    / z
            })
            .collect()
    }

    fn val(i: usize) -> f32 {
        ((i * 7919) % 97) as f32 / 50.0 - 1.0
    }

    /// Attention of the last `new` of `ctx` tokens with a cache of element type `T` in
    /// scattered blocks, against `naive` per kv head (every kv head has its own K/V).
    fn check_against_naive<T: CacheElem>(shape: AttnShape, ctx: usize, new: usize, tol: f32) {
        let (h, kvh, d, bs) = (
            shape.num_heads,
            shape.num_kv_heads,
            shape.head_dim,
            shape.block_size,
        );
        let k: Vec<f32> = (0..ctx * kvh * d).map(val).collect();
        let v: Vec<f32> = (0..ctx * kvh * d).map(|i| val(i + 13)).collect();
        let num_blocks = ctx.div_ceil(bs) + 2;
        // Logical blocks in reverse order, physical block 0 unused.
        let block_table: Vec<u32> = (0..ctx.div_ceil(bs))
            .map(|i| (num_blocks - 1 - i) as u32)
            .collect();
        let slots: Vec<usize> = (0..ctx)
            .map(|p| block_table[p / bs] as usize * bs + p % bs)
            .collect();
        let mut kc = vec![T::default(); num_blocks * kvh * bs * d];
        let mut vc = vec![T::default(); num_blocks * kvh * bs * d];
        write_kv(&mut kc, &mut vc, &k, &v, &slots, &shape);
        // What the cache holds, per kv head, as f32 (bf16 rounds).
        let held = |x: &[f32], g: usize| -> Vec<f32> {
            (0..ctx)
                .flat_map(|p| &x[(p * kvh + g) * d..(p * kvh + g + 1) * d])
                .map(|x| T::from_f32(*x).to_f32())
                .collect()
        };
        let q: Vec<f32> = (0..new * h * d).map(|i| val(i + 5)).collect();
        let seq = SeqSpan {
            token_start: 0,
            num_tokens: new,
            start_pos: ctx - new,
            block_table: &block_table,
        };
        let out = paged_attention(&q, &kc, &vc, &[seq], &shape);
        for g in 0..kvh {
            let (kg, vg) = (held(&k, g), held(&v, g));
            for t in 0..new {
                let p = ctx - new + t;
                for head in g * h / kvh..(g + 1) * h / kvh {
                    let row = (t * h + head) * d;
                    let want = naive(&q[row..row + d], &kg, &vg, shape.first_visible(p), p, d);
                    for (a, b) in want.iter().zip(&out[row..row + d]) {
                        assert!((a - b).abs() < tol, "token {t} head {head}: {a} vs {b}");
                    }
                }
            }
        }
    }

    fn shape(h: usize, kvh: usize, d: usize, bs: usize, window: Option<usize>) -> AttnShape {
        AttnShape {
            num_heads: h,
            num_kv_heads: kvh,
            head_dim: d,
            block_size: bs,
            scale: 1.0 / (d as f32).sqrt(),
            window,
        }
    }

    #[test]
    fn matches_naive_attention_with_scattered_blocks() {
        // head_dim 12, blocks of 3: the row kernel whatever the number of rows.
        check_against_naive::<f32>(shape(2, 1, 12, 3, None), 10, 4, 1e-5);
    }

    #[test]
    fn tile_kernel_matches_naive_attention() {
        // 40 new tokens x a group of 3: the tile kernel on x86-64 with AVX2+FMA; head_dim
        // 40 takes register chunks of 4 and 1 vectors; the prompt ends mid-block.
        for window in [None, Some(20)] {
            check_against_naive::<f32>(shape(6, 2, 40, 16, window), 70, 40, 1e-5);
            check_against_naive::<half::bf16>(shape(6, 2, 40, 16, window), 70, 40, 1e-5);
            check_against_naive::<f32>(shape(4, 1, 64, 32, window), 100, 100, 1e-5);
        }
    }

    #[test]
    fn row_kernel_matches_naive_attention_in_decode() {
        for window in [None, Some(20)] {
            check_against_naive::<f32>(shape(6, 2, 40, 16, window), 70, 1, 1e-5);
            check_against_naive::<half::bf16>(shape(6, 2, 40, 16, window), 70, 1, 1e-5);
        }
    }
}
