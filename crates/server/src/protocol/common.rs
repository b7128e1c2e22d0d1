//! Pieces shared by completions and chat.

use std::time::{SystemTime, UNIX_EPOCH};

use glimprouter_core::params::Policy;
use glimprouter_core::{Model, RoutingParams};
use glimprouter_engine::RoutingStats;
use serde::{Deserialize, Serialize};

/// The fields both generation bodies (`/v1/completions`, `/v1/chat/completions`)
/// take the same way, flattened into each.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SharedFields {
    pub model: Option<String>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<i64>,
    pub min_p: Option<f32>,
    pub seed: Option<i64>,
    pub stop: Option<serde_json::Value>,
    pub n: Option<i64>,
    pub user: Option<String>,
    pub ignore_eos: Option<bool>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    pub routing: Option<RoutingOverrides>,
    /// Most output tokens spent thinking (vLLM's `thinking_token_budget`).
    pub thinking_token_budget: Option<i64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

/// The request's `routing` extension: every field optional, merged over the
/// server's default routing.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RoutingOverrides {
    pub policy: Option<Policy>,
    pub tau: Option<f32>,
    pub random_p: Option<f32>,
    pub speculative_k: Option<usize>,
    pub delimiter: Option<String>,
    pub answer_marker: Option<String>,
    pub answer_model: Option<Model>,
    pub max_steps: Option<usize>,
    pub eager_catch_up: Option<bool>,
}

impl RoutingOverrides {
    pub fn apply(self, base: &RoutingParams) -> RoutingParams {
        let mut out = base.clone();
        if let Some(v) = self.policy {
            out.policy = v;
        }
        if let Some(v) = self.tau {
            out.tau = v;
        }
        if let Some(v) = self.random_p {
            out.random_p = v;
        }
        if let Some(v) = self.speculative_k {
            out.speculative_k = v;
        }
        if let Some(v) = self.delimiter {
            out.delimiter = v;
        }
        if let Some(v) = self.answer_marker {
            out.answer_marker = Some(v);
        }
        if let Some(v) = self.answer_model {
            out.answer_model = v;
        }
        if let Some(v) = self.max_steps {
            out.max_steps = Some(v);
        }
        if let Some(v) = self.eager_catch_up {
            out.eager_catch_up = v;
        }
        out
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct UsageOut {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub total_tokens: usize,
}

impl UsageOut {
    pub fn new(prompt_tokens: usize, completion_tokens: usize) -> Self {
        Self {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TokensByModel {
    pub slm: usize,
    pub llm: usize,
}

/// The response's `routing` object: the request's routing statistics, summed
/// over its choices.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RoutingSummary {
    pub policy: String,
    pub steps: usize,
    pub llm_steps: usize,
    /// llm_steps / steps (0 without steps).
    pub llm_step_ratio: f32,
    pub tokens_by_model: TokensByModel,
    pub draft_tokens: usize,
    pub accepted_draft_tokens: usize,
    /// accepted / drafted (null without drafts).
    pub draft_acceptance_rate: Option<f32>,
    /// H_init of every glimpse in nats, choice after choice.
    pub h_init: Vec<f32>,
}

impl RoutingSummary {
    pub fn from_stats<'a>(policy: &str, stats: impl IntoIterator<Item = &'a RoutingStats>) -> Self {
        let mut out = RoutingSummary {
            policy: policy.to_string(),
            ..Default::default()
        };
        for s in stats {
            if !s.policy.is_empty() {
                out.policy = s.policy.clone();
            }
            out.steps += s.steps;
            out.llm_steps += s.llm_steps;
            out.tokens_by_model.slm += s.slm_tokens;
            out.tokens_by_model.llm += s.llm_tokens;
            out.draft_tokens += s.draft_tokens;
            out.accepted_draft_tokens += s.accepted_draft_tokens;
            out.h_init.extend_from_slice(&s.h_init);
        }
        out.llm_step_ratio = if out.steps == 0 {
            0.0
        } else {
            out.llm_steps as f32 / out.steps as f32
        };
        out.draft_acceptance_rate = (out.draft_tokens > 0)
            .then(|| out.accepted_draft_tokens as f32 / out.draft_tokens as f32);
        out
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_replace_only_given_fields() {
        let base = RoutingParams {
            tau: 0.5,
            speculative_k: 3,
            ..RoutingParams::default()
        };
        let overrides: RoutingOverrides =
            serde_json::from_str(r#"{"policy": "step-ppl", "tau": 2.5}"#).unwrap();
        let merged = overrides.apply(&base);
        assert_eq!(merged.policy, Policy::StepPpl);
        assert_eq!(merged.tau, 2.5);
        assert_eq!(merged.speculative_k, 3);
        assert_eq!(merged.delimiter, base.delimiter);
        assert_eq!(RoutingOverrides::default().apply(&base), base);
    }

    #[test]
    fn overrides_reject_unknown_fields_and_policies() {
        assert!(serde_json::from_str::<RoutingOverrides>(r#"{"taux": 1}"#).is_err());
        assert!(serde_json::from_str::<RoutingOverrides>(r#"{"policy": "magic"}"#).is_err());
        assert!(serde_json::from_str::<RoutingOverrides>(r#"{"speculative_k": -1}"#).is_err());
    }

    #[test]
    fn summary_sums_choices() {
        let a = RoutingStats {
            policy: "glimp".into(),
            steps: 3,
            llm_steps: 1,
            llm_step_ratio: 1.0 / 3.0,
            slm_tokens: 20,
            llm_tokens: 7,
            h_init: vec![0.1, 2.0, 0.3],
            draft_tokens: 8,
            accepted_draft_tokens: 6,
        };
        let b = RoutingStats {
            steps: 1,
            llm_steps: 1,
            llm_tokens: 5,
            h_init: vec![1.5],
            ..a.clone()
        };
        let summary = RoutingSummary::from_stats("glimp", [&a, &b]);
        assert_eq!(summary.steps, 4);
        assert_eq!(summary.llm_steps, 2);
        assert_eq!(summary.llm_step_ratio, 0.5);
        assert_eq!(summary.tokens_by_model, TokensByModel { slm: 40, llm: 12 });
        assert_eq!(summary.draft_tokens, 16);
        assert_eq!(summary.draft_acceptance_rate, Some(0.75));
        assert_eq!(summary.h_init, vec![0.1, 2.0, 0.3, 1.5]);
        let empty = RoutingSummary::from_stats("slm", []);
        assert_eq!(empty.llm_step_ratio, 0.0);
        assert_eq!(empty.draft_acceptance_rate, None);
        assert_eq!(empty.policy, "slm");
    }
}
