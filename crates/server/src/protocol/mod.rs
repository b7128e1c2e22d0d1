//! Request and response bodies of the OpenAI API (plus our `routing` extension).

pub mod chat;
pub mod common;
pub mod completions;
pub mod logprobs;

pub use common::{RoutingOverrides, RoutingSummary, StreamOptions, UsageOut};
