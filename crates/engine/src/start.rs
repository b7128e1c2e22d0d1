//! Loading both models and starting the engine thread.

use std::collections::HashMap;
use std::sync::Arc;

use glimprouter_core::scheduler::{Scheduler, SchedulerConfig};
use glimprouter_core::Model;
use glimprouter_models::{LoadOptions, ModelConfig, ModelRunner, ModelTokenizer};

use crate::config::EngineConfig;
use crate::engine_loop::EngineCore;
use crate::handle::EngineHandle;
use crate::info::EngineInfo;
use crate::metrics::EngineMetrics;
use crate::queue_slots::QueueSlots;
use crate::remote::{RemoteDispatcher, RemoteTier};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("loading the {role} from {path}: {source}")]
    Load {
        role: &'static str,
        path: String,
        source: glimprouter_models::ModelError,
    },
    #[error("the SLM and the LLM must share one tokenizer (speculation and catch-up exchange token ids): {0}")]
    TokenizerMismatch(String),
    #[error("invalid engine config: {0}")]
    Config(String),
    #[error("could not start the engine thread: {0}")]
    Thread(std::io::Error),
}

/// A test-only fault hook: set to a number N, the engine thread panics after N model
/// iterations, so tests can check what the server does when the engine dies.
pub const PANIC_AFTER_ITERATIONS_ENV: &str = "GLIMP_TEST_ENGINE_PANIC_AFTER_ITERATIONS";

pub struct Engine;

impl Engine {
    /// Loads the SLM and LLM, sizes their KV pools and starts the engine
    /// thread. `tenant_weights` feed fair admission.
    pub fn start(
        config: &EngineConfig,
        tenant_weights: HashMap<String, f64>,
    ) -> Result<EngineHandle, StartError> {
        if config.block_size == 0 || config.max_num_batched_tokens == 0 || config.max_num_seqs == 0
        {
            return Err(StartError::Config(
                "block_size, max_num_batched_tokens and max_num_seqs must be positive".into(),
            ));
        }
        pin_compute_threads(config.num_threads);
        config.validate().map_err(StartError::Config)?;
        let sections = [&config.slm, &config.llm];
        let roles = ["SLM", "LLM"];
        let path_of = |i: usize| match (&sections[i].remote, &sections[i].path) {
            (Some(r), _) => format!("{} at {}", r.model, r.url),
            (None, Some(p)) => p.display().to_string(),
            (None, None) => String::new(),
        };
        let load_err = |i: usize, source| StartError::Load {
            role: roles[i],
            path: path_of(i),
            source,
        };
        let dtype = config.dtype.to_candle();
        let device = config.candle_device().map_err(StartError::Config)?;
        let mut runners: [Option<ModelRunner>; 2] = [None, None];
        let mut remote_tiers: [Option<RemoteTier>; 2] = [None, None];
        let mut tokenizers = Vec::new();
        let mut num_blocks = [0usize; 2];
        let mut model_limit = usize::MAX;
        for (i, section) in sections.iter().enumerate() {
            let model = Model::BOTH[i];
            if let Some(path) = &section.path {
                tokenizers.push(ModelTokenizer::load(path).map_err(|e| load_err(i, e))?);
            }
            if let Some(remote) = &section.remote {
                tracing::info!(
                    role = roles[i],
                    url = %remote.url,
                    model = %remote.model,
                    "model served by a remote tier"
                );
                let tier = RemoteTier::new(model, remote).map_err(StartError::Config)?;
                remote_tiers[i] = Some(tier);
                model_limit = model_limit.min(remote.max_model_len.unwrap_or(usize::MAX));
                continue;
            }
            let path = section
                .path
                .as_ref()
                .expect("validated: a local model has a path");
            let model_config = ModelConfig::load(path).map_err(|e| load_err(i, e))?;
            let per_block = model_config
                .kv_bytes_per_block(config.block_size, dtype)
                .max(1);
            num_blocks[i] = section
                .num_blocks
                .unwrap_or(section.kv_cache_mb * 1024 * 1024 / per_block)
                .max(1);
            let opts = LoadOptions {
                dtype,
                device: device.clone(),
                block_size: config.block_size,
                num_blocks: num_blocks[i],
            };
            let runner = ModelRunner::load(path, &opts).map_err(|e| load_err(i, e))?;
            model_limit = model_limit.min(runner.config().max_position_embeddings);
            runners[i] = Some(runner);
        }
        // Both models exchange token ids (catch-up, drafts, remote contexts):
        // every tokenizer at hand must agree, and so must the local vocabularies.
        for other in tokenizers.iter().skip(1) {
            check_same_vocabulary(&tokenizers[0], other)?;
        }
        if let [Some(slm), Some(llm)] = &runners {
            if slm.config().vocab_size != llm.config().vocab_size {
                return Err(StartError::TokenizerMismatch(format!(
                    "vocab_size {} (SLM) vs {} (LLM)",
                    slm.config().vocab_size,
                    llm.config().vocab_size
                )));
            }
        }
        let tokenizer = tokenizers.into_iter().next().ok_or_else(|| {
            StartError::Config("no model has a local folder to read the tokenizer from".into())
        })?;
        let max_model_len = config.max_model_len.unwrap_or(model_limit).min(model_limit);
        let per_model = |v: Option<usize>, default: usize| v.unwrap_or(default).max(1);
        let sched_config = SchedulerConfig {
            block_size: config.block_size,
            num_blocks,
            max_num_batched_tokens: [
                per_model(
                    config.slm.max_num_batched_tokens,
                    config.max_num_batched_tokens,
                ),
                per_model(
                    config.llm.max_num_batched_tokens,
                    config.max_num_batched_tokens,
                ),
            ],
            max_num_seqs: [
                per_model(config.slm.max_num_seqs, config.max_num_seqs),
                per_model(config.llm.max_num_seqs, config.max_num_seqs),
            ],
            enable_prefix_caching: config.enable_prefix_caching,
            tenant_weights,
            remote: config.remote_tiers(),
            speculative_disable_by_batch_size: config.speculative_disable_by_batch_size,
            long_prefill_token_threshold: config.long_prefill_token_threshold,
        };
        // The larger model queue (a model section may set its own max_num_seqs, as a
        // remote tier's steps in flight do).
        let running = sched_config.max_num_seqs.into_iter().max().unwrap_or(1);
        tracing::info!(
            slm_blocks = num_blocks[0],
            llm_blocks = num_blocks[1],
            block_size = config.block_size,
            max_model_len,
            "KV pools sized"
        );
        let tokenizer = Arc::new(tokenizer);
        let metrics = Arc::new(EngineMetrics::new());
        let (tx, rx) = crossbeam::channel::unbounded();
        let info = Arc::new(EngineInfo {
            served_model_name: config.served_model_name.clone(),
            slm_name: path_of(0),
            llm_name: path_of(1),
            remote: config.remote_tiers(),
            max_model_len,
            tokenizer: tokenizer.clone(),
            default_routing: config.default_routing(),
            reasoning_parser: config.reasoning_parser,
        });
        let remote = if remote_tiers.iter().any(Option::is_some) {
            Some(RemoteDispatcher::new(remote_tiers, metrics.clone()).map_err(StartError::Thread)?)
        } else {
            None
        };
        let mut core = EngineCore::new(
            Scheduler::new(sched_config),
            runners,
            remote,
            tokenizer,
            metrics.clone(),
            rx,
        );
        core.panic_after_iterations = std::env::var(PANIC_AFTER_ITERATIONS_ENV)
            .ok()
            .and_then(|v| v.parse().ok());
        let thread = std::thread::Builder::new()
            .name("glimp-engine".into())
            .spawn(move || core.run())
            .map_err(StartError::Thread)?;
        Ok(EngineHandle {
            commands: tx,
            info,
            metrics,
            slots: QueueSlots::new(running.saturating_add(config.max_waiting_requests)),
            thread: Arc::new(thread),
        })
    }
}

fn check_same_vocabulary(a: &ModelTokenizer, b: &ModelTokenizer) -> Result<(), StartError> {
    if a.vocab_size() != b.vocab_size() {
        return Err(StartError::TokenizerMismatch(format!(
            "{} vs {} tokens",
            a.vocab_size(),
            b.vocab_size()
        )));
    }
    for id in 0..a.vocab_size() as u32 {
        if a.token_text(id) != b.token_text(id) {
            return Err(StartError::TokenizerMismatch(format!("token {id} differs")));
        }
    }
    Ok(())
}

/// Fixes the number of compute threads for rayon and candle.
///
/// Candle works out its thread count on every matmul, and without
/// `RAYON_NUM_THREADS` that means parsing /proc/cpuinfo each time: 6% of the
/// engine thread's time in a batch-32 decode profile. Setting the variable once
/// (when the user has not) makes that a cheap lookup. It runs before the
/// engine thread starts; under `glimp serve` no other thread exists yet.
fn pin_compute_threads(num_threads: usize) {
    let from_env = std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 0);
    let threads = if num_threads > 0 {
        num_threads
    } else if let Some(n) = from_env {
        n
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    };
    if from_env != Some(threads) {
        std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    }
    // Only the first call configures the global pool; later engines share it.
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global();
}
