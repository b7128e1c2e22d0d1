//! glimprouter-models: decoder-only transformers on candle over a paged KV cache.
//!
//! Llama, Mistral, Qwen2 and Qwen3 checkpoints in Hugging Face format run one ragged
//! batch per forward (`ModelRunner::forward`): the tokens of many sequences concatenated,
//! each with its own positions and block table, K/V written into a paged cache.
//! Checkpoints are Hugging Face folders of safetensors or GGUF files, whose
//! quantized weights stay quantized (`gguf.rs`, `linear.rs`).

pub mod attention_cpu;
#[cfg(target_arch = "x86_64")]
mod attention_cpu_tile;
mod batch_meta;
pub mod config;
pub mod device;
pub mod error;
pub mod gguf;
pub mod gguf_convert;
pub mod gguf_tokenizer;
pub mod kv_cache;
mod linear;
pub mod make_model;
mod model;
mod output_columns;
mod quant_matmul_cpu;
pub mod rope;
pub mod runner;
mod small_matmul_cpu;
pub mod test_files;
pub mod tokenizer;
pub mod weights;

pub use config::{Arch, ModelConfig, RopeScaling};
pub use error::ModelError;
pub use kv_cache::AttentionBackend;
pub use make_model::{make_model, MakeModelSpec};
pub use runner::{LoadOptions, Logits, ModelRunner};
pub use tokenizer::{ChatMessage, ModelTokenizer};
pub mod task;
pub mod train;
