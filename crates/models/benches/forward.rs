//! Forward-pass benchmarks of a Qwen3-shaped ~20M-parameter model (random weights).
//!
//! Run in release: `cargo bench -p glimprouter-models --bench forward`.
//! * decode tokens/s at batch 1, 8, 32, 64 with 512 tokens of context per sequence;
//! * prefill tokens/s (one 512-token prompt);
//! * a plain candle f32 GEMM of the decode-64 projection shape, for the FLOP/s ceiling;
//! * batch-1 decode of candle-transformers' qwen3 (contiguous cache) for comparison.
//!
//! After the criterion groups a summary table (own timing, median of repeated runs)
//! prints achieved FLOP/s next to the GEMM's.
//!
//! Decode rows sit at position 512 with a block table covering 513 positions; the cache
//! content does not change the amount of work, so the timed step is simply re-run at
//! the same position (overwriting the same slot).

use std::hint::black_box;
use std::time::{Duration, Instant};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::qwen3;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use glimprouter_core::{BatchRow, ModelBatch, RowKind};
use glimprouter_models::attention_cpu::{paged_attention, AttnShape, SeqSpan};
use glimprouter_models::{make_model, Arch, LoadOptions, MakeModelSpec, ModelConfig, ModelRunner};

const CONTEXT: usize = 512;
const BLOCK: usize = 16;
const BATCHES: [usize; 4] = [1, 8, 32, 64];

fn spec() -> MakeModelSpec {
    MakeModelSpec {
        arch: Arch::Qwen3,
        layers: 6,
        hidden: 512,
        intermediate: 1536,
        heads: 8,
        kv_heads: 4,
        head_dim: Some(64),
        vocab: 4096,
        max_position: 2048,
        rope_theta: 1_000_000.0,
        tie_embeddings: true,
        seed: 1,
    }
}

struct Setup {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    runner: ModelRunner,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().expect("temp dir");
    make_model(&spec(), dir.path(), None).expect("make_model");
    let blocks_per_seq = (CONTEXT + 1).div_ceil(BLOCK);
    let opts = LoadOptions {
        dtype: DType::F32,
        device: Device::Cpu,
        block_size: BLOCK,
        num_blocks: blocks_per_seq * 64,
    };
    let runner = ModelRunner::load(dir.path(), &opts).expect("load");
    Setup {
        path: dir.path().to_path_buf(),
        _dir: dir,
        runner,
    }
}

fn decode_batch(batch: usize) -> ModelBatch {
    let blocks_per_seq = (CONTEXT + 1).div_ceil(BLOCK);
    ModelBatch {
        rows: (0..batch)
            .map(|i| BatchRow {
                seq_id: i as u64,
                kind: RowKind::Decode,
                token_ids: vec![(7 + i) as u32],
                start_pos: CONTEXT,
                block_table: ((i * blocks_per_seq) as u32..((i + 1) * blocks_per_seq) as u32)
                    .collect(),
                num_logits: 1,
            })
            .collect(),
    }
}

fn prefill_batch() -> ModelBatch {
    ModelBatch {
        rows: vec![BatchRow {
            seq_id: 0,
            kind: RowKind::Prefill,
            token_ids: (0..CONTEXT as u32).map(|t| t % 4000 + 5).collect(),
            start_pos: 0,
            block_table: (0..CONTEXT.div_ceil(BLOCK) as u32).collect(),
            num_logits: 1,
        }],
    }
}

/// GEMM operands of the decode-64 MLP up-projection shape: [64, hidden] x [hidden, inter].
fn gemm_operands(cfg: &ModelConfig) -> (Tensor, Tensor) {
    let dev = Device::Cpu;
    let a = Tensor::randn(0f32, 1.0, (64, cfg.hidden_size), &dev).expect("randn");
    let w =
        Tensor::randn(0f32, 1.0, (cfg.intermediate_size, cfg.hidden_size), &dev).expect("randn");
    (a, w.t().expect("t"))
}

/// FLOPs of one forward of `tokens` tokens, each attending to `ctx` positions, with
/// `logits` rows through the LM head.
fn model_flops(cfg: &ModelConfig, tokens: usize, avg_ctx: f64, logits: usize) -> f64 {
    let (h, d) = (cfg.hidden_size, cfg.head_dim);
    let q = cfg.num_attention_heads * d;
    let kv = cfg.num_key_value_heads * d;
    let per_layer_linear =
        2.0 * (h * q + 2 * h * kv + q * h + 3 * h * cfg.intermediate_size) as f64;
    let per_layer_attn = 4.0 * (cfg.num_attention_heads * d) as f64 * avg_ctx;
    let layers = cfg.num_hidden_layers as f64;
    tokens as f64 * layers * (per_layer_linear + per_layer_attn)
        + 2.0 * (logits * h * cfg.vocab_size) as f64
}

fn reference_after_prefill(path: &std::path::Path) -> qwen3::ModelForCausalLM {
    let cfg: qwen3::Config =
        serde_json::from_str(&std::fs::read_to_string(path.join("config.json")).expect("config"))
            .expect("qwen3 config");
    let files = [path.join("model.safetensors")];
    // SAFETY: the benchmark's own freshly written file, not modified while mapped.
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&files, DType::F32, &Device::Cpu) }
        .expect("vb");
    let mut model = qwen3::ModelForCausalLM::new(&cfg, vb).expect("reference");
    let prompt: Vec<u32> = (0..CONTEXT as u32).map(|t| t % 4000 + 5).collect();
    let input = Tensor::new(prompt.as_slice(), &Device::Cpu)
        .and_then(|t| t.unsqueeze(0))
        .expect("input");
    model.forward(&input, 0).expect("prefill");
    model
}

fn reference_decode_step(prefilled: &qwen3::ModelForCausalLM, token: &Tensor) -> Tensor {
    // Cloning shares the cached tensors; the step appends to the clone only, so every
    // iteration decodes at the same context length.
    let mut m = prefilled.clone();
    m.forward(token, CONTEXT).expect("decode")
}

fn benches(c: &mut Criterion) {
    let mut s = setup();
    let cfg = s.runner.config().clone();
    eprintln!(
        "model: qwen3-shaped, {} params, {} layers, hidden {}, heads {}/{} x {}",
        cfg.num_params(),
        cfg.num_hidden_layers,
        cfg.hidden_size,
        cfg.num_attention_heads,
        cfg.num_key_value_heads,
        cfg.head_dim
    );

    let mut g = c.benchmark_group("decode_ctx512");
    g.sample_size(10).measurement_time(Duration::from_secs(3));
    for b in BATCHES {
        let batch = decode_batch(b);
        g.throughput(Throughput::Elements(b as u64));
        g.bench_with_input(BenchmarkId::from_parameter(b), &batch, |bench, batch| {
            bench.iter(|| black_box(s.runner.forward(batch).expect("forward")))
        });
    }
    g.finish();

    let mut g = c.benchmark_group("prefill");
    g.sample_size(10).measurement_time(Duration::from_secs(3));
    let batch = prefill_batch();
    g.throughput(Throughput::Elements(CONTEXT as u64));
    g.bench_function("512_tokens", |bench| {
        bench.iter(|| black_box(s.runner.forward(&batch).expect("forward")))
    });
    g.finish();

    let mut g = c.benchmark_group("gemm_f32");
    g.sample_size(10).measurement_time(Duration::from_secs(3));
    let (a, w) = gemm_operands(&cfg);
    g.bench_function("64x512x1536", |bench| {
        bench.iter(|| black_box(a.matmul(&w).expect("matmul")))
    });
    g.finish();

    let reference = reference_after_prefill(&s.path);
    let token = Tensor::new(&[[7u32]], &Device::Cpu).expect("token");
    let mut g = c.benchmark_group("decode_batch1_vs_reference");
    g.sample_size(10).measurement_time(Duration::from_secs(3));
    g.bench_function("candle_transformers_qwen3", |bench| {
        bench.iter(|| black_box(reference_decode_step(&reference, &token)))
    });
    let batch = decode_batch(1);
    g.bench_function("paged", |bench| {
        bench.iter(|| black_box(s.runner.forward(&batch).expect("forward")))
    });
    g.finish();

    attention_kernel(c, &cfg);
    // The summary is no criterion benchmark: skip it when a filter names something else.
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    if filter.is_none_or(|f| "summary".contains(f.as_str())) {
        summary(&mut s, &cfg, &reference, &token);
    }
}

/// The CPU paged-attention kernel alone: one layer of decode batch 64 at context 513.
/// Decode attention reads every cached K/V once, so its speed is memory bandwidth.
fn attention_kernel(c: &mut Criterion, cfg: &ModelConfig) {
    let (kvh, d, h) = (
        cfg.num_key_value_heads,
        cfg.head_dim,
        cfg.num_attention_heads,
    );
    let blocks_per_seq = (CONTEXT + 1).div_ceil(BLOCK);
    let batch = 64;
    let cache_len = batch * blocks_per_seq * BLOCK * kvh * d;
    let k: Vec<f32> = (0..cache_len).map(|i| (i % 17) as f32 * 0.01).collect();
    let v = k.clone();
    let q: Vec<f32> = (0..batch * h * d).map(|i| (i % 13) as f32 * 0.1).collect();
    let tables: Vec<Vec<u32>> = (0..batch)
        .map(|i| ((i * blocks_per_seq) as u32..((i + 1) * blocks_per_seq) as u32).collect())
        .collect();
    let spans: Vec<SeqSpan<'_>> = tables
        .iter()
        .enumerate()
        .map(|(i, t)| SeqSpan {
            token_start: i,
            num_tokens: 1,
            start_pos: CONTEXT,
            block_table: t,
        })
        .collect();
    let shape = AttnShape {
        num_heads: h,
        num_kv_heads: kvh,
        head_dim: d,
        block_size: BLOCK,
        scale: 0.125,
        window: None,
    };
    let bytes = (2 * batch * (CONTEXT + 1) * kvh * d * 4) as u64;
    let mut g = c.benchmark_group("paged_attention_kernel");
    g.sample_size(10).measurement_time(Duration::from_secs(3));
    g.throughput(Throughput::Bytes(bytes));
    g.bench_function("decode64_ctx513_f32_one_layer", |bench| {
        bench.iter(|| black_box(paged_attention(&q, &k, &v, &spans, &shape)))
    });
    g.finish();
}

/// Median wall time of `f` over `reps` runs after one warm-up.
fn median_time(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut times: Vec<f64> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(|a, b| a.total_cmp(b));
    times[reps / 2]
}

fn summary(s: &mut Setup, cfg: &ModelConfig, reference: &qwen3::ModelForCausalLM, token: &Tensor) {
    let (a, w) = gemm_operands(cfg);
    let gemm_s = median_time(50, || {
        black_box(a.matmul(&w).expect("matmul"));
    });
    let gemm_flops = 2.0 * (64 * cfg.hidden_size * cfg.intermediate_size) as f64 / gemm_s;
    println!("\n| benchmark | time/step | tokens/s | GFLOP/s | % of GEMM |");
    println!("|---|---|---|---|---|");
    println!(
        "| f32 GEMM 64x{}x{} | {:.3} ms | - | {:.1} | 100% |",
        cfg.hidden_size,
        cfg.intermediate_size,
        gemm_s * 1e3,
        gemm_flops / 1e9
    );
    for b in BATCHES {
        let batch = decode_batch(b);
        let t = median_time(15, || {
            black_box(s.runner.forward(&batch).expect("forward"));
        });
        let flops = model_flops(cfg, b, (CONTEXT + 1) as f64, b) / t;
        println!(
            "| decode batch {b} (ctx {CONTEXT}) | {:.2} ms | {:.0} | {:.1} | {:.0}% |",
            t * 1e3,
            b as f64 / t,
            flops / 1e9,
            100.0 * flops / gemm_flops
        );
    }
    let batch = prefill_batch();
    let t = median_time(5, || {
        black_box(s.runner.forward(&batch).expect("forward"));
    });
    let flops = model_flops(cfg, CONTEXT, (CONTEXT + 1) as f64 / 2.0, 1) / t;
    println!(
        "| prefill {CONTEXT} tokens | {:.1} ms | {:.0} | {:.1} | {:.0}% |",
        t * 1e3,
        CONTEXT as f64 / t,
        flops / 1e9,
        100.0 * flops / gemm_flops
    );
    let t = median_time(15, || {
        black_box(reference_decode_step(reference, token));
    });
    let flops = model_flops(cfg, 1, (CONTEXT + 1) as f64, 1) / t;
    println!(
        "| candle-transformers qwen3 decode batch 1 (ctx {CONTEXT}) | {:.2} ms | {:.0} | {:.1} | {:.0}% |",
        t * 1e3,
        1.0 / t,
        flops / 1e9,
        100.0 * flops / gemm_flops
    );
}

criterion_group!(forward, benches);
criterion_main!(forward);
