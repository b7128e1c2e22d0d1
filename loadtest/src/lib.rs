//! Load generator for OpenAI-compatible serving engines (glimp, vLLM,
//! llama.cpp's server, SGLang): closed or open loop, streamed requests with
//! per-chunk timestamps, and a vLLM-style report (throughput, TTFT, TPOT,
//! ITL, end-to-end latency, plus glimp's routing ratio when the server sends
//! it).
//!
//! Tests and other crates drive it through [`run_load`]:
//! build a [`LoadConfig`], await the [`Report`].

pub mod arrival;
pub mod cli;
pub mod client;
pub mod compare;
pub mod config;
pub mod error;
pub mod markdown;
pub mod metrics;
pub mod prompts;
pub mod report;
pub mod request;
pub mod routing;
pub mod runner;

pub use config::{Endpoint, LoadConfig, LoadMode, PromptSource};
pub use error::LoadError;
pub use report::Report;
pub use runner::run_load;
