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
//!
//! Then a real quantized model, SmolLM2-135M-Instruct Q4_1 GGUF
//! (`test_files::smollm2_q4_1()`), next to its f32 copy (`retype_gguf`, written to a
//! temp dir at start): decode tokens/s at batch 1, 8, 32 (summary; criterion for 1 and 8),
//! prefill tokens/s of one 512-token prompt (summary only), each file's size and the
//! resident memory each load adds, in a second summary table with the Q4_1 / f32 ratios.
//! Its timings stop after a few seconds per cell (a single run for the Q4_1 prefill,
//! which takes tens of seconds on 2 cores). Without the file these rows print
//! "SKIPPED: ..." and the rest runs.

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use candle_core::quantized::GgmlDType;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::qwen3;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use glimprouter_core::{BatchRow, ModelBatch, RowKind};
use glimprouter_models::attention_cpu::{paged_attention, AttnShape, SeqSpan};
use glimprouter_models::{
    gguf_convert, make_model, test_files, Arch, LoadOptions, MakeModelSpec, ModelConfig,
    ModelRunner,
};

const CONTEXT: usize = 512;
const BLOCK: usize = 16;
const BATCHES: [usize; 4] = [1, 8, 32, 64];
/// Decode batches of the SmolLM2 rows (its 30 layers make batch 64 slow on 2 cores).
const GGUF_BATCHES: [usize; 3] = [1, 8, 32];
/// Criterion's 10 samples of a Q4_1 batch-32 step (~3 s each) would take half a minute.
const GGUF_CRITERION_BATCHES: [usize; 2] = [1, 8];

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
        device: glimprouter_models::device::test_device(),
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

/// SmolLM2 Q4_1 and its f32 copy, loaded in that order.
struct GgufModels {
    _dir: tempfile::TempDir,
    models: [GgufModel; 2],
}

struct GgufModel {
    /// "Q4_1" or "f32".
    label: &'static str,
    runner: ModelRunner,
    file_mib: f64,
    /// VmRSS growth over the load; `None` off Linux.
    rss_mib: Option<f64>,
}

/// `None` (after printing "SKIPPED: ...") when the file is missing or will not convert
/// or load: a bench run without the cache should still give the other rows.
fn gguf_setup() -> Option<GgufModels> {
    let src = test_files::smollm2_q4_1();
    if !src.exists() {
        eprintln!(
            "SKIPPED: SmolLM2 Q4_1 rows: {} not found (run .ci/run, or set GLIMP_CACHE_DIR)",
            src.display()
        );
        return None;
    }
    match try_gguf_setup(&src) {
        Ok(m) => Some(m),
        Err(e) => {
            eprintln!("SKIPPED: SmolLM2 Q4_1 rows: {e:#}");
            None
        }
    }
}

fn try_gguf_setup(src: &Path) -> anyhow::Result<GgufModels> {
    let dir = tempfile::tempdir()?;
    let f32_path = dir.path().join("SmolLM2-135M-Instruct.F32.gguf");
    gguf_convert::retype_gguf(src, &f32_path, GgmlDType::F32)?;
    // The RSS growth of a load includes this KV cache pool (742 MiB of f32 K/V for
    // SmolLM2), the same for both so the difference is the weights'. Its zeroed pages
    // become resident only once written, which a load does not do.
    let opts = LoadOptions {
        dtype: DType::F32,
        device: glimprouter_models::device::test_device(),
        block_size: BLOCK,
        num_blocks: (CONTEXT + 1).div_ceil(BLOCK) * GGUF_BATCHES[GGUF_BATCHES.len() - 1],
    };
    let load = |label: &'static str, path: &Path| -> anyhow::Result<GgufModel> {
        release_free_heap();
        let before = rss_mib();
        let runner = ModelRunner::load(path, &opts)?;
        // Again, so the load's freed scratch buffers do not count as the model's.
        release_free_heap();
        let rss_mib = rss_mib().zip(before).map(|(after, before)| after - before);
        let file_mib = std::fs::metadata(path)?.len() as f64 / (1024.0 * 1024.0);
        Ok(GgufModel {
            label,
            runner,
            file_mib,
            rss_mib,
        })
    };
    let q4 = load("Q4_1", src)?;
    let full = load("f32", &f32_path)?;
    Ok(GgufModels {
        _dir: dir,
        models: [q4, full],
    })
}

/// Hands the heap's free pages back to the OS (glibc only), so that RSS counts live memory:
/// otherwise the Q4_1 load refilled pages `retype_gguf` had just freed and grew RSS by
/// 8 MiB for a 94 MiB file.
fn release_free_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn malloc_trim(pad: usize) -> std::ffi::c_int;
        }
        // SAFETY: malloc_trim only returns free pages to the OS; live allocations stay.
        unsafe {
            malloc_trim(0);
        }
    }
}

/// This process's resident memory (VmRSS) in MiB; `None` where /proc is not Linux's.
fn rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
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
    // First, so the RSS deltas of its loads are not blurred by the memory the rest frees.
    let mut gguf = gguf_setup();
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
    if let Some(gguf) = gguf.as_mut() {
        gguf_decode(c, gguf);
    }
    // The summary is no criterion benchmark: skip it when a filter names something else.
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    if filter.is_none_or(|f| "summary".contains(f.as_str())) {
        summary(&mut s, &cfg, &reference, &token);
        match gguf.as_mut() {
            Some(gguf) => gguf_summary(gguf),
            None => println!("\nSKIPPED: SmolLM2 Q4_1 vs f32 table (see above)"),
        }
    }
}

/// Decode of SmolLM2, Q4_1 and f32 alternating per batch size. No prefill group: one
/// 512-token prefill takes seconds (Q4_1: tens of seconds) here, and criterion's 10
/// samples would dominate the run; the summary times it.
fn gguf_decode(c: &mut Criterion, gguf: &mut GgufModels) {
    let cfg = gguf.models[0].runner.config();
    eprintln!(
        "gguf model: SmolLM2-135M-Instruct, {} params, {} layers, hidden {}, heads {}/{} x {}, vocab {}",
        cfg.num_params(),
        cfg.num_hidden_layers,
        cfg.hidden_size,
        cfg.num_attention_heads,
        cfg.num_key_value_heads,
        cfg.head_dim,
        cfg.vocab_size
    );
    let mut g = c.benchmark_group("smollm2_decode_ctx512");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
    for b in GGUF_CRITERION_BATCHES {
        let batch = decode_batch(b);
        g.throughput(Throughput::Elements(b as u64));
        for m in &mut gguf.models {
            let id = BenchmarkId::new(m.label, b);
            g.bench_with_input(id, &batch, |bench, batch| {
                bench.iter(|| black_box(m.runner.forward(batch).expect("forward")))
            });
        }
    }
    g.finish();
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

/// Like `median_time` for steps of up to seconds: timed runs stop once `budget` is spent
/// (at least 3, at most `max_reps`), and a warm-up longer than `budget` is itself the
/// result, as a run of tens of seconds (the Q4_1 prefill) needs no warming.
fn median_time_within(budget: Duration, max_reps: usize, mut f: impl FnMut()) -> f64 {
    let t = Instant::now();
    f();
    let warm_up = t.elapsed();
    if warm_up > budget {
        return warm_up.as_secs_f64();
    }
    let start = Instant::now();
    let mut times = Vec::new();
    while times.len() < max_reps && (times.len() < 3 || start.elapsed() < budget) {
        let t = Instant::now();
        f();
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(|a, b| a.total_cmp(b));
    times[times.len() / 2]
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

fn gguf_summary(gguf: &mut GgufModels) {
    const GGUF_BUDGET: Duration = Duration::from_secs(5);
    // Tokens/s per column: decode b=1/8/32, then prefill; Q4_1 and f32 alternate per
    // row so a change in machine load hits both alike.
    let mut speeds = [[0.0f64; GGUF_BATCHES.len() + 1]; 2];
    for (col, b) in GGUF_BATCHES.into_iter().enumerate() {
        let batch = decode_batch(b);
        for (i, m) in gguf.models.iter_mut().enumerate() {
            let t = median_time_within(GGUF_BUDGET, 9, || {
                black_box(m.runner.forward(&batch).expect("forward"));
            });
            speeds[i][col] = b as f64 / t;
        }
    }
    let batch = prefill_batch();
    for (i, m) in gguf.models.iter_mut().enumerate() {
        let t = median_time_within(GGUF_BUDGET, 5, || {
            black_box(m.runner.forward(&batch).expect("forward"));
        });
        speeds[i][GGUF_BATCHES.len()] = CONTEXT as f64 / t;
    }

    let mib = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.0}"));
    println!(
        "\n| model | decode b=1 tok/s | decode b=8 tok/s | decode b=32 tok/s | prefill {CONTEXT} tok/s | RSS MiB | file MiB |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (m, row) in gguf.models.iter().zip(&speeds) {
        println!(
            "| SmolLM2-135M {} | {:.1} | {:.1} | {:.1} | {:.1} | {} | {:.0} |",
            m.label,
            row[0],
            row[1],
            row[2],
            row[3],
            mib(m.rss_mib),
            m.file_mib
        );
    }
    let [q4, full] = &gguf.models;
    let rss_ratio = q4.rss_mib.zip(full.rss_mib).map(|(q, f)| q / f);
    println!(
        "| Q4_1 / f32 | {:.2}x | {:.2}x | {:.2}x | {:.2}x | {} | {:.2}x |",
        speeds[0][0] / speeds[1][0],
        speeds[0][1] / speeds[1][1],
        speeds[0][2] / speeds[1][2],
        speeds[0][3] / speeds[1][3],
        rss_ratio.map_or("-".to_string(), |r| format!("{r:.2}x")),
        q4.file_mib / full.file_mib
    );
}

criterion_group!(forward, benches);
criterion_main!(forward);
