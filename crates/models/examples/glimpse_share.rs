//! What a glimpse costs next to the SLM's forward with a real-size vocabulary:
//! a Qwen3-0.6B-shaped SLM (random weights: 28 layers, hidden 1024, 151,936
//! tokens, tied embeddings) decoding at batch 1 and 64, against the entropy of
//! as many rows of logits (`sampling::entropy`, the glimpse's H_init).
//!
//!     cargo run --release -p glimprouter-models --example glimpse_share
//!
//! `LAYERS=N` shrinks the model (the forward gets cheaper, the entropy not).
//! Needs about 6 GB of memory and 2.4 GB of temporary disk.

use std::hint::black_box;
use std::time::Instant;

use candle_core::DType;
use glimprouter_core::sampling::entropy;
use glimprouter_core::{BatchRow, ModelBatch, RowKind};
use glimprouter_models::{make_model, Arch, LoadOptions, MakeModelSpec, ModelRunner};

const VOCAB: usize = 151_936;
const CONTEXT: usize = 256;
const BLOCK: usize = 16;

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let layers = std::env::var("LAYERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(28);
    let spec = MakeModelSpec {
        arch: Arch::Qwen3,
        layers,
        hidden: 1024,
        intermediate: 3072,
        heads: 16,
        kv_heads: 8,
        head_dim: Some(128),
        vocab: VOCAB,
        max_position: 4096,
        rope_theta: 1_000_000.0,
        tie_embeddings: true,
        seed: 1,
    };
    let dir = tempfile::tempdir()?;
    let start = Instant::now();
    make_model(&spec, dir.path(), None)?;
    let blocks_per_seq = (CONTEXT + 1).div_ceil(BLOCK);
    let opts = LoadOptions {
        dtype: DType::F32,
        device: glimprouter_models::device::test_device(),
        block_size: BLOCK,
        num_blocks: blocks_per_seq * 64,
    };
    let mut runner = ModelRunner::load(dir.path(), &opts)?;
    eprintln!(
        "model made and loaded in {:.0} s",
        start.elapsed().as_secs_f64()
    );

    println!("| batch | SLM decode forward ms | entropy of the rows ms | glimpse share |");
    println!("|---:|---:|---:|---:|");
    for batch in [1usize, 64] {
        let rows = (0..batch)
            .map(|i| BatchRow {
                seq_id: i as u64,
                kind: RowKind::Decode,
                token_ids: vec![(7 + i) as u32],
                start_pos: CONTEXT,
                block_table: ((i * blocks_per_seq) as u32..((i + 1) * blocks_per_seq) as u32)
                    .collect(),
                num_logits: 1,
            })
            .collect();
        let batch_rows = ModelBatch { rows };
        let mut logits = runner.forward(&batch_rows)?; // warm-up
        let forward_ms = median(
            (0..5)
                .map(|_| {
                    let t = Instant::now();
                    logits = runner.forward(&batch_rows).expect("forward");
                    t.elapsed().as_secs_f64() * 1e3
                })
                .collect(),
        );
        let entropy_ms = median(
            (0..9)
                .map(|_| {
                    let t = Instant::now();
                    for r in 0..batch {
                        black_box(entropy(black_box(logits.row(r))));
                    }
                    t.elapsed().as_secs_f64() * 1e3
                })
                .collect(),
        );
        println!(
            "| {batch} | {forward_ms:.1} | {entropy_ms:.2} | {:.1}% |",
            100.0 * entropy_ms / (forward_ms + entropy_ms)
        );
    }
    Ok(())
}
