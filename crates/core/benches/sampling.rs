//! Per-row cost of the logits math on a 151,936-token vocabulary (Qwen2/3):
//! entropy (every glimpse), greedy argmax, and sampling with the filters on
//! and off. The engine runs these for up to a whole batch of rows per
//! iteration, so multiply by the batch size (e.g. 64).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use glimprouter_core::sampling::{argmax, entropy, sample, top_logprobs, SeqRng};
use glimprouter_core::SamplingParams;
use rand::Rng;

const VOCAB: usize = 151_936;

/// Logits shaped like a language model's: a few likely tokens, a long tail.
fn logits() -> Vec<f32> {
    let mut rng = SeqRng::new(Some(0));
    (0..VOCAB)
        .map(|i| {
            let tail: f32 = rng.rng().random_range(-8.0..2.0);
            if i % 10_007 == 0 {
                tail + 12.0
            } else {
                tail
            }
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let logits = logits();
    let mut rng = SeqRng::new(Some(1));
    c.bench_function("entropy", |b| b.iter(|| entropy(black_box(&logits))));
    c.bench_function("argmax", |b| b.iter(|| argmax(black_box(&logits))));
    let cases = [
        ("sample t=1", SamplingParams::default()),
        (
            "sample t=0.6 top_p=0.95",
            SamplingParams {
                temperature: 0.6,
                top_p: 0.95,
                ..SamplingParams::default()
            },
        ),
        (
            "sample top_k=50",
            SamplingParams {
                top_k: 50,
                ..SamplingParams::default()
            },
        ),
        (
            "sample top_k=50 top_p=0.9 min_p=0.05",
            SamplingParams {
                top_k: 50,
                top_p: 0.9,
                min_p: 0.05,
                ..SamplingParams::default()
            },
        ),
        // A flat distribution is top-p's worst case: the nucleus is huge.
        (
            "sample t=5 top_p=0.95",
            SamplingParams {
                temperature: 5.0,
                top_p: 0.95,
                ..SamplingParams::default()
            },
        ),
    ];
    for (name, params) in cases {
        c.bench_function(name, |b| {
            b.iter(|| sample(black_box(&logits), &params, &mut rng))
        });
    }
    c.bench_function("top_logprobs n=20", |b| {
        b.iter(|| top_logprobs(black_box(&logits), 5, 20))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
