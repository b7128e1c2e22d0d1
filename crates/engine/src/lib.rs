//! glimprouter-engine: the engine loop tying the core scheduler to the two
//! model runners.

pub mod api;
pub mod handle;
pub mod info;
pub mod metrics;

pub use api::*;
pub use handle::EngineHandle;
pub use info::EngineInfo;
pub use metrics::EngineMetrics;
