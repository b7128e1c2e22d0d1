//! glimprouter-engine: the engine loop tying the core scheduler to the two
//! model runners.
//!
//! [`Engine::start`] loads the SLM/LLM pair and runs the loop on its own OS
//! thread; callers hold an [`EngineHandle`] to submit requests and read their
//! [`StreamEvent`]s.

pub mod api;
pub mod config;
pub mod detokenize;
mod engine_loop;
pub mod handle;
pub mod info;
pub mod metrics;
mod queue_slots;
pub mod remote;
mod request;
pub mod start;
pub mod validate;

pub use api::*;
pub use config::{Backend, EngineConfig, ModelSection, RemoteSection};
pub use handle::EngineHandle;
pub use info::EngineInfo;
pub use metrics::EngineMetrics;
pub use start::{Engine, StartError};
