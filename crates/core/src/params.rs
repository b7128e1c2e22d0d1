//! Per-request parameters: how to sample and how to route.

use serde::{Deserialize, Serialize};

use crate::{Model, TokenId};

/// How tokens are drawn from a model's logits. Defaults match OpenAI/vLLM.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SamplingParams {
    /// 0 = greedy (argmax).
    pub temperature: f32,
    /// Nucleus sampling; 1.0 = off.
    pub top_p: f32,
    /// Keep the k most likely tokens; 0 = off.
    pub top_k: usize,
    /// Drop tokens whose probability is below `min_p * p_max`; 0 = off.
    pub min_p: f32,
    /// Per-request RNG seed: the same seed gives the same output, alone or batched.
    pub seed: Option<u64>,
    pub max_tokens: usize,
    /// Generation stops when the text contains one of these (not included).
    pub stop: Vec<String>,
    /// Keep generating past the model's EOS tokens.
    pub ignore_eos: bool,
    /// Return the log-probability of each sampled token and this many alternatives.
    pub logprobs: Option<usize>,
    /// Subtracted once from the logit of every token the output holds (OpenAI's and
    /// vLLM's `presence_penalty`); 0 = off.
    pub presence_penalty: f32,
    /// Subtracted from a token's logit per occurrence in the output; 0 = off.
    pub frequency_penalty: f32,
    /// vLLM's `repetition_penalty`: the logit of every token in the prompt or the
    /// output is divided by it when positive, multiplied by it when not; 1 = off.
    pub repetition_penalty: f32,
    /// Added to a token's logit before anything else (`logit_bias`), by token id.
    pub logit_bias: Vec<(TokenId, f32)>,
    /// Only these tokens may be sampled (vLLM's `allowed_token_ids`); empty = all.
    pub allowed_token_ids: Vec<TokenId>,
    /// Before this many output tokens, EOS (unless `ignore_eos`) and `stop_token_ids`
    /// cannot be sampled and stop strings do not match (vLLM's `min_tokens`).
    pub min_tokens: usize,
    /// Generation stops after any of these tokens, which stays in the output's
    /// token ids but not in its text, as EOS does (vLLM's `stop_token_ids`).
    pub stop_token_ids: Vec<TokenId>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            min_p: 0.0,
            seed: None,
            max_tokens: 16,
            stop: Vec::new(),
            ignore_eos: false,
            logprobs: None,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            repetition_penalty: 1.0,
            logit_bias: Vec::new(),
            allowed_token_ids: Vec::new(),
            min_tokens: 0,
            stop_token_ids: Vec::new(),
        }
    }
}

impl SamplingParams {
    pub fn greedy(max_tokens: usize) -> Self {
        Self {
            temperature: 0.0,
            max_tokens,
            ..Self::default()
        }
    }

    pub fn is_greedy(&self) -> bool {
        self.temperature <= 0.0 || self.top_k == 1
    }
}

/// Which model writes a step: the name requests and configs use for a
/// policy; its behaviour is [`Policy::rules`] (`crate::routing`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    /// GlimpRouter: the LLM writes the step when the SLM's first-token entropy > tau.
    Glimp,
    /// GlimpRouter with the first step (the plan) written by the LLM.
    GlimpLlmFirst,
    /// Every step by the SLM.
    Slm,
    /// Every step by the LLM.
    Llm,
    /// The LLM writes a step with probability `random_p`.
    Random,
    /// The SLM writes the step; if its mean token entropy > tau the LLM rewrites it.
    StepEntropy,
    /// The SLM writes the step; if its perplexity > tau the LLM rewrites it.
    StepPpl,
    /// The SLM writes the step; the LLM scores it by its own mean token
    /// log-probability; if the score (as a 0-9 scale) is below tau the LLM rewrites it.
    Specreason,
}

impl Policy {
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::Glimp => "glimp",
            Policy::GlimpLlmFirst => "glimp-llm-first",
            Policy::Slm => "slm",
            Policy::Llm => "llm",
            Policy::Random => "random",
            Policy::StepEntropy => "step-entropy",
            Policy::StepPpl => "step-ppl",
            Policy::Specreason => "specreason",
        }
    }
}

/// How a request's steps are routed between the two models.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoutingParams {
    pub policy: Policy,
    /// Threshold of the policy (nats for glimp / step-entropy, perplexity for
    /// step-ppl, 0-9 score for specreason).
    pub tau: f32,
    /// Probability that `random` sends a step to the LLM.
    pub random_p: f32,
    /// Draft tokens per LLM verify (0 = no speculative decoding).
    pub speculative_k: usize,
    /// Step delimiter, detected on the decoded text.
    pub delimiter: String,
    /// End-of-reasoning marker; after it the answer phase begins.
    pub answer_marker: Option<String>,
    /// Which model writes the answer after the marker.
    pub answer_model: Model,
    /// Most reasoning steps before the answer is forced (None = unlimited).
    pub max_steps: Option<usize>,
    /// Most output tokens spent reasoning (vLLM's `thinking_token_budget`):
    /// past it the engine writes the answer marker (the end of the thinking
    /// block) itself and the answer model answers. None = unlimited.
    pub thinking_token_budget: Option<usize>,
    /// Whether a local LLM catches up on the SLM's tokens beside every
    /// glimpse (glimp, random), so a step routed to it starts at once, or
    /// only when a step or the answer is handed to it. Eager pays an LLM
    /// prefill of every SLM-written token; lazy pays only for the tokens
    /// before the LLM's last step, at the price of one extra iteration
    /// before each LLM step starts.
    pub eager_catch_up: bool,
}

impl Default for RoutingParams {
    fn default() -> Self {
        Self {
            policy: Policy::Glimp,
            tau: 1.0,
            random_p: 0.5,
            speculative_k: 0,
            delimiter: "\n\n".to_string(),
            answer_marker: None,
            answer_model: Model::Llm,
            max_steps: None,
            thinking_token_budget: None,
            eager_catch_up: true,
        }
    }
}
