//! glimprouter-eval: `glimp eval`.
//!
//! Runs a held-out, seeded problem set of the bundled task through the real
//! engine under every routing policy (SLM only, LLM only, LLM with
//! speculation, random routing at glimp's LLM step share, step-entropy,
//! step-ppl, specreason, glimp across tau, glimp with speculation) and
//! reports accuracy, mean and p90 latency per problem, and the share of
//! steps and tokens the LLM wrote. It also measures how well H_init
//! predicts that the SLM's version of a step differs from the LLM's (AUC),
//! and draws the accuracy/latency plane and the H_init histogram.
//!
//! [`run_eval`] does the work on a started engine; [`write_outputs`] writes
//! `results.json`, `results.md`, `pareto.png` and `h_init_hist.png`.

pub mod disagreement;
pub mod driver;
mod eval;
pub mod pareto;
pub mod plan;
pub mod plots;
pub mod policy_run;
pub mod report;
pub mod rounds;
pub mod stats;

use std::path::PathBuf;

pub use eval::{run_eval, write_outputs, WrittenFiles};
pub use plan::{EvalOptions, LatencyMode};
pub use report::EvalReport;

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("tokenizing a prompt: {0}")]
    Tokenizer(String),
    #[error("starting the request reader: {0}")]
    Runtime(std::io::Error),
    #[error("requests still unfinished after {secs} s")]
    Timeout { secs: u64 },
    #[error("{what}: {source}")]
    During {
        what: String,
        source: Box<EvalError>,
    },
    #[error("engine: {0}")]
    Engine(String),
    #[error("writing {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("serializing the results: {0}")]
    Json(serde_json::Error),
    #[error("drawing a figure: {0}")]
    Plot(String),
}

impl EvalError {
    /// Says which part of the eval failed.
    pub fn during(self, what: &str) -> Self {
        EvalError::During {
            what: what.to_string(),
            source: Box::new(self),
        }
    }
}
