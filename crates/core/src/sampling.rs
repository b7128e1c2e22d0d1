//! Turning one row of logits into numbers the engine needs: the entropy of the
//! model's distribution (GlimpRouter's `H_init`), log-probabilities, the
//! distribution actually sampled from (temperature, top-k, top-p, min-p) and
//! the sampled token.
//!
//! Conventions for odd logits, used by every function here so they agree:
//! * `-inf` is a masked token: probability 0.
//! * `NaN` is treated as `-inf`; `+inf` as `f32::MAX` (the `+inf` tokens
//!   share all the mass).
//! * A row with no finite logit at all (everything masked) is treated as
//!   uniform, so that sampling always has a token to return.

use std::borrow::Cow;
use std::cmp::Ordering;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

use crate::{SamplingParams, TokenId};

/// One sequence's random stream. Each sequence owns one, so a seeded request
/// draws the same numbers whether it runs alone or batched with others.
#[derive(Debug, Clone)]
pub struct SeqRng(ChaCha20Rng);

impl SeqRng {
    /// Seeded from `seed`, or from the operating system's entropy when `None`.
    pub fn new(seed: Option<u64>) -> Self {
        match seed {
            Some(seed) => Self(ChaCha20Rng::seed_from_u64(seed)),
            None => Self(ChaCha20Rng::from_os_rng()),
        }
    }

    /// Uniform in `[0, 1)`.
    pub fn uniform(&mut self) -> f32 {
        self.0.random::<f32>()
    }

    /// Uniform in `[0, 1)`, with double precision.
    pub fn uniform_f64(&mut self) -> f64 {
        self.0.random::<f64>()
    }

    /// The underlying generator, for callers that need another distribution.
    pub fn rng(&mut self) -> &mut ChaCha20Rng {
        &mut self.0
    }
}

/// Maps the odd values to the conventions of this module (see its docs).
#[inline]
fn clean(x: f32) -> f32 {
    if x.is_nan() {
        f32::NEG_INFINITY
    } else {
        x.min(f32::MAX)
    }
}

/// The row to compute on and its largest logit, or `None` when the row has
/// no finite logit (the uniform convention). `NaN`s are left in place (every
/// loop below gives them zero mass: `exp(NaN) > 0` is false); a row holding
/// `+inf` is copied with it replaced by `f32::MAX`, which only odd rows pay.
fn prepare(logits: &[f32]) -> Option<(Cow<'_, [f32]>, f32)> {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
    if max == f32::INFINITY {
        let cleaned: Vec<f32> = logits.iter().map(|&x| clean(x)).collect();
        return Some((Cow::Owned(cleaned), f32::MAX));
    }
    (max > f32::NEG_INFINITY).then_some((Cow::Borrowed(logits), max))
}

/// `ln(sum(exp(x - max)))` over a prepared row.
fn log_sum_exp_shifted(logits: &[f32], max: f32) -> f32 {
    let mut sum = 0f64;
    for &x in logits {
        let e = (x - max).exp();
        if e > 0.0 {
            sum += f64::from(e);
        }
    }
    sum.ln() as f32
}

/// Index of the largest logit; ties go to the lowest id. Token 0 for an empty
/// or fully masked row.
pub fn argmax(logits: &[f32]) -> TokenId {
    let mut best = 0usize;
    let mut best_val = f32::NEG_INFINITY;
    for (i, &x) in logits.iter().enumerate() {
        if x > best_val {
            best = i;
            best_val = x;
        }
    }
    best as TokenId
}

/// `ln(sum(exp(logits)))`, computed stably. For a row with no finite logit it
/// is `ln(V)`, the value a row of zeros has (the uniform convention).
pub fn log_sum_exp(logits: &[f32]) -> f32 {
    match prepare(logits) {
        Some((row, max)) => max + log_sum_exp_shifted(&row, max),
        None => (logits.len() as f32).ln(),
    }
}

/// `log_softmax(logits)`: the model's raw log-probabilities (temperature 1).
pub fn log_softmax(logits: &[f32]) -> Vec<f32> {
    match prepare(logits) {
        Some((row, max)) => {
            let lse = max + log_sum_exp_shifted(&row, max);
            row.iter().map(|&x| clean(x) - lse).collect()
        }
        None => vec![-(logits.len() as f32).ln(); logits.len()],
    }
}

/// The model's raw log-probability of one token (no allocation unless the row
/// holds `+inf`). `-inf` for an id outside the row.
pub fn token_logprob(logits: &[f32], token: TokenId) -> f32 {
    if token as usize >= logits.len() {
        return f32::NEG_INFINITY;
    }
    match prepare(logits) {
        Some((row, max)) => clean(row[token as usize]) - max - log_sum_exp_shifted(&row, max),
        None => -(logits.len() as f32).ln(),
    }
}

/// Shannon entropy, in nats, of `softmax(logits)` over the whole row:
/// GlimpRouter's `H_init` (raw logits: temperature 1, no truncation).
///
/// With `m = max`, `e_i = exp(x_i - m)`, `S = sum e_i`:
/// `H = ln S - sum(e_i (x_i - m)) / S`, the log-sum-exp form of
/// `lse - sum p_i x_i` that never overflows. Masked tokens contribute 0.
/// The result lies in `[0, ln V]`.
pub fn entropy(logits: &[f32]) -> f32 {
    let Some((row, max)) = prepare(logits) else {
        return (logits.len().max(1) as f32).ln();
    };
    // Eight f32 lanes per chunk (the compiler keeps them in one vector
    // register), each chunk's total added in f64: a glimpse reads a whole
    // vocabulary row (151,936 logits for Qwen3) once, with no copy.
    const LANES: usize = 8;
    let (mut sum, mut weighted) = (0f64, 0f64);
    for chunk in row.chunks(1024) {
        let (mut s, mut w) = ([0f32; LANES], [0f32; LANES]);
        let mut lanes = chunk.chunks_exact(LANES);
        for xs in &mut lanes {
            for j in 0..LANES {
                let d = clean(xs[j]) - max;
                let e = exp_of_nonpositive(d);
                s[j] += e;
                w[j] += if e > 0.0 { e * d } else { 0.0 };
            }
        }
        for &x in lanes.remainder() {
            let d = clean(x) - max;
            let e = exp_of_nonpositive(d);
            s[0] += e;
            w[0] += if e > 0.0 { e * d } else { 0.0 };
        }
        sum += s.iter().map(|&v| f64::from(v)).sum::<f64>();
        weighted += w.iter().map(|&v| f64::from(v)).sum::<f64>();
    }
    let h = sum.ln() - weighted / sum;
    h.max(0.0) as f32
}

/// `e^d` for `d <= 0` (a logit minus the row's maximum) in straight-line
/// arithmetic the compiler vectorizes, unlike a call to `expf`: `d = n ln 2 + r`
/// with `|r| <= ln 2 / 2`, Cephes' `expf` polynomial for `e^r` (relative error
/// about 1e-7), and `2^n` written into the exponent bits. Below -87 (and for
/// masked `-inf` logits) it is 0, which a sum of terms of at least 1 cannot see.
#[inline(always)]
fn exp_of_nonpositive(d: f32) -> f32 {
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5 * 2^23: adding and subtracting it rounds to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    let x = d.max(-87.0);
    let n = (x * LOG2_E + ROUND) - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let e_r = p * r * r + r + 1.0;
    let two_n = f32::from_bits(((n as i32 + 127) as u32) << 23);
    if d > -87.0 {
        e_r * two_n
    } else {
        0.0
    }
}

/// H_init estimated from only the `k` largest log-probabilities (nats), as a
/// remote engine returns them (`logprobs: k`): the listed tokens contribute
/// `-p ln p` each and the unlisted mass `r = 1 - sum p` counts as one more
/// outcome, `-r ln r`. Merging outcomes never raises entropy, so this is a
/// lower bound of the full-vocabulary entropy; it is exact when the listed
/// tokens hold all the mass, and off by at most `r ln(V - k)` for a
/// vocabulary of `V` tokens (the unlisted mass spread evenly).
pub fn entropy_from_top_logprobs(top: &[f32]) -> f32 {
    let mut h = 0f64;
    let mut mass = 0f64;
    for &lp in top {
        if lp.is_finite() {
            let p = f64::from(lp).exp();
            mass += p;
            h -= p * f64::from(lp);
        }
    }
    let rest = (1.0 - mass).max(0.0);
    if rest > 0.0 {
        h -= rest * rest.ln();
    }
    h.max(0.0) as f32
}

/// Total order "larger value first, then lower id" (NaN as `-inf`), used for
/// every ranking so ties are broken the same way everywhere.
#[inline]
fn rank(values: &[f32], a: u32, b: u32) -> Ordering {
    let (va, vb) = (clean(values[a as usize]), clean(values[b as usize]));
    vb.partial_cmp(&va)
        .unwrap_or(Ordering::Equal)
        .then(a.cmp(&b))
}

/// Up to this many, the best ids are found by one scan keeping a sorted
/// buffer; beyond it by selection over all ids.
const SCAN_LIMIT: usize = 64;

/// The `n` best ids of `values` by [`rank`], best first.
fn top_n(values: &[f32], n: usize) -> Vec<u32> {
    let n = n.min(values.len());
    if n == 0 {
        return Vec::new();
    }
    if n > SCAN_LIMIT {
        let mut ids: Vec<u32> = (0..values.len() as u32).collect();
        if n < ids.len() {
            ids.select_nth_unstable_by(n - 1, |&a, &b| rank(values, a, b));
            ids.truncate(n);
        }
        ids.sort_unstable_by(|&a, &b| rank(values, a, b));
        return ids;
    }
    // (value, id), best first. Once full, only a strictly larger value gets
    // in, so among equal values the lower (earlier) ids stay.
    let mut top: Vec<(f32, u32)> = Vec::with_capacity(n + 1);
    let mut threshold = f32::NEG_INFINITY;
    for (i, &x) in values.iter().enumerate() {
        if top.len() < n || x > threshold {
            let x = clean(x);
            let at = top.partition_point(|&(v, _)| v >= x);
            top.insert(at, (x, i as u32));
            if top.len() > n {
                top.pop();
            }
            if top.len() == n {
                threshold = top[n - 1].0;
            }
        }
    }
    top.into_iter().map(|(_, i)| i).collect()
}

/// The distribution a token is actually drawn from, in vLLM's order:
/// temperature, then top-k, then top-p (on the top-k survivors), then min-p,
/// renormalised to sum to 1. Greedy parameters give a one-hot vector on the
/// argmax (ties to the lowest id).
///
/// * top-k keeps exactly `k` tokens (ties at the boundary go to lower ids).
/// * top-p keeps, in order of probability, every token whose more likely
///   predecessors hold less than `p` of the mass (so at least one token).
///   `p <= 0` keeps only the most likely token; `p >= 1` is off.
/// * min-p drops tokens with probability below `min_p * p_max`.
///
/// Cost: `O(V)` when top-k and top-p are off; a small top-k is one scan, a
/// large one a selection, never a sort of the vocabulary; top-p sorts only a
/// head of candidates large enough to hold `p` of the mass.
pub fn sampling_probs(logits: &[f32], params: &SamplingParams) -> Vec<f32> {
    let mut weights = sampling_weights(logits, params);
    let total: f64 = weights.iter().map(|&w| f64::from(w)).sum();
    let inv_total = (1.0 / total) as f32;
    for w in weights.iter_mut() {
        *w *= inv_total;
    }
    weights
}

/// [`sampling_probs`] before the final normalisation.
fn sampling_weights(logits: &[f32], params: &SamplingParams) -> Vec<f32> {
    let vocab = logits.len();
    if is_greedy(params) {
        let mut one_hot = vec![0.0; vocab];
        if vocab > 0 {
            one_hot[argmax(logits) as usize] = 1.0;
        }
        return one_hot;
    }
    let Some((row, max)) = prepare(logits) else {
        return vec![1.0; vocab];
    };

    // Unnormalised probabilities after temperature; the max token has weight 1.
    // The test is false for NaN (a NaN logit, or `-inf * 0` at an infinite
    // temperature): those stay masked. Subnormal weights (below 1e-38 of the
    // top token) are flushed to 0: `exp` is not monotonic down there, and
    // the filters must never rank a less likely token above a likelier one.
    let inv_t = 1.0 / params.temperature;
    let mut weights: Vec<f32> = row
        .iter()
        .map(|&x| {
            let w = ((x - max) * inv_t).exp();
            if w >= f32::MIN_POSITIVE {
                w
            } else {
                0.0
            }
        })
        .collect();

    let top_k_on = params.top_k > 0 && params.top_k < vocab;
    let top_p_on = params.top_p < 1.0;
    if top_k_on || top_p_on {
        let mut kept = if top_k_on {
            top_n(&weights, params.top_k)
        } else {
            Vec::new()
        };
        if top_p_on {
            kept = nucleus(&weights, top_k_on.then_some(kept), params.top_p);
        }
        let mut filtered = vec![0.0; vocab];
        for &i in &kept {
            filtered[i as usize] = weights[i as usize];
        }
        weights = filtered;
    }

    if params.min_p > 0.0 {
        // The most likely token always survives top-k/top-p, so p_max
        // corresponds to the largest weight: the ratio test needs no
        // normalisation.
        let w_max = weights.iter().fold(0f32, |m, &w| m.max(w));
        let floor = params.min_p * w_max;
        for w in weights.iter_mut() {
            // `min_p > 1` would drop everything: the top token always stays.
            if *w < floor && *w < w_max {
                *w = 0.0;
            }
        }
    }
    weights
}

/// Greedy per the request, or because the temperature is too small (or NaN)
/// to divide by.
fn is_greedy(params: &SamplingParams) -> bool {
    params.is_greedy() || !(1.0 / params.temperature).is_finite()
}

/// The ids top-p keeps, most likely first. `ranked`: the top-k survivors in
/// rank order, or `None` for the whole row. For the whole row, the best
/// [`SCAN_LIMIT`] ids are found in one scan, and only if they hold less
/// than `p` of the mass does a growing head of the vocabulary get selected
/// and sorted.
fn nucleus(weights: &[f32], ranked: Option<Vec<u32>>, p: f32) -> Vec<u32> {
    let (mut ranked, total) = match ranked {
        Some(ids) => {
            let total = ids.iter().map(|&i| f64::from(weights[i as usize])).sum();
            (ids, total)
        }
        None => {
            let total: f64 = weights.iter().map(|&w| f64::from(w)).sum();
            let target = f64::from(p.max(0.0)) * total;
            let head = top_n(weights, SCAN_LIMIT);
            let head_mass: f64 = head.iter().map(|&i| f64::from(weights[i as usize])).sum();
            let ranked = if head_mass >= target {
                head
            } else {
                ranked_head(weights, target)
            };
            (ranked, total)
        }
    };
    let target = f64::from(p.max(0.0)) * total;
    let mut before = 0f64;
    let mut kept = 0;
    for &i in &ranked {
        if kept > 0 && before >= target {
            break;
        }
        before += f64::from(weights[i as usize]);
        kept += 1;
    }
    ranked.truncate(kept);
    ranked
}

/// The smallest head of 4 * SCAN_LIMIT, 16 * SCAN_LIMIT, ... ids (with
/// positive weight) holding `target` mass, sorted by rank.
fn ranked_head(weights: &[f32], target: f64) -> Vec<u32> {
    let mut cand: Vec<u32> = (0..weights.len() as u32)
        .filter(|&i| weights[i as usize] > 0.0)
        .collect();
    let mut head = (4 * SCAN_LIMIT).min(cand.len());
    loop {
        if head < cand.len() {
            cand.select_nth_unstable_by(head - 1, |&a, &b| rank(weights, a, b));
        }
        let head_mass: f64 = cand[..head]
            .iter()
            .map(|&i| f64::from(weights[i as usize]))
            .sum();
        if head_mass >= target || head == cand.len() {
            break;
        }
        head = (head * 4).min(cand.len());
    }
    cand.truncate(head);
    cand.sort_unstable_by(|&a, &b| rank(weights, a, b));
    cand
}

/// Draws a token from `probs` (which need not sum exactly to 1: the draw is
/// scaled by their sum). An all-zero or empty row gives token 0.
pub fn sample_from_probs(probs: &[f32], rng: &mut SeqRng) -> TokenId {
    let total: f64 = probs.iter().map(|&p| f64::from(p.max(0.0))).sum();
    let u = rng.uniform_f64() * total;
    let mut cum = 0f64;
    let mut last_positive = 0usize;
    for (i, &p) in probs.iter().enumerate() {
        if p > 0.0 {
            cum += f64::from(p);
            last_positive = i;
            if u < cum {
                return i as TokenId;
            }
        }
    }
    // Only reached through rounding (u just below total): the last token with mass.
    last_positive as TokenId
}

/// Draws the next token: the argmax for greedy parameters (no random draw),
/// otherwise a draw from [`sampling_probs`].
pub fn sample(logits: &[f32], params: &SamplingParams, rng: &mut SeqRng) -> TokenId {
    if is_greedy(params) {
        return argmax(logits);
    }
    sample_from_probs(&sampling_weights(logits, params), rng)
}

/// The log-probability of `token` under the model's raw `log_softmax` (what
/// vLLM returns by default) and the `n` most likely tokens with theirs, most
/// likely first (ties to the lower id). The sampled token appears among the
/// alternatives only if it is one of the `n` most likely.
pub fn top_logprobs(logits: &[f32], token: TokenId, n: usize) -> (f32, Vec<(TokenId, f32)>) {
    let Some((row, max)) = prepare(logits) else {
        let lp = -(logits.len() as f32).ln();
        let token_lp = if (token as usize) < logits.len() {
            lp
        } else {
            f32::NEG_INFINITY
        };
        return (
            token_lp,
            (0..n.min(logits.len()) as TokenId)
                .map(|i| (i, lp))
                .collect(),
        );
    };
    let lse = max + log_sum_exp_shifted(&row, max);
    let token_lp = row
        .get(token as usize)
        .map_or(f32::NEG_INFINITY, |&x| clean(x) - lse);
    let top = top_n(&row, n)
        .into_iter()
        .map(|i| (i, clean(row[i as usize]) - lse))
        .collect();
    (token_lp, top)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The top-k log-probabilities of a logit row, largest first.
    fn top_k_logprobs(logits: &[f32], k: usize) -> Vec<f32> {
        let mut lp = log_softmax(logits);
        lp.sort_by(|a, b| b.total_cmp(a));
        lp.truncate(k);
        lp
    }

    proptest! {
        #[test]
        fn top_k_entropy_is_a_lower_bound_within_the_spread_bound(
            logits in prop::collection::vec(-8f32..8.0, 2..200),
            k in 1usize..30,
        ) {
            let exact = entropy(&logits);
            let top = top_k_logprobs(&logits, k);
            let estimate = entropy_from_top_logprobs(&top);
            prop_assert!(estimate <= exact + 1e-3, "estimate {estimate} > exact {exact}");
            let rest = (1.0 - top.iter().map(|l| l.exp()).sum::<f32>()).max(0.0);
            let spread = rest * ((logits.len().saturating_sub(k)).max(1) as f32).ln();
            prop_assert!(exact - estimate <= spread + 1e-3, "gap {} > {spread}", exact - estimate);
            if k >= logits.len() {
                prop_assert!((exact - estimate).abs() < 1e-3);
            }
        }
    }

    fn sp(temperature: f32, top_k: usize, top_p: f32, min_p: f32) -> SamplingParams {
        SamplingParams {
            temperature,
            top_k,
            top_p,
            min_p,
            ..SamplingParams::default()
        }
    }

    /// Softmax in f64, the obvious way, as a reference.
    fn reference_softmax(logits: &[f32], t: f64) -> Vec<f64> {
        let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
        let e: Vec<f64> = logits
            .iter()
            .map(|&x| ((x as f64 - max) / t).exp())
            .collect();
        let s: f64 = e.iter().sum();
        e.iter().map(|v| v / s).collect()
    }

    fn reference_entropy(logits: &[f32]) -> f64 {
        reference_softmax(logits, 1.0)
            .iter()
            .filter(|&&p| p > 0.0)
            .map(|&p| -p * p.ln())
            .sum()
    }

    #[test]
    fn the_entropy_s_exp_is_exp_to_a_few_ulp() {
        let mut worst = 0f64;
        for i in 0..=200_000 {
            let d = -86.9 * f64::from(i) / 200_000.0;
            let got = f64::from(exp_of_nonpositive(d as f32));
            let want = (d as f32 as f64).exp();
            worst = worst.max((got - want).abs() / want);
        }
        assert!(worst < 4e-7, "relative error {worst}");
        assert_eq!(exp_of_nonpositive(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_of_nonpositive(0.0), 1.0);
    }

    #[test]
    fn entropy_of_known_distributions() {
        assert!((entropy(&[0.0; 8]) - 8f32.ln()).abs() < 1e-6);
        // One certain token.
        assert_eq!(entropy(&[0.0, f32::NEG_INFINITY, f32::NEG_INFINITY]), 0.0);
        // Two equally likely tokens among masked ones: ln 2.
        let h = entropy(&[f32::NEG_INFINITY, 3.0, f32::NEG_INFINITY, 3.0]);
        assert!((h - 2f32.ln()).abs() < 1e-6);
        // p = (0.75, 0.25).
        let h = entropy(&[3f32.ln(), 0.0]);
        let expect = -(0.75f32 * 0.75f32.ln() + 0.25 * 0.25f32.ln());
        assert!((h - expect).abs() < 1e-6);
        // Huge logits do not overflow.
        let h = entropy(&[1e30, 1e30]);
        assert!((h - 2f32.ln()).abs() < 1e-6);
    }

    #[test]
    fn odd_logits_follow_the_module_conventions() {
        // NaN behaves as masked.
        let h = entropy(&[f32::NAN, 1.0, 1.0]);
        assert!((h - 2f32.ln()).abs() < 1e-6);
        // +inf takes all the mass.
        assert_eq!(entropy(&[f32::INFINITY, 1.0]), 0.0);
        assert_eq!(argmax(&[1.0, f32::INFINITY, f32::NAN]), 1);
        // A fully masked row is uniform everywhere.
        let masked = [f32::NEG_INFINITY; 4];
        assert!((entropy(&masked) - 4f32.ln()).abs() < 1e-6);
        assert_eq!(
            sampling_probs(&masked, &sp(1.0, 0, 1.0, 0.0)),
            vec![0.25; 4]
        );
        assert!((log_softmax(&masked)[2] + 4f32.ln()).abs() < 1e-6);
        assert_eq!(argmax(&masked), 0);
        assert_eq!(entropy(&[]), 0.0);
        assert_eq!(
            sampling_probs(&[], &sp(1.0, 0, 1.0, 0.0)),
            Vec::<f32>::new()
        );
    }

    #[test]
    fn log_softmax_matches_reference_and_masks() {
        let logits = [1.0, -2.0, f32::NEG_INFINITY, 0.5];
        let lp = log_softmax(&logits);
        let p = reference_softmax(&logits, 1.0);
        for (a, b) in lp.iter().zip(&p) {
            if *b == 0.0 {
                assert_eq!(*a, f32::NEG_INFINITY);
            } else {
                assert!((*a as f64 - b.ln()).abs() < 1e-6);
            }
        }
        assert_eq!(token_logprob(&logits, 3), lp[3]);
        assert_eq!(token_logprob(&logits, 99), f32::NEG_INFINITY);
    }

    #[test]
    fn greedy_is_one_hot_on_the_lowest_argmax_and_draws_nothing() {
        let logits = [0.0, 5.0, 1.0, 5.0];
        let greedy = SamplingParams::greedy(4);
        assert_eq!(sampling_probs(&logits, &greedy), vec![0.0, 1.0, 0.0, 0.0]);
        let mut rng = SeqRng::new(Some(7));
        let before = rng.clone();
        assert_eq!(sample(&logits, &greedy, &mut rng), 1);
        assert_eq!(
            rng.uniform(),
            before.clone().uniform(),
            "greedy must not consume the RNG"
        );
        // top_k = 1 is greedy too.
        assert_eq!(
            sampling_probs(&logits, &sp(0.7, 1, 1.0, 0.0)),
            vec![0.0, 1.0, 0.0, 0.0]
        );
    }

    #[test]
    fn temperature_scales_the_softmax() {
        let logits = [1.0, 2.0, 0.0, -1.0];
        for t in [0.5f32, 1.0, 2.0] {
            let probs = sampling_probs(&logits, &sp(t, 0, 1.0, 0.0));
            let reference = reference_softmax(&logits, t as f64);
            for (a, b) in probs.iter().zip(&reference) {
                assert!(
                    (*a as f64 - b).abs() < 1e-6,
                    "t={t}: {probs:?} vs {reference:?}"
                );
            }
        }
    }

    #[test]
    fn top_k_then_top_p_then_min_p() {
        // Probabilities at t = 1: 0.4, 0.3, 0.2, 0.1.
        let logits: Vec<f32> = [0.4f32, 0.3, 0.2, 0.1].iter().map(|p| p.ln()).collect();
        let p = sampling_probs(&logits, &sp(1.0, 2, 1.0, 0.0));
        assert!((p[0] - 4.0 / 7.0).abs() < 1e-6 && (p[1] - 3.0 / 7.0).abs() < 1e-6);
        assert_eq!((p[2], p[3]), (0.0, 0.0));
        // top-p 0.6: 0.4 < 0.6 so the second is kept; 0.7 >= 0.6 stops.
        let p = sampling_probs(&logits, &sp(1.0, 0, 0.6, 0.0));
        assert!((p[0] - 4.0 / 7.0).abs() < 1e-6 && p[2] == 0.0);
        // top-p 0.75 keeps three (0.7 < 0.75).
        let p = sampling_probs(&logits, &sp(1.0, 0, 0.75, 0.0));
        assert!(p[2] > 0.0 && p[3] == 0.0);
        // top-p applies to the top-k survivors: after k = 3 the masses are
        // 4/9, 3/9, 2/9, and 7/9 >= 0.75 before the third, so only two stay
        // (without top-k the same p kept three, above).
        let p = sampling_probs(&logits, &sp(1.0, 3, 0.75, 0.0));
        assert!((p[0] - 4.0 / 7.0).abs() < 1e-6 && p[2] == 0.0);
        // min-p 0.45: keep p >= 0.45 * 0.4 = 0.18, so 0.2 stays and 0.1 goes.
        let p = sampling_probs(&logits, &sp(1.0, 0, 1.0, 0.45));
        assert!(p[2] > 0.0 && p[3] == 0.0);
        assert!((p[0] - 4.0 / 9.0).abs() < 1e-6);
        // Tiny top-p keeps the argmax only.
        let p = sampling_probs(&logits, &sp(1.0, 0, 0.0, 0.0));
        assert_eq!(p, vec![1.0, 0.0, 0.0, 0.0]);
    }

    #[test]
    fn top_p_on_a_large_flat_vocab_sorts_past_the_first_head() {
        // 1000 equal tokens: the nucleus 0.5 needs 500 of them, beyond the
        // first selected head of 64; ties go to the lowest ids.
        let logits = vec![0.0f32; 1000];
        let p = sampling_probs(&logits, &sp(1.0, 0, 0.5, 0.0));
        let kept: Vec<usize> = (0..1000).filter(|&i| p[i] > 0.0).collect();
        assert_eq!(kept, (0..500).collect::<Vec<_>>());
    }

    #[test]
    fn seeded_rng_is_reproducible_and_samples_follow_probs() {
        let logits = [0.0f32, 1.0, 2.0];
        let params = sp(1.0, 0, 1.0, 0.0);
        let mut a = SeqRng::new(Some(42));
        let mut b = SeqRng::new(Some(42));
        let xs: Vec<_> = (0..50).map(|_| sample(&logits, &params, &mut a)).collect();
        let ys: Vec<_> = (0..50).map(|_| sample(&logits, &params, &mut b)).collect();
        assert_eq!(xs, ys);
        // Frequencies within 4 standard deviations of the softmax.
        let n = 20_000;
        let mut counts = [0usize; 3];
        let mut rng = SeqRng::new(Some(1));
        let probs = sampling_probs(&logits, &params);
        for _ in 0..n {
            counts[sample_from_probs(&probs, &mut rng) as usize] += 1;
        }
        for (c, p) in counts.iter().zip(reference_softmax(&logits, 1.0)) {
            let sd = (n as f64 * p * (1.0 - p)).sqrt();
            assert!((*c as f64 - n as f64 * p).abs() < 4.0 * sd, "{counts:?}");
        }
    }

    #[test]
    fn sample_from_probs_never_returns_a_zero_token() {
        let probs = [0.0, 0.5, 0.0, 0.5, 0.0];
        let mut rng = SeqRng::new(Some(3));
        for _ in 0..1000 {
            let t = sample_from_probs(&probs, &mut rng);
            assert!(t == 1 || t == 3);
        }
        assert_eq!(sample_from_probs(&[], &mut rng), 0);
    }

    #[test]
    fn top_logprobs_ranks_and_matches_log_softmax() {
        let logits = [0.1, 3.0, -1.0, 3.0, 2.0];
        let lp = log_softmax(&logits);
        let (tok, top) = top_logprobs(&logits, 2, 3);
        assert_eq!(tok, lp[2]);
        assert_eq!(top, vec![(1, lp[1]), (3, lp[3]), (4, lp[4])]);
        assert_eq!(top_logprobs(&logits, 0, 0).1, vec![]);
        assert_eq!(top_logprobs(&logits, 0, 99).1.len(), 5);
    }

    fn logits_strategy() -> impl Strategy<Value = Vec<f32>> {
        prop::collection::vec(
            prop_oneof![9 => -30f32..30.0, 1 => Just(f32::NEG_INFINITY)],
            1..200,
        )
    }

    proptest! {
        #[test]
        fn top_n_matches_a_full_sort(
            values in prop::collection::vec(prop_oneof![
                8 => (-4i32..4).prop_map(|v| v as f32),
                1 => Just(f32::NEG_INFINITY),
                1 => Just(f32::NAN),
            ], 0..300),
            n in 0usize..300,
        ) {
            let mut all: Vec<u32> = (0..values.len() as u32).collect();
            all.sort_by(|&a, &b| rank(&values, a, b));
            all.truncate(n);
            prop_assert_eq!(top_n(&values, n), all);
        }

        #[test]
        fn entropy_is_bounded_shift_invariant_and_exact(logits in logits_strategy(), shift in -1e3f32..1e3) {
            let h = entropy(&logits);
            let v = logits.len() as f32;
            prop_assert!(h >= 0.0 && h <= v.ln() + 1e-5, "h={h} V={v}");
            let shifted: Vec<f32> = logits.iter().map(|x| x + shift).collect();
            // f32 shifting moves logits by up to an ulp of |shift|.
            prop_assert!((entropy(&shifted) - h).abs() < 1e-3);
            if logits.iter().any(|x| x.is_finite()) {
                prop_assert!((h as f64 - reference_entropy(&logits)).abs() < 1e-4);
            }
        }

        #[test]
        fn entropy_of_uniform_is_ln_v(v in 1usize..5000, value in -100f32..100.0) {
            let h = entropy(&vec![value; v]);
            prop_assert!((h - (v as f32).ln()).abs() < 1e-4);
        }

        #[test]
        fn sampling_probs_is_a_distribution_respecting_filters(
            logits in logits_strategy(),
            t in 0.05f32..3.0,
            top_k in 0usize..20,
            top_p in 0.05f32..1.2,
            min_p in prop_oneof![Just(0.0f32), 0.0f32..0.9],
        ) {
            let params = sp(t, top_k, top_p, min_p);
            let probs = sampling_probs(&logits, &params);
            prop_assert_eq!(probs.len(), logits.len());
            let sum: f64 = probs.iter().map(|&p| p as f64).sum();
            prop_assert!((sum - 1.0).abs() < 1e-4, "sum={}", sum);
            prop_assert!(probs.iter().all(|&p| p >= 0.0));
            let kept: Vec<usize> = (0..probs.len()).filter(|&i| probs[i] > 0.0).collect();
            prop_assert!(!kept.is_empty());
            if params.is_greedy() {
                prop_assert_eq!(kept, vec![argmax(&logits) as usize]);
                return Ok(());
            }
            if !logits.iter().any(|x| x.is_finite()) {
                prop_assert_eq!(kept.len(), logits.len(), "a fully masked row is uniform");
                return Ok(());
            }
            // The argmax always survives.
            prop_assert!(probs[argmax(&logits) as usize] > 0.0);
            if top_k > 0 {
                prop_assert!(kept.len() <= top_k);
            }
            // Kept tokens are a prefix of the ranking: nothing dropped is
            // more likely than something kept.
            let min_kept = kept.iter().map(|&i| logits[i]).fold(f32::INFINITY, f32::min);
            for i in 0..logits.len() {
                if probs[i] == 0.0 && logits[i].is_finite() {
                    prop_assert!(logits[i] <= min_kept);
                }
            }
            // Survivors keep their relative odds (renormalised softmax at t).
            // (Relative to the top token; subnormal probabilities are too coarse.)
            let a = argmax(&logits) as usize;
            for &b in kept.iter().filter(|&&b| probs[b] > 1e-30) {
                let ratio = (probs[b] / probs[a]) as f64;
                let expect = (((logits[b] - logits[a]) / t) as f64).exp();
                prop_assert!((ratio - expect).abs() <= 1e-3 * expect);
            }
            // min-p: every survivor is at least min_p times the top one.
            let p_max = probs.iter().cloned().fold(0f32, f32::max);
            for &i in &kept {
                prop_assert!(probs[i] >= min_p * p_max * (1.0 - 1e-5));
            }
            // top-p alone: the mass of the survivors but the least likely is < p.
            if top_k == 0 && min_p == 0.0 && top_p < 1.0 {
                let full = sampling_probs(&logits, &sp(t, 0, 1.0, 0.0));
                let mut mass: Vec<f32> = kept.iter().map(|&i| full[i]).collect();
                mass.sort_by(|x, y| y.total_cmp(x));
                let without_last: f32 = mass[..mass.len() - 1].iter().sum();
                let all: f32 = mass.iter().sum();
                prop_assert!(without_last < top_p + 1e-5);
                prop_assert!(all >= top_p.min(1.0) - 1e-4);
            }
        }
    }
}
