//! Builds a random-weight SLM/LLM pair sharing the task tokenizer, starts
//! engines over it, and collects request outputs.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use glimprouter_core::{BatchRow, Model, ModelBatch, RoutingParams, RowKind, SamplingParams};
use glimprouter_engine::{
    Engine, EngineConfig, EngineHandle, Finished, GenerateRequest, StreamEvent,
};
use glimprouter_models::task::write_random_pair;
use glimprouter_models::{LoadOptions, ModelRunner};

pub struct Pair {
    pub slm: PathBuf,
    pub llm: PathBuf,
}

/// The pair is written once per test process.
pub fn pair() -> &'static Pair {
    static PAIR: OnceLock<Pair> = OnceLock::new();
    PAIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("glimp-engine-tests-{}", std::process::id()));
        let (slm, llm) = write_random_pair(&dir, 1024, [1, 2]).expect("random pair");
        Pair { slm, llm }
    })
}

pub fn config(pair: &Pair) -> EngineConfig {
    let mut c = EngineConfig::for_models(&pair.slm, &pair.llm);
    c.slm.kv_cache_mb = 8;
    c.llm.kv_cache_mb = 8;
    c.max_num_batched_tokens = 512;
    c.device = glimprouter_models::device::test_device_name();
    c
}

pub fn start(config: &EngineConfig) -> EngineHandle {
    Engine::start(config, Default::default()).expect("engine starts")
}

pub fn prompt(engine: &EngineHandle, text: &str) -> Vec<u32> {
    engine
        .info()
        .tokenizer
        .encode(text, false)
        .expect("encodes")
}

/// A prompt of exactly three full 16-token blocks, for prefix-cache tests.
pub fn three_block_prompt(engine: &EngineHandle) -> Vec<u32> {
    prompt(engine, &"add 1 2 , ".repeat(12))[..48].to_vec()
}

pub fn request(
    id: &str,
    prompt_ids: Vec<u32>,
    sampling: SamplingParams,
    routing: RoutingParams,
) -> GenerateRequest {
    GenerateRequest {
        request_id: id.to_string(),
        tenant: "test".into(),
        prompt_ids,
        sampling,
        routing,
        arrival: Instant::now(),
    }
}

/// A space ends a step: nearly every token of the task vocabulary carries
/// one, so random-weight models (which loop greedily) still take many steps.
pub fn routing(policy: glimprouter_core::params::Policy, tau: f32, k: usize) -> RoutingParams {
    RoutingParams {
        policy,
        tau,
        speculative_k: k,
        delimiter: " ".into(),
        ..RoutingParams::default()
    }
}

#[derive(Debug, Clone)]
pub struct Output {
    pub tokens: Vec<u32>,
    pub writers: Vec<Model>,
    pub finished: Finished,
}

/// Starts an engine on `config`, runs every text of `texts` at once (the i-th
/// with `sampling(i)`), and stops it.
pub fn run_texts(
    config: &EngineConfig,
    texts: &[&str],
    sampling: impl Fn(usize) -> SamplingParams,
    routing: &RoutingParams,
) -> Vec<Output> {
    let engine = start(config);
    let reqs = texts
        .iter()
        .enumerate()
        .map(|(i, text)| {
            request(
                &format!("r{i}"),
                prompt(&engine, text),
                sampling(i),
                routing.clone(),
            )
        })
        .collect();
    let out = run_all(&engine, reqs);
    engine.shutdown();
    out
}

/// `n` requests of the same prompt, seeded 0..n, submitted 250 at a time.
pub fn run_seeds(
    engine: &EngineHandle,
    prompt_ids: &[u32],
    sampling: &SamplingParams,
    routing: &RoutingParams,
    n: usize,
) -> Vec<Output> {
    let mut outs = Vec::with_capacity(n);
    for chunk in (0..n).collect::<Vec<_>>().chunks(250) {
        let reqs = chunk
            .iter()
            .map(|&seed| {
                let s = SamplingParams {
                    seed: Some(seed as u64),
                    ..sampling.clone()
                };
                request(&format!("s{seed}"), prompt_ids.to_vec(), s, routing.clone())
            })
            .collect();
        outs.extend(run_all(engine, reqs));
    }
    outs
}

/// The next-token logits of the model in `dir` after `tokens` (at most 48),
/// from one forward of the model itself, without the engine.
pub fn next_token_logits(dir: &Path, tokens: &[u32]) -> Vec<f32> {
    let opts = LoadOptions {
        dtype: candle_core::DType::F32,
        device: glimprouter_models::device::test_device(),
        block_size: 16,
        num_blocks: 8,
    };
    let mut runner = ModelRunner::load(dir, &opts).expect("model loads");
    let row = BatchRow {
        seq_id: 0,
        kind: RowKind::Prefill,
        token_ids: tokens.to_vec(),
        start_pos: 0,
        block_table: vec![0, 1, 2],
        num_logits: 1,
    };
    let logits = runner
        .forward(&ModelBatch { rows: vec![row] })
        .expect("forward");
    logits.row(0).to_vec()
}

/// Submits every request at once and waits for all of them.
pub fn run_all(engine: &EngineHandle, requests: Vec<GenerateRequest>) -> Vec<Output> {
    let receivers: Vec<_> = requests
        .into_iter()
        .map(|r| engine.submit(r).expect("accepted"))
        .collect();
    receivers.into_iter().map(collect).collect()
}

pub fn collect(mut rx: tokio::sync::mpsc::UnboundedReceiver<StreamEvent>) -> Output {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut tokens = Vec::new();
    let mut writers = Vec::new();
    loop {
        assert!(Instant::now() < deadline, "request hung");
        match rx.blocking_recv() {
            Some(StreamEvent::Token(d)) => {
                writers.extend(std::iter::repeat_n(d.writer, d.token_ids.len()));
                tokens.extend(d.token_ids);
            }
            Some(StreamEvent::Finished(finished)) => {
                return Output {
                    tokens,
                    writers,
                    finished,
                }
            }
            Some(StreamEvent::Error(e)) => panic!("request failed: {e}"),
            None => panic!("engine dropped the request"),
        }
    }
}

/// The median H_init of every glimpse of `outputs`: a tau that routes
/// about half of them to the LLM.
pub fn median_of_h_init(outputs: &[Output]) -> f32 {
    let mut h: Vec<f32> = outputs
        .iter()
        .flat_map(|o| o.finished.routing.h_init.clone())
        .collect();
    h.sort_by(f32::total_cmp);
    h[h.len() / 2]
}

/// Reads a gauge from the engine's registry.
pub fn gauge(engine: &EngineHandle, name: &str, label: (&str, &str)) -> f64 {
    for family in engine.metrics().registry.gather() {
        if family.name() != name {
            continue;
        }
        for m in family.get_metric() {
            if m.get_label()
                .iter()
                .any(|l| l.name() == label.0 && l.value() == label.1)
            {
                return m.get_gauge().value();
            }
        }
    }
    panic!("no gauge {name}{{{}={}}}", label.0, label.1)
}

pub fn counter(engine: &EngineHandle, name: &str) -> f64 {
    engine
        .metrics()
        .registry
        .gather()
        .iter()
        .filter(|f| f.name() == name)
        .flat_map(|f| {
            f.get_metric()
                .iter()
                .map(|m| m.get_counter().value())
                .collect::<Vec<_>>()
        })
        .sum()
}

/// Waits until both pools are empty again (every block freed or evictable).
pub fn wait_for_empty_pools(engine: &EngineHandle) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let used: f64 = ["slm", "llm"]
            .iter()
            .map(|m| gauge(engine, "glimp:kv_cache_usage_perc", ("model", m)))
            .sum();
        if used == 0.0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "KV blocks still held: usage sum {used}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}
