//! The baselines: every step by one model.

use super::RoutingPolicy;
use crate::sampling::SeqRng;
use crate::{Model, RoutingParams};

/// Every step by the SLM.
pub struct SlmOnly;

impl RoutingPolicy for SlmOnly {}

/// Every step by the LLM, which also opens the first one and keeps writing
/// after each of its steps (no glimpses at all).
pub struct LlmOnly;

impl RoutingPolicy for LlmOnly {
    fn initial_writer(&self) -> Model {
        Model::Llm
    }

    fn route_after_glimpse(&self, _: &RoutingParams, _: f32, _: &mut SeqRng) -> Model {
        Model::Llm
    }

    fn writer_after_llm_step(&self) -> Model {
        Model::Llm
    }
}
