//! glimprouter-core: the pure logic of the serving engine.
//!
//! No model, no async runtime, no HTTP: the engine drives these types.
//! * [`block_pool`] / [`block_table`]: the paged KV block manager with
//!   tenant-salted prefix caching (one pool per model).
//! * [`sequence`]: one request's state (tokens, writer, step, routing stats).
//! * [`scheduler`]: the two-queue (SLM / LLM) continuous-batching scheduler
//!   producing one [`batch::ModelBatch`] per model per iteration.
//! * [`routing`], [`sampling`], [`spec`], [`steps`]: what the engine needs to
//!   interpret logits: policies, samplers and entropy, speculative
//!   acceptance, step-delimiter detection.

pub mod batch;
pub mod block_pool;
pub mod block_table;
pub mod logits_processors;
pub mod params;
pub mod prefix_hash;
pub mod reasoning;
pub mod route_state;
pub mod routing;
pub mod sampling;
pub mod scheduler;
pub mod sequence;
pub mod spec;
pub mod steps;
pub mod tenant_queue;

pub use batch::{BatchRow, ModelBatch, RowKind};
pub use params::{RoutingParams, SamplingParams};

/// Which of the two models. Used as an index (`as usize`) into per-model arrays.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Model {
    Slm = 0,
    Llm = 1,
}

impl Model {
    pub const BOTH: [Model; 2] = [Model::Slm, Model::Llm];

    pub fn idx(self) -> usize {
        self as usize
    }

    pub fn other(self) -> Model {
        match self {
            Model::Slm => Model::Llm,
            Model::Llm => Model::Slm,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Model::Slm => "slm",
            Model::Llm => "llm",
        }
    }
}

pub type SeqId = u64;
pub type BlockId = u32;
pub type TokenId = u32;
