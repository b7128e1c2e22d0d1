//! Paged ragged-batch forward vs candle-transformers' reference, run one sequence and one
//! token at a time: prefill in chunks, decode, multi-token verify and truncation
//! (re-feeding from an earlier position), for every family, several block sizes and both
//! attention backends.

mod common;

use std::collections::HashMap;

use candle_core::DType;
use common::{max_abs_diff, Reference};
use glimprouter_core::{BatchRow, ModelBatch, RowKind};
use glimprouter_models::device::test_device;
use glimprouter_models::{Arch, AttentionBackend, LoadOptions, ModelRunner};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Feed `n` new tokens to sequence `seq` starting at position `from` (below its current
/// length = truncation), asking logits for the last `logits` of them.
#[derive(Clone, Copy)]
struct Feed {
    seq: usize,
    from: usize,
    n: usize,
    logits: usize,
}

const fn f(seq: usize, from: usize, n: usize, logits: usize) -> Feed {
    Feed {
        seq,
        from,
        n,
        logits,
    }
}

/// Each inner list is one forward (one ragged batch).
fn scenario() -> Vec<Vec<Feed>> {
    vec![
        // prefill chunks of different lengths, one without logits, one with several
        vec![f(0, 0, 10, 0), f(1, 0, 7, 1), f(2, 0, 16, 3)],
        // finish a chunked prefill, decode, long prefill chunk, a new sequence all-logits
        vec![
            f(0, 10, 13, 1),
            f(1, 7, 1, 1),
            f(2, 16, 24, 2),
            f(3, 0, 12, 12),
        ],
        // verify 5 tokens, decode, truncate 40 -> 30 and re-feed 3, decode
        vec![
            f(0, 23, 5, 5),
            f(1, 8, 1, 1),
            f(2, 30, 3, 3),
            f(3, 12, 1, 1),
        ],
        // roll back rejected drafts (28 -> 25), verify, decode, deep truncation
        vec![f(0, 25, 1, 1), f(1, 9, 4, 4), f(2, 33, 1, 1), f(3, 5, 8, 2)],
        // plain decode of everyone, in a different row order
        vec![
            f(3, 13, 1, 1),
            f(2, 34, 1, 1),
            f(1, 13, 1, 1),
            f(0, 26, 1, 1),
        ],
    ]
}

/// The expected histories are computed once per family and reused for every
/// block size / backend (the reference is the slow part).
struct RefCache {
    reference: Reference,
    memo: HashMap<Vec<u32>, Vec<Vec<f32>>>,
}

impl RefCache {
    fn logits_at(&mut self, history: &[u32], pos: usize) -> Vec<f32> {
        if !self.memo.contains_key(history) {
            let all = self.reference.all_logits(history);
            self.memo.insert(history.to_vec(), all);
        }
        self.memo[history][pos].clone()
    }
}

fn run_scenario(
    dir: &std::path::Path,
    refs: &mut RefCache,
    block_size: usize,
    backend: AttentionBackend,
    label: &str,
) {
    let num_blocks = 64usize.div_ceil(block_size) * 4 + 8;
    let opts = LoadOptions {
        dtype: DType::F32,
        device: test_device(),
        block_size,
        num_blocks,
    };
    let mut runner = ModelRunner::load_with_backend(dir, &opts, backend).unwrap();
    let vocab = runner.config().vocab_size;
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    // Physical blocks handed out in a shuffled order so block tables are scattered.
    let mut free: Vec<u32> = (0..num_blocks as u32).collect();
    free.shuffle(&mut rng);
    let mut histories: Vec<Vec<u32>> = vec![Vec::new(); 4];
    let mut tables: Vec<Vec<u32>> = vec![Vec::new(); 4];
    let mut worst = 0f32;

    for (bi, feeds) in scenario().into_iter().enumerate() {
        let mut rows = Vec::new();
        for fd in &feeds {
            let h = &mut histories[fd.seq];
            assert!(fd.from <= h.len(), "scenario feeds past the end");
            h.truncate(fd.from);
            let new: Vec<u32> = (0..fd.n)
                .map(|_| rng.random_range(0..vocab as u32))
                .collect();
            h.extend(&new);
            while tables[fd.seq].len() * block_size < h.len() {
                tables[fd.seq].push(free.pop().unwrap());
            }
            rows.push(BatchRow {
                seq_id: fd.seq as u64,
                kind: RowKind::Prefill,
                token_ids: new,
                start_pos: fd.from,
                block_table: tables[fd.seq].clone(),
                num_logits: fd.logits,
            });
        }
        let batch = ModelBatch { rows };
        let logits = runner.forward(&batch).unwrap();
        assert_eq!(logits.num_rows(), batch.num_logits());
        let mut row = 0;
        for fd in &feeds {
            let end = fd.from + fd.n;
            for pos in end - fd.logits..end {
                let want = refs.logits_at(&histories[fd.seq], pos);
                let got = logits.row(row);
                let diff = max_abs_diff(&want, got);
                worst = worst.max(diff);
                assert!(
                    diff < 1e-4,
                    "{label}: batch {bi} seq {} pos {pos}: max |diff| {diff}",
                    fd.seq
                );
                row += 1;
            }
        }
    }
    eprintln!("{label}: worst |diff| {worst:e}");
}

fn check_family(arch: Arch) {
    let dir = common::make(arch);
    let mut refs = RefCache {
        reference: Reference::load(dir.path(), arch),
        memo: HashMap::new(),
    };
    for block_size in [1, 5, 16] {
        for backend in [AttentionBackend::Auto, AttentionBackend::CandleOps] {
            let label = format!("{arch} bs={block_size} {backend:?}");
            run_scenario(dir.path(), &mut refs, block_size, backend, &label);
        }
    }
}

#[test]
fn llama_matches_reference() {
    check_family(Arch::Llama);
}

#[test]
fn mistral_matches_reference() {
    check_family(Arch::Mistral);
}

#[test]
fn qwen2_matches_reference() {
    check_family(Arch::Qwen2);
}

#[test]
fn qwen3_matches_reference() {
    check_family(Arch::Qwen3);
}

/// The logits really depend on the cache contents: a corrupted context must not pass.
#[test]
fn logits_depend_on_context() {
    let dir = common::make(Arch::Qwen3);
    let opts = LoadOptions {
        dtype: DType::F32,
        device: test_device(),
        block_size: 4,
        num_blocks: 16,
    };
    let mut runner = ModelRunner::load(dir.path(), &opts).unwrap();
    let row = |tokens: Vec<u32>, start: usize| BatchRow {
        seq_id: 0,
        kind: RowKind::Prefill,
        token_ids: tokens,
        start_pos: start,
        block_table: vec![3, 1, 2],
        num_logits: 1,
    };
    let a = runner
        .forward(&ModelBatch {
            rows: vec![row(vec![5, 6, 7, 8, 9], 0)],
        })
        .unwrap();
    // Overwrite position 1 only, then re-feed the last token: the context now differs.
    runner
        .forward(&ModelBatch {
            rows: vec![row(vec![40, 7, 8], 1)],
        })
        .unwrap();
    let b = runner
        .forward(&ModelBatch {
            rows: vec![row(vec![9], 4)],
        })
        .unwrap();
    assert!(max_abs_diff(a.row(0), b.row(0)) > 1e-2);
}

/// bf16 weights and cache stay close to the f32 run.
#[test]
fn bf16_close_to_f32() {
    let dir = common::make(Arch::Qwen2);
    let batch = ModelBatch {
        rows: vec![
            BatchRow {
                seq_id: 0,
                kind: RowKind::Prefill,
                token_ids: (10..30).collect(),
                start_pos: 0,
                block_table: vec![0, 1, 2, 3, 4],
                num_logits: 2,
            },
            BatchRow {
                seq_id: 1,
                kind: RowKind::Prefill,
                token_ids: (40..47).collect(),
                start_pos: 0,
                block_table: vec![7, 6],
                num_logits: 1,
            },
        ],
    };
    let run = |dtype| {
        let opts = LoadOptions {
            dtype,
            device: test_device(),
            block_size: 5,
            num_blocks: 8,
        };
        ModelRunner::load(dir.path(), &opts)
            .unwrap()
            .forward(&batch)
            .unwrap()
    };
    let (full, half) = (run(DType::F32), run(DType::BF16));
    assert_eq!(half.num_rows(), 3);
    for r in 0..3 {
        let scale = full.row(r).iter().fold(0f32, |m, x| m.max(x.abs()));
        let diff = max_abs_diff(full.row(r), half.row(r));
        eprintln!("bf16 row {r}: max |diff| {diff} (max |logit| {scale})");
        assert!(
            diff < 0.05 * scale + 0.05,
            "row {r}: {diff} vs scale {scale}"
        );
    }
}

fn edit_config(dir: &std::path::Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join("config.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(&path, v.to_string()).unwrap();
}

/// Llama 3 RoPE frequency scaling against the reference's implementation of it.
#[test]
fn llama3_rope_scaling_matches_reference() {
    let dir = common::make(Arch::Llama);
    edit_config(dir.path(), |v| {
        v["rope_scaling"] = serde_json::json!({"rope_type": "llama3", "factor": 8.0,
            "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64});
        v["rope_theta"] = serde_json::json!(500000.0);
    });
    let mut refs = RefCache {
        reference: Reference::load(dir.path(), Arch::Llama),
        memo: HashMap::new(),
    };
    run_scenario(
        dir.path(),
        &mut refs,
        5,
        AttentionBackend::Auto,
        "llama3-rope",
    );
}

/// Mistral's sliding window: both backends agree, and the window changes the result
/// only once the context is longer than it.
#[test]
fn sliding_window_backends_agree() {
    let dir = common::make(Arch::Mistral);
    let window = 6;
    let tokens: Vec<u32> = (0..14).map(|i| (i * 7 % 90) as u32).collect();
    let batch = ModelBatch {
        rows: vec![BatchRow {
            seq_id: 0,
            kind: RowKind::Prefill,
            token_ids: tokens,
            start_pos: 0,
            block_table: vec![2, 0, 3, 1],
            num_logits: 14,
        }],
    };
    let opts = LoadOptions {
        dtype: DType::F32,
        device: test_device(),
        block_size: 4,
        num_blocks: 4,
    };
    let run = |backend| {
        ModelRunner::load_with_backend(dir.path(), &opts, backend)
            .unwrap()
            .forward(&batch)
            .unwrap()
    };
    let full = run(AttentionBackend::Auto);
    edit_config(dir.path(), |v| {
        v["sliding_window"] = serde_json::json!(window)
    });
    let (cpu, ops) = (
        run(AttentionBackend::Auto),
        run(AttentionBackend::CandleOps),
    );
    for pos in 0..14 {
        assert!(max_abs_diff(cpu.row(pos), ops.row(pos)) < 1e-5, "pos {pos}");
        let windowed = max_abs_diff(cpu.row(pos), full.row(pos));
        if pos < window {
            assert!(windowed < 1e-5, "pos {pos} changed by the window");
        } else {
            assert!(windowed > 1e-3, "pos {pos} unaffected by the window");
        }
    }
}
