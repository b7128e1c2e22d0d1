//! Speculative sampling is lossless: with drafts from the SLM, the LLM's
//! first sampled token still follows the LLM's own distribution.

use glimprouter_core::params::Policy;
use glimprouter_core::sampling::sampling_probs;
use glimprouter_core::SamplingParams;

use crate::harness::*;

/// Pearson chi-square of observed counts against expected probabilities,
/// pooling bins with expected count < 5. Returns (statistic, degrees of freedom).
fn chi_square(counts: &[usize], probs: &[f32], n: usize) -> (f64, usize) {
    let mut stat = 0.0;
    let mut bins = 0;
    let (mut pool_obs, mut pool_exp) = (0.0, 0.0);
    for (c, p) in counts.iter().zip(probs) {
        let e = *p as f64 * n as f64;
        if e < 5.0 {
            pool_obs += *c as f64;
            pool_exp += e;
            continue;
        }
        stat += (*c as f64 - e).powi(2) / e;
        bins += 1;
    }
    if pool_exp > 0.0 {
        stat += (pool_obs - pool_exp).powi(2) / pool_exp.max(1e-9);
        bins += 1;
    }
    (stat, bins - 1)
}

/// Asserts that `n` draws counted in `counts` fit `probs` (chi-square test at
/// 99.9%, over at least 10 degrees of freedom); returns (degrees of freedom,
/// critical value).
pub fn assert_counts_fit(counts: &[usize], probs: &[f32], n: usize) -> (usize, f64) {
    let (stat, df) = chi_square(counts, probs, n);
    // 99.9% quantile of chi-square: df + 3.1 sqrt(2 df) + 3 bounds it well for df >= 10.
    let critical = df as f64 + 3.1 * (2.0 * df as f64).sqrt() + 3.0;
    assert!(df >= 10, "enough distinct tokens to test ({df})");
    assert!(
        stat < critical,
        "chi-square {stat:.1} over {df} dof exceeds {critical:.1}"
    );
    (df, critical)
}

#[test]
fn first_token_with_speculation_follows_the_llm_softmax() {
    let pair = pair();
    let engine = start(&config(pair));
    let p = prompt(&engine, "Problem: start at 12, add 7");
    // The LLM's own distribution for the first token, computed directly.
    let sampling = SamplingParams {
        temperature: 1.0,
        max_tokens: 3,
        ignore_eos: true,
        ..SamplingParams::default()
    };
    let first_token_probs = |dir| sampling_probs(&next_token_logits(dir, &p), &sampling);
    let target = first_token_probs(&pair.llm);
    let draft = first_token_probs(&pair.slm);

    let n = 3000;
    let mut counts = vec![0usize; target.len()];
    for out in run_seeds(&engine, &p, &sampling, &routing(Policy::Llm, 0.0, 2), n) {
        assert!(
            out.finished.routing.draft_tokens > 0,
            "the first token came from a verify pass"
        );
        counts[out.tokens[0] as usize] += 1;
    }
    let (df, critical) = assert_counts_fit(&counts, &target, n);
    // Power: had the engine kept the SLM's drafts unchecked, the first token
    // would follow the SLM's distribution; the expected statistic of that
    // (df + n * chi-square distance) must clear the critical value easily.
    let distance: f64 = target
        .iter()
        .zip(&draft)
        .filter(|(t, _)| **t as f64 * n as f64 >= 5.0)
        .map(|(t, d)| (*d as f64 - *t as f64).powi(2) / *t as f64)
        .sum();
    let wrong_rule_stat = df as f64 + n as f64 * distance;
    assert!(
        wrong_rule_stat > 2.0 * critical,
        "test has no power: SLM-only would score {wrong_rule_stat:.1}"
    );
    engine.shutdown();
}
