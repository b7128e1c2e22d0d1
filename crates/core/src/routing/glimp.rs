//! GlimpRouter: the SLM glimpses one token at the start of every step; the
//! LLM writes the step iff the entropy of that distribution exceeds `tau`.

use super::RoutingPolicy;
use crate::sampling::SeqRng;
use crate::{Model, RoutingParams};

pub struct Glimp;

impl RoutingPolicy for Glimp {
    /// `h_init > tau` (nats, full vocabulary). `tau = +inf` sends every step to
    /// the SLM and `-inf` every step to the LLM, since `h_init` is finite and
    /// `>= 0`; a NaN entropy keeps the SLM.
    fn route_after_glimpse(&self, params: &RoutingParams, h_init: f32, _: &mut SeqRng) -> Model {
        if h_init > params.tau {
            Model::Llm
        } else {
            Model::Slm
        }
    }

    fn glimpse_may_hand_to_llm(&self) -> bool {
        true
    }
}
