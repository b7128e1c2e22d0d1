//! What one run does: target, load shape, bounds and prompts. Plain data,
//! independent of the command line so tests can build it directly.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::LoadError;

/// Output length used when neither `--max-tokens` nor the prompt names one.
pub const DEFAULT_MAX_TOKENS: u32 = 128;
/// Request count used when neither `--requests` nor `--duration` is given,
/// so a run always has a bound.
pub const DEFAULT_REQUESTS: u64 = 100;
/// Time after which nothing more is sent when `--duration` is not given:
/// with the per-request timeout, a hard bound on how long a run takes.
pub const DEFAULT_MAX_DURATION: Duration = Duration::from_secs(3600);
/// Where `--dataset task` reads the project's reasoning-task prompts.
pub const DEFAULT_TASK_PROMPTS: &str = "benches/task_prompts.jsonl";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Endpoint {
    /// `POST /v1/completions` with a text prompt.
    Completions,
    /// `POST /v1/chat/completions` with messages.
    Chat,
}

impl Endpoint {
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Completions => "/v1/completions",
            Endpoint::Chat => "/v1/chat/completions",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum LoadMode {
    /// A fixed number of requests in flight; each finishing one starts the next.
    Closed { concurrency: usize },
    /// Requests arrive at `rate` per second with Gamma-distributed gaps
    /// (`burstiness` 1 = Poisson), independent of completions; an optional
    /// cap on requests in flight.
    Open {
        rate: f64,
        burstiness: f64,
        max_concurrency: Option<usize>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum PromptSource {
    /// JSONL: one `{"prompt": ...}` or `{"messages": [...]}` per line,
    /// optionally with `"max_tokens"`.
    File { path: PathBuf },
    /// `input_len` random words per prompt, drawn with the run's seed.
    Random { input_len: usize },
}

#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Server base URL, e.g. `http://127.0.0.1:8000` (a trailing `/v1` is accepted).
    pub base_url: String,
    pub endpoint: Endpoint,
    /// `None`: ask the server's `/v1/models` and use the first one.
    pub model: Option<String>,
    pub mode: LoadMode,
    /// Stop issuing after this many measured requests.
    pub max_requests: Option<u64>,
    /// Stop issuing after this long; requests in flight still finish
    /// (each bounded by `request_timeout`).
    pub max_duration: Option<Duration>,
    /// Forces every request's `max_tokens`; `None` keeps the prompt's own
    /// or [`DEFAULT_MAX_TOKENS`].
    pub max_tokens: Option<u32>,
    pub ignore_eos: bool,
    pub prompts: PromptSource,
    pub api_key: Option<String>,
    pub seed: u64,
    /// JSON object merged (recursively) into every request body last, so it
    /// can add extension fields or override defaults such as `temperature`.
    pub extra_body: Option<Map<String, Value>>,
    /// Requests run after the test request and before measuring; not counted.
    pub warmup_requests: u64,
    pub request_timeout: Duration,
    /// Percentiles to report, each in (0, 100].
    pub percentiles: Vec<f64>,
    /// Free-form name stored in the report (used by `table` and `compare`).
    pub label: Option<String>,
    /// Keep every successful request's timings in the report.
    pub save_detailed: bool,
    pub show_progress: bool,
}

impl LoadConfig {
    /// A closed-loop run at concurrency 1 of [`DEFAULT_REQUESTS`] requests
    /// (at most [`DEFAULT_MAX_DURATION`]) with 32-word random prompts; adjust
    /// the fields you need.
    pub fn new(base_url: impl Into<String>) -> Self {
        LoadConfig {
            base_url: base_url.into(),
            endpoint: Endpoint::Completions,
            model: None,
            mode: LoadMode::Closed { concurrency: 1 },
            max_requests: Some(DEFAULT_REQUESTS),
            max_duration: Some(DEFAULT_MAX_DURATION),
            max_tokens: None,
            ignore_eos: false,
            prompts: PromptSource::Random { input_len: 32 },
            api_key: None,
            seed: 0,
            extra_body: None,
            warmup_requests: 1,
            request_timeout: Duration::from_secs(300),
            percentiles: vec![50.0, 90.0, 99.0],
            label: None,
            save_detailed: false,
            show_progress: false,
        }
    }

    /// The endpoint URL requests are posted to.
    pub fn endpoint_url(&self) -> String {
        format!("{}{}", self.api_root(), self.endpoint.path())
    }

    /// The model list URL used when no model is given.
    pub fn models_url(&self) -> String {
        format!("{}/v1/models", self.api_root())
    }

    /// The base URL without a trailing `/` or `/v1`.
    fn api_root(&self) -> &str {
        let trimmed = self.base_url.trim_end_matches('/');
        trimmed.strip_suffix("/v1").unwrap_or(trimmed)
    }

    pub fn validate(&self) -> Result<(), LoadError> {
        let bad = |m: &str| Err(LoadError::Config(m.to_string()));
        if !(self.base_url.starts_with("http://") || self.base_url.starts_with("https://")) {
            return bad("--url must start with http:// or https://");
        }
        match &self.mode {
            LoadMode::Closed { concurrency } if *concurrency == 0 => {
                return bad("--concurrency must be at least 1")
            }
            LoadMode::Open {
                rate,
                burstiness,
                max_concurrency,
            } => {
                if rate.is_nan() || *rate <= 0.0 {
                    return bad("--rate must be positive (inf sends all at once)");
                }
                if !burstiness.is_finite() || *burstiness <= 0.0 {
                    return bad("--burstiness must be a positive number");
                }
                if *max_concurrency == Some(0) {
                    return bad("--concurrency must be at least 1");
                }
                if rate.is_infinite() && self.max_requests.is_none() {
                    return bad("--rate inf sends everything at once: give --requests");
                }
            }
            LoadMode::Closed { .. } => {}
        }
        if self.max_requests.is_none() && self.max_duration.is_none() {
            return bad("give --requests or --duration so the run ends");
        }
        if self.max_requests == Some(0) {
            return bad("--requests must be at least 1");
        }
        if let Some(d) = self.max_duration {
            if d.is_zero() {
                return bad("--duration must be positive");
            }
        }
        if self.max_tokens == Some(0) {
            return bad("--max-tokens must be at least 1");
        }
        if let PromptSource::Random { input_len: 0 } = self.prompts {
            return bad("--random-input-len must be at least 1");
        }
        if self.request_timeout.is_zero() {
            return bad("--timeout must be positive");
        }
        if self.percentiles.iter().any(|p| !(*p > 0.0 && *p <= 100.0)) {
            return bad("--percentiles must each be in (0, 100]");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_url_accepts_base_with_or_without_v1() {
        for base in [
            "http://127.0.0.1:8000",
            "http://127.0.0.1:8000/",
            "http://127.0.0.1:8000/v1",
            "http://127.0.0.1:8000/v1/",
        ] {
            let mut cfg = LoadConfig::new(base);
            assert_eq!(
                cfg.endpoint_url(),
                "http://127.0.0.1:8000/v1/completions",
                "{base}"
            );
            cfg.endpoint = Endpoint::Chat;
            assert_eq!(
                cfg.endpoint_url(),
                "http://127.0.0.1:8000/v1/chat/completions"
            );
            assert_eq!(cfg.models_url(), "http://127.0.0.1:8000/v1/models");
        }
    }

    #[test]
    fn validate_rejects_unbounded_and_nonsense() {
        let ok = LoadConfig::new("http://127.0.0.1:1");
        assert!(ok.validate().is_ok());

        let mut c = ok.clone();
        c.max_requests = None;
        c.max_duration = None;
        assert!(c.validate().is_err(), "no bound at all");
        c.max_duration = Some(Duration::from_secs(1));
        assert!(c.validate().is_ok(), "duration alone is a bound");

        let mut c = ok.clone();
        c.mode = LoadMode::Closed { concurrency: 0 };
        assert!(c.validate().is_err());

        let mut c = ok.clone();
        c.mode = LoadMode::Open {
            rate: f64::INFINITY,
            burstiness: 1.0,
            max_concurrency: None,
        };
        assert!(c.validate().is_ok(), "infinite rate is allowed");
        c.max_requests = None;
        c.max_duration = Some(Duration::from_secs(1));
        assert!(c.validate().is_err(), "infinite rate needs a request count");
        c.mode = LoadMode::Open {
            rate: 0.0,
            burstiness: 1.0,
            max_concurrency: None,
        };
        assert!(c.validate().is_err());

        let mut c = ok.clone();
        c.percentiles = vec![50.0, 101.0];
        assert!(c.validate().is_err());

        let mut c = ok;
        c.base_url = "127.0.0.1:8000".into();
        assert!(c.validate().is_err());
    }
}
