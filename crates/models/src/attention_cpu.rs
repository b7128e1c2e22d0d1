//! CPU paged attention over a ragged batch.
//!
//! Work is split into independent tasks (sequence x kv head x chunk of query tokens) run
//! with rayon. A task reads each K/V block of its sequence once and serves every query
//! head of the group from it, using an online (streaming) softmax with f32 accumulation.
//! Inner loops are over contiguous `head_dim` slices so the compiler vectorises them.
//!
//! Cache layout per layer: [num_blocks, kv_heads, block_size, head_dim].

use rayon::prelude::*;

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
            attend_dispatch(q, k_cache, v_cache, &seqs[si], g, first, n, shape)
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

/// Runs `attend_task` compiled for AVX2+FMA when the CPU has them (the crate itself is
/// built for baseline x86-64, where the inner loops would be 4-wide without FMA).
#[allow(clippy::too_many_arguments)]
fn attend_dispatch<T: CacheElem>(
    q: &[f32],
    k_cache: &[T],
    v_cache: &[T],
    seq: &SeqSpan<'_>,
    g: usize,
    first: usize,
    n: usize,
    shape: &AttnShape,
) -> Vec<f32> {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the features the function is compiled for were detected just above.
            return unsafe { attend_task_avx2(q, k_cache, v_cache, seq, g, first, n, shape) };
        }
    }
    attend_task::<T, false>(q, k_cache, v_cache, seq, g, first, n, shape)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn attend_task_avx2<T: CacheElem>(
    q: &[f32],
    k_cache: &[T],
    v_cache: &[T],
    seq: &SeqSpan<'_>,
    g: usize,
    first: usize,
    n: usize,
    shape: &AttnShape,
) -> Vec<f32> {
    attend_task::<T, true>(q, k_cache, v_cache, seq, g, first, n, shape)
}

/// One task: query tokens `first..first+n` of `seq`, the query heads of kv head `g`.
/// Returns [n, group, head_dim]. `FMA`: use fused multiply-add (only where the CPU has it,
/// elsewhere `mul_add` is a slow library call).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn attend_task<T: CacheElem, const FMA: bool>(
    q: &[f32],
    k_cache: &[T],
    v_cache: &[T],
    seq: &SeqSpan<'_>,
    g: usize,
    first: usize,
    n: usize,
    shape: &AttnShape,
) -> Vec<f32> {
    let (h, kvh, d, bs) = (
        shape.num_heads,
        shape.num_kv_heads,
        shape.head_dim,
        shape.block_size,
    );
    let group = h / kvh;
    let nq = n * group;
    // Query vectors, pre-scaled, and each query's position.
    let mut qs = vec![0f32; nq * d];
    let mut qpos = vec![0usize; nq];
    for t in 0..n {
        let tok = seq.token_start + first + t;
        for j in 0..group {
            let src = (tok * h + g * group + j) * d;
            let qi = t * group + j;
            for (o, x) in qs[qi * d..(qi + 1) * d].iter_mut().zip(&q[src..src + d]) {
                *o = x * shape.scale;
            }
            qpos[qi] = seq.start_pos + first + t;
        }
    }
    let lo_of = |p: usize| shape.window.map_or(0, |w| (p + 1).saturating_sub(w));
    let max_pos = seq.start_pos + first + n - 1;
    let min_lo = lo_of(seq.start_pos + first);

    let mut m = vec![f32::NEG_INFINITY; nq];
    let mut l = vec![0f32; nq];
    let mut acc = vec![0f32; nq * d];
    let mut scores = vec![0f32; bs];

    // Blocks are scattered in memory, which defeats the hardware prefetcher: request the
    // K/V of the block `ahead` positions further while working on the current one.
    let (first_block, last_block) = (min_lo / bs, max_pos / bs);
    let block_elems = bs * d;
    let ahead = (8192 / (block_elems * std::mem::size_of::<T>())).max(1);
    let prefetch_block = |b: usize| {
        if FMA && b <= last_block {
            let base = ((seq.block_table[b] as usize * kvh + g) * bs) * d;
            prefetch(&k_cache[base..base + block_elems]);
            prefetch(&v_cache[base..base + block_elems]);
        }
    };
    for b in first_block..(first_block + ahead).min(last_block + 1) {
        prefetch_block(b);
    }
    for b in first_block..=last_block {
        prefetch_block(b + ahead);
        let block_start = b * bs;
        let block_len = bs.min(max_pos + 1 - block_start);
        let base = ((seq.block_table[b] as usize * kvh + g) * bs) * d;
        let kb = &k_cache[base..base + block_len * d];
        let vb = &v_cache[base..base + block_len * d];
        for qi in 0..nq {
            let p = qpos[qi];
            let lo = lo_of(p).max(block_start) - block_start;
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
            let mut sum = l[qi] * correction;
            for j in lo..hi {
                let w = (scores[j] - new_m).exp();
                sum += w;
                axpy::<T, FMA>(a, w, &vb[j * d..(j + 1) * d]);
            }
            l[qi] = sum;
            m[qi] = new_m;
        }
    }
    for qi in 0..nq {
        let inv = if l[qi] > 0.0 { 1.0 / l[qi] } else { 0.0 };
        for x in acc[qi * d..(qi + 1) * d].iter_mut() {
            *x *= inv;
        }
    }
    acc
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

    /// Plain softmax attention over a contiguous context, for comparison.
    fn naive(q: &[f32], k: &[f32], v: &[f32], ctx: usize, qpos: usize, d: usize) -> Vec<f32> {
        let scale = 1.0 / (d as f32).sqrt();
        let scores: Vec<f32> = (0..=qpos.min(ctx - 1))
            .map(|j| (0..d).map(|i| q[i] * k[j * d + i]).sum::<f32>() * scale)
            .collect();
        let max = scores.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let w: Vec<f32> = scores.iter().map(|s| (s - max).exp()).collect();
        let z: f32 = w.iter().sum();
        (0..d)
            .map(|i| {
                w.iter()
                    .enumerate()
                    .map(|(j, wj)| wj * v[j * d + i])
                    .sum::<f32>()
                    / z
            })
            .collect()
    }

    #[test]
    fn matches_naive_attention_with_scattered_blocks() {
        let (d, bs, ctx) = (12, 3, 10);
        let shape = AttnShape {
            num_heads: 2,
            num_kv_heads: 1,
            head_dim: d,
            block_size: bs,
            scale: 1.0 / (d as f32).sqrt(),
            window: None,
        };
        let val = |i: usize| ((i * 7919) % 97) as f32 / 50.0 - 1.0;
        let k: Vec<f32> = (0..ctx * d).map(val).collect();
        let v: Vec<f32> = (0..ctx * d).map(|i| val(i + 13)).collect();
        let block_table = [5u32, 0, 3, 1];
        let slots: Vec<usize> = (0..ctx)
            .map(|p| block_table[p / bs] as usize * bs + p % bs)
            .collect();
        let mut kc = vec![0f32; 6 * bs * d];
        let mut vc = vec![0f32; 6 * bs * d];
        write_kv(&mut kc, &mut vc, &k, &v, &slots, &shape);
        // Last 4 positions are new tokens; two query heads each.
        let q: Vec<f32> = (0..4 * 2 * d).map(|i| val(i + 5)).collect();
        let seq = SeqSpan {
            token_start: 0,
            num_tokens: 4,
            start_pos: ctx - 4,
            block_table: &block_table,
        };
        let out = paged_attention(&q, &kc, &vc, &[seq], &shape);
        for t in 0..4 {
            for head in 0..2 {
                let qv = &q[(t * 2 + head) * d..(t * 2 + head + 1) * d];
                let want = naive(qv, &k, &v, ctx, ctx - 4 + t, d);
                let got = &out[(t * 2 + head) * d..(t * 2 + head + 1) * d];
                for (a, b) in want.iter().zip(got) {
                    assert!((a - b).abs() < 1e-5, "{a} vs {b}");
                }
            }
        }
    }
}
