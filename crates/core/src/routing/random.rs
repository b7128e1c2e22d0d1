//! The paper's random baseline: each step goes to the LLM with probability
//! `random_p`, one draw from the request's RNG per step (no other policy draws).

use super::RoutingPolicy;
use crate::sampling::SeqRng;
use crate::{Model, RoutingParams};

pub struct Random;

impl RoutingPolicy for Random {
    fn route_after_glimpse(&self, params: &RoutingParams, _: f32, rng: &mut SeqRng) -> Model {
        if rng.uniform() < params.random_p {
            Model::Llm
        } else {
            Model::Slm
        }
    }

    fn glimpse_may_hand_to_llm(&self) -> bool {
        true
    }
}
