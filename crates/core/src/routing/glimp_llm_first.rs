//! GlimpRouter with the first step given to the LLM: the opening step of a
//! reasoning trace usually lays out the plan, and a wrong plan is what the
//! later steps cannot repair. Every later step is routed by the glimpse, as
//! in `glimp`.

use super::glimp::Glimp;
use super::RoutingPolicy;
use crate::sampling::SeqRng;
use crate::{Model, RoutingParams};

pub struct GlimpLlmFirst;

impl RoutingPolicy for GlimpLlmFirst {
    fn initial_writer(&self) -> Model {
        Model::Llm
    }

    fn route_after_glimpse(&self, params: &RoutingParams, h_init: f32, rng: &mut SeqRng) -> Model {
        Glimp.route_after_glimpse(params, h_init, rng)
    }

    fn glimpse_may_hand_to_llm(&self) -> bool {
        true
    }
}
