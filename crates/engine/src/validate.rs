//! Every rule about a request, in one place. The server's handlers, `glimp generate`,
//! `glimp eval` (through [`crate::EngineHandle::submit`]) and config loading (the
//! routing defaults, in `EngineConfig::validate`) all check with these functions, so a
//! config the engine starts with never makes every request fail.
//!
//! What is left elsewhere is what only one caller can know: the shape of the JSON
//! (the server's `params.rs`), and whether a request id is in flight (the engine
//! thread's registry).

use glimprouter_core::routing::StepJudge;
use glimprouter_core::{RoutingParams, SamplingParams, TokenId};

use crate::api::{EngineError, GenerateRequest};

/// Most alternatives per token a request may ask for (vLLM's default cap).
pub const MAX_LOGPROBS: usize = 20;
/// Most stop strings per request.
pub const MAX_STOP_STRINGS: usize = 16;
/// Most draft tokens per speculation round.
pub const MAX_SPECULATIVE_K: usize = 16;

/// A rule a request (or the config's defaults) breaks: the parameter, in the API's
/// spelling, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct Invalid {
    pub param: &'static str,
    pub message: String,
}

fn invalid(param: &'static str, message: impl Into<String>) -> Invalid {
    Invalid {
        param,
        message: message.into(),
    }
}

/// The facts about the served models a request is checked against.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Prompt plus `max_tokens` must fit.
    pub max_model_len: usize,
    /// Every prompt token id must be below it.
    pub vocab_size: usize,
    /// Which models (by `Model::idx`) a remote engine serves.
    pub remote: [bool; 2],
}

/// A whole request: prompt, sampling, routing, and what the tiers can do.
pub fn check_request(request: &GenerateRequest, limits: &Limits) -> Result<(), EngineError> {
    check_prompt(&request.prompt_ids, limits.vocab_size)?;
    check_sampling(&request.sampling)?;
    if request.sampling.max_tokens == 0 {
        return Err(invalid("max_tokens", "`max_tokens` must be at least 1, got 0.").into());
    }
    check_token_fields(&request.sampling, limits.vocab_size)?;
    check_routing(&request.routing, limits.remote)?;
    if limits.remote.contains(&true) {
        check_sampling_with_remote(&request.sampling)?;
    }
    check_length(
        request.prompt_ids.len(),
        request.sampling.max_tokens,
        limits.max_model_len,
    )
}

/// At least one token, every one in the vocabulary. Names no parameter: the prompt is
/// `prompt` or `messages` depending on the endpoint.
pub fn check_prompt(ids: &[TokenId], vocab_size: usize) -> Result<(), EngineError> {
    if ids.is_empty() {
        return Err(EngineError::InvalidRequest(
            "the prompt must contain at least one token".into(),
        ));
    }
    if let Some(id) = ids.iter().find(|&&id| id as usize >= vocab_size) {
        return Err(EngineError::InvalidRequest(format!(
            "token id {id} is out of the vocabulary (size {vocab_size})"
        )));
    }
    Ok(())
}

/// OpenAI's upper bound (vLLM has none): hotter than this the output is noise.
pub const MAX_TEMPERATURE: f32 = 2.0;

/// Sampling values in the ranges vLLM accepts (and `temperature` in OpenAI's) (`max_tokens`, which callers may fill in
/// from the prompt's length, is `check_request`'s).
pub fn check_sampling(s: &SamplingParams) -> Result<(), Invalid> {
    if !(s.temperature.is_finite() && (0.0..=MAX_TEMPERATURE).contains(&s.temperature)) {
        return Err(invalid(
            "temperature",
            format!(
                "`temperature` must be in [0, {MAX_TEMPERATURE}], got {}.",
                s.temperature
            ),
        ));
    }
    if !(s.top_p > 0.0 && s.top_p <= 1.0) {
        return Err(invalid(
            "top_p",
            format!("`top_p` must be in (0, 1], got {}.", s.top_p),
        ));
    }
    if !(0.0..=1.0).contains(&s.min_p) {
        return Err(invalid(
            "min_p",
            format!("`min_p` must be in [0, 1], got {}.", s.min_p),
        ));
    }
    if let Some(l) = s.logprobs.filter(|&l| l > MAX_LOGPROBS) {
        return Err(invalid(
            "logprobs",
            format!("`logprobs` must be in [0, {MAX_LOGPROBS}], got {l}."),
        ));
    }
    if s.stop.len() > MAX_STOP_STRINGS {
        return Err(invalid(
            "stop",
            format!(
                "`stop` takes at most {MAX_STOP_STRINGS} strings, got {}.",
                s.stop.len()
            ),
        ));
    }
    if s.stop.iter().any(String::is_empty) {
        return Err(invalid("stop", "`stop` strings must not be empty."));
    }
    for (param, value) in [
        ("presence_penalty", s.presence_penalty),
        ("frequency_penalty", s.frequency_penalty),
    ] {
        if !(-2.0..=2.0).contains(&value) {
            return Err(invalid(
                param,
                format!("`{param}` must be in [-2, 2], got {value}."),
            ));
        }
    }
    if !(s.repetition_penalty.is_finite() && s.repetition_penalty > 0.0) {
        return Err(invalid(
            "repetition_penalty",
            format!(
                "`repetition_penalty` must be a number above 0, got {}.",
                s.repetition_penalty
            ),
        ));
    }
    if let Some(&(token, bias)) = s
        .logit_bias
        .iter()
        .find(|(_, b)| !(-100.0..=100.0).contains(b))
    {
        return Err(invalid(
            "logit_bias",
            format!("`logit_bias` values must be in [-100, 100], got {bias} for token {token}."),
        ));
    }
    Ok(())
}

/// The token ids a request names (`logit_bias`, `allowed_token_ids`,
/// `stop_token_ids`) in the vocabulary, and `min_tokens` within `max_tokens`.
pub fn check_token_fields(s: &SamplingParams, vocab_size: usize) -> Result<(), Invalid> {
    check_token_ids(s, vocab_size)?;
    if s.min_tokens > s.max_tokens {
        return Err(invalid(
            "min_tokens",
            format!(
                "`min_tokens` ({}) must be at most `max_tokens` ({}).",
                s.min_tokens, s.max_tokens
            ),
        ));
    }
    Ok(())
}

/// The token ids a request names (`logit_bias`, `allowed_token_ids`,
/// `stop_token_ids`) in the vocabulary.
pub fn check_token_ids(s: &SamplingParams, vocab_size: usize) -> Result<(), Invalid> {
    let fields: [(&'static str, Vec<TokenId>); 3] = [
        ("logit_bias", s.logit_bias.iter().map(|&(t, _)| t).collect()),
        ("allowed_token_ids", s.allowed_token_ids.clone()),
        ("stop_token_ids", s.stop_token_ids.clone()),
    ];
    for (param, ids) in fields {
        if let Some(id) = ids.iter().find(|&&id| id as usize >= vocab_size) {
            return Err(invalid(
                param,
                format!(
                    "`{param}` holds token id {id}, out of the vocabulary (size {vocab_size})."
                ),
            ));
        }
    }
    Ok(())
}

/// Routing values in range, and possible with the tiers that are remote.
pub fn check_routing(routing: &RoutingParams, remote: [bool; 2]) -> Result<(), Invalid> {
    check_routing_values(routing)?;
    check_routing_with_remote(routing, remote)
}

/// Routing values in range, whatever the tiers.
pub fn check_routing_values(routing: &RoutingParams) -> Result<(), Invalid> {
    if routing.tau.is_nan() {
        return Err(invalid("routing.tau", "`routing.tau` must be a number."));
    }
    if !(0.0..=1.0).contains(&routing.random_p) {
        return Err(invalid(
            "routing.random_p",
            format!(
                "`routing.random_p` must be in [0, 1], got {}.",
                routing.random_p
            ),
        ));
    }
    if routing.speculative_k > MAX_SPECULATIVE_K {
        return Err(invalid(
            "routing.speculative_k",
            format!(
                "`routing.speculative_k` must be at most {MAX_SPECULATIVE_K}, got {}.",
                routing.speculative_k
            ),
        ));
    }
    if routing.delimiter.is_empty() {
        return Err(invalid(
            "routing.delimiter",
            "`routing.delimiter` must not be empty.",
        ));
    }
    if routing.answer_marker.as_deref() == Some("") {
        return Err(invalid(
            "routing.answer_marker",
            "`routing.answer_marker` must not be empty (leave it out for a model with no answer marker).",
        ));
    }
    if routing.max_steps == Some(0) {
        return Err(invalid(
            "routing.max_steps",
            "`routing.max_steps` must be at least 1.",
        ));
    }
    if routing.thinking_token_budget.is_some() && routing.answer_marker.is_none() {
        return Err(invalid(
            "thinking_token_budget",
            "`thinking_token_budget` needs an end of thinking: `routing.answer_marker`, or a reasoning parser in the server's config.",
        ));
    }
    Ok(())
}

/// What remote tiers cannot do. Speculation needs both models' distributions
/// at every drafted position. SpecReason's judge needs the LLM's
/// log-probabilities of the SLM's step; the step-entropy / step-ppl judges
/// need the SLM's full distribution at every token of its step. A remote
/// only returns sampled text (and, for the SLM's glimpse, top-k logprobs).
pub fn check_routing_with_remote(
    routing: &RoutingParams,
    remote: [bool; 2],
) -> Result<(), Invalid> {
    let [slm_remote, llm_remote] = remote;
    if (slm_remote || llm_remote) && routing.speculative_k > 0 {
        return Err(invalid(
            "routing.speculative_k",
            "speculative decoding needs both models local; with a remote tier set speculative_k = 0.",
        ));
    }
    if llm_remote && routing.policy.rules().step_judge() == StepJudge::LlmScore {
        return Err(invalid(
            "routing.policy",
            "the specreason policy scores steps with the LLM's log-probabilities, which needs the LLM local.",
        ));
    }
    if slm_remote && routing.policy.rules().judges_after_step() {
        return Err(invalid(
            "routing.policy",
            format!(
                "the {} policy judges the SLM's steps token by token, which needs the SLM local.",
                routing.policy.as_str()
            ),
        ));
    }
    Ok(())
}

/// What a remote tier cannot do: it returns sampled text, not logits, so neither
/// logprobs nor this request's changes to the logits can be applied to its tokens.
pub fn check_sampling_with_remote(s: &SamplingParams) -> Result<(), Invalid> {
    if s.logprobs.is_some() {
        return Err(invalid(
            "logprobs",
            "logprobs are not available while a model tier is remote.",
        ));
    }
    let on = [
        ("presence_penalty", s.presence_penalty != 0.0),
        ("frequency_penalty", s.frequency_penalty != 0.0),
        ("repetition_penalty", s.repetition_penalty != 1.0),
        ("logit_bias", !s.logit_bias.is_empty()),
        ("allowed_token_ids", !s.allowed_token_ids.is_empty()),
        ("min_tokens", s.min_tokens > 0),
        ("stop_token_ids", !s.stop_token_ids.is_empty()),
    ];
    if let Some((param, _)) = on.iter().find(|(_, on)| *on) {
        return Err(invalid(
            param,
            format!("`{param}` is not available while a model tier is remote: its tokens are sampled there."),
        ));
    }
    Ok(())
}

/// A prompt that leaves room for `max_tokens` in the context (vLLM's wording on
/// overflow).
pub fn check_length(
    prompt_tokens: usize,
    max_tokens: usize,
    max_model_len: usize,
) -> Result<(), EngineError> {
    let requested = prompt_tokens.saturating_add(max_tokens);
    if requested > max_model_len {
        return Err(EngineError::ContextLength {
            max_model_len,
            prompt_tokens,
            max_tokens,
            requested,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> GenerateRequest {
        GenerateRequest {
            request_id: "r".into(),
            tenant: "t".into(),
            prompt_ids: vec![1, 2, 3],
            sampling: SamplingParams {
                max_tokens: 4,
                ..SamplingParams::default()
            },
            routing: RoutingParams::default(),
            arrival: std::time::Instant::now(),
        }
    }

    const LIMITS: Limits = Limits {
        max_model_len: 10,
        vocab_size: 5,
        remote: [false, false],
    };

    /// The parameter the first broken rule names ("prompt" for the prompt's rules).
    fn param_of(r: &GenerateRequest, limits: &Limits) -> String {
        if let Err(e) = check_prompt(&r.prompt_ids, limits.vocab_size) {
            assert!(matches!(e, EngineError::InvalidRequest(_)));
            assert!(check_request(r, limits).is_err());
            return "prompt".into();
        }
        let first = check_sampling(&r.sampling)
            .and_then(|()| check_token_fields(&r.sampling, limits.vocab_size))
            .and_then(|()| check_routing(&r.routing, limits.remote))
            .err();
        let refused = check_request(r, limits);
        match (first, refused) {
            (Some(e), Err(EngineError::InvalidRequest(m))) => {
                assert_eq!(m, e.message);
                e.param.to_string()
            }
            (None, Err(EngineError::InvalidRequest(m))) if m.contains("max_tokens") => {
                "max_tokens".into()
            }
            (None, Err(EngineError::InvalidRequest(m))) if m.contains("logprobs") => {
                "logprobs".into()
            }
            (_, other) => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn a_plain_request_passes() {
        assert_eq!(check_request(&request(), &LIMITS), Ok(()));
    }

    #[test]
    fn a_remote_tier_refuses_what_would_change_its_logits() {
        type Set = Box<dyn Fn(&mut SamplingParams)>;
        let cases: Vec<(&str, Set)> = vec![
            ("logprobs", Box::new(|s| s.logprobs = Some(0))),
            ("presence_penalty", Box::new(|s| s.presence_penalty = 1.0)),
            (
                "repetition_penalty",
                Box::new(|s| s.repetition_penalty = 1.1),
            ),
            ("logit_bias", Box::new(|s| s.logit_bias = vec![(1, 1.0)])),
            ("min_tokens", Box::new(|s| s.min_tokens = 1)),
            ("stop_token_ids", Box::new(|s| s.stop_token_ids = vec![1])),
        ];
        let remote = Limits {
            remote: [false, true],
            ..LIMITS
        };
        for (param, set) in cases {
            let mut r = request();
            set(&mut r.sampling);
            assert_eq!(
                check_request(&r, &LIMITS),
                Ok(()),
                "{param} is fine locally"
            );
            let err = check_sampling_with_remote(&r.sampling).unwrap_err();
            assert_eq!(err.param, param);
            assert!(check_request(&r, &remote).is_err());
        }
        assert_eq!(
            check_sampling_with_remote(&SamplingParams::default()),
            Ok(())
        );
    }

    #[test]
    fn each_rule_names_its_parameter() {
        type Break = Box<dyn Fn(&mut GenerateRequest)>;
        let cases: Vec<(&str, Break)> = vec![
            ("prompt", Box::new(|r| r.prompt_ids.clear())),
            ("prompt", Box::new(|r| r.prompt_ids.push(5))),
            (
                "temperature",
                Box::new(|r| r.sampling.temperature = f32::NAN),
            ),
            ("temperature", Box::new(|r| r.sampling.temperature = -0.5)),
            ("temperature", Box::new(|r| r.sampling.temperature = 2.5)),
            ("top_p", Box::new(|r| r.sampling.top_p = 0.0)),
            ("min_p", Box::new(|r| r.sampling.min_p = 1.5)),
            ("max_tokens", Box::new(|r| r.sampling.max_tokens = 0)),
            ("logprobs", Box::new(|r| r.sampling.logprobs = Some(21))),
            ("stop", Box::new(|r| r.sampling.stop = vec![String::new()])),
            ("stop", Box::new(|r| r.sampling.stop = vec!["x".into(); 17])),
            (
                "presence_penalty",
                Box::new(|r| r.sampling.presence_penalty = 2.5),
            ),
            (
                "frequency_penalty",
                Box::new(|r| r.sampling.frequency_penalty = f32::NAN),
            ),
            (
                "repetition_penalty",
                Box::new(|r| r.sampling.repetition_penalty = 0.0),
            ),
            (
                "logit_bias",
                Box::new(|r| r.sampling.logit_bias = vec![(1, 100.5)]),
            ),
            (
                "logit_bias",
                Box::new(|r| r.sampling.logit_bias = vec![(5, 1.0)]),
            ),
            (
                "allowed_token_ids",
                Box::new(|r| r.sampling.allowed_token_ids = vec![0, 7]),
            ),
            (
                "stop_token_ids",
                Box::new(|r| r.sampling.stop_token_ids = vec![5]),
            ),
            ("min_tokens", Box::new(|r| r.sampling.min_tokens = 5)),
            ("routing.tau", Box::new(|r| r.routing.tau = f32::NAN)),
            ("routing.random_p", Box::new(|r| r.routing.random_p = 2.0)),
            (
                "routing.speculative_k",
                Box::new(|r| r.routing.speculative_k = 17),
            ),
            (
                "routing.delimiter",
                Box::new(|r| r.routing.delimiter.clear()),
            ),
            (
                "routing.answer_marker",
                Box::new(|r| r.routing.answer_marker = Some(String::new())),
            ),
            (
                "routing.max_steps",
                Box::new(|r| r.routing.max_steps = Some(0)),
            ),
        ];
        for (param, break_it) in cases {
            let mut r = request();
            break_it(&mut r);
            assert_eq!(param_of(&r, &LIMITS), param);
        }
    }

    #[test]
    fn remote_tiers_refuse_what_they_cannot_do() {
        let mut r = request();
        r.routing.speculative_k = 2;
        let remote_llm = Limits {
            remote: [false, true],
            ..LIMITS
        };
        assert_eq!(param_of(&r, &remote_llm), "routing.speculative_k");
        let mut r = request();
        r.routing.speculative_k = 0;
        r.sampling.logprobs = Some(1);
        assert_eq!(param_of(&r, &remote_llm), "logprobs");
    }

    #[test]
    fn the_context_bound_is_exact() {
        let mut r = request();
        r.sampling.max_tokens = 7; // 3 + 7 = 10 fits exactly
        assert_eq!(check_request(&r, &LIMITS), Ok(()));
        r.sampling.max_tokens = 8;
        assert!(matches!(
            check_request(&r, &LIMITS),
            Err(EngineError::ContextLength { requested: 11, .. })
        ));
        r.sampling.max_tokens = usize::MAX;
        assert!(matches!(
            check_request(&r, &LIMITS),
            Err(EngineError::ContextLength { .. })
        ));
    }
}
