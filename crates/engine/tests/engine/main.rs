//! End-to-end tests of the engine on small random-weight model pairs.
//! One test binary (modules below) so the workspace links it once.

mod gguf;
mod harness;
mod lifecycle;
mod logits_processors;
mod lossless;
mod reasoning;
mod routing;
