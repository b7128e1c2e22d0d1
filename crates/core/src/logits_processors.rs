//! The request's own changes to a model's logits before a token is drawn
//! (vLLM's logits processors and penalties), in vLLM v1's order:
//! `allowed_token_ids`, `logit_bias`, `min_tokens`, then the repetition,
//! frequency and presence penalties. Temperature, top-k, top-p and min-p come
//! after, in [`crate::sampling`].
//!
//! They apply to whichever model writes: a token the SLM drafts is drawn from
//! the SLM's processed distribution and verified against the LLM's processed
//! distribution at the same position, where the history includes the drafts
//! before it, so speculative sampling stays lossless for the modified
//! distribution. The routing signal (a glimpse's entropy) and returned
//! logprobs stay those of the raw logits, as vLLM's default logprobs are.

use std::borrow::Cow;
use std::collections::HashMap;

use crate::{SamplingParams, TokenId};

/// The tokens a position is conditioned on: the prompt, the finalised output,
/// and tokens proposed after them that are not final yet (the drafts before a
/// verified position).
#[derive(Debug, Clone, Copy, Default)]
pub struct TokenHistory<'a> {
    pub prompt: &'a [TokenId],
    pub output: &'a [TokenId],
    pub pending: &'a [TokenId],
}

impl TokenHistory<'_> {
    fn output_tokens(&self) -> impl Iterator<Item = TokenId> + '_ {
        self.output.iter().chain(self.pending).copied()
    }

    fn output_len(&self) -> usize {
        self.output.len() + self.pending.len()
    }
}

/// Whether any processor is on, i.e. [`process_logits`] may change logits.
pub fn changes_logits(params: &SamplingParams) -> bool {
    !params.allowed_token_ids.is_empty()
        || !params.logit_bias.is_empty()
        || params.min_tokens > 0
        || has_penalties(params)
}

fn has_penalties(params: &SamplingParams) -> bool {
    params.presence_penalty != 0.0
        || params.frequency_penalty != 0.0
        || params.repetition_penalty != 1.0
}

/// `logits` as the request's processors leave them, for the position after
/// `history`; borrowed unchanged when none is on. `eos` are the model's EOS ids,
/// held back by `min_tokens` unless the request ignores EOS. If holding them back
/// would leave no token at all (`allowed_token_ids` only of stop tokens), they
/// are left alone rather than sampling from nothing.
pub fn process_logits<'a>(
    logits: &'a [f32],
    params: &SamplingParams,
    eos: &[TokenId],
    history: &TokenHistory,
) -> Cow<'a, [f32]> {
    if !changes_logits(params) {
        return Cow::Borrowed(logits);
    }
    let mut out = if params.allowed_token_ids.is_empty() {
        logits.to_vec()
    } else {
        let mut masked = vec![f32::NEG_INFINITY; logits.len()];
        for &t in &params.allowed_token_ids {
            if let Some(&l) = logits.get(t as usize) {
                masked[t as usize] = l;
            }
        }
        masked
    };
    for &(t, bias) in &params.logit_bias {
        if let Some(l) = out.get_mut(t as usize) {
            *l += bias;
        }
    }
    if history.output_len() < params.min_tokens {
        hold_back_stop_tokens(&mut out, params, eos);
    }
    if has_penalties(params) {
        apply_penalties(&mut out, params, history);
    }
    Cow::Owned(out)
}

fn hold_back_stop_tokens(logits: &mut [f32], params: &SamplingParams, eos: &[TokenId]) {
    let eos = if params.ignore_eos { &[][..] } else { eos };
    let stops = || {
        eos.iter()
            .chain(&params.stop_token_ids)
            .map(|&t| t as usize)
    };
    let saved: Vec<(usize, f32)> = stops()
        .filter_map(|t| logits.get(t).map(|&l| (t, l)))
        .collect();
    for &(t, _) in &saved {
        logits[t] = f32::NEG_INFINITY;
    }
    if !logits.iter().any(|l| l.is_finite()) {
        for (t, l) in saved {
            logits[t] = l;
        }
    }
}

/// vLLM's: repetition over prompt and output, then frequency and presence over
/// the output alone.
fn apply_penalties(logits: &mut [f32], params: &SamplingParams, history: &TokenHistory) {
    let mut counts: HashMap<TokenId, u32> = HashMap::new();
    for t in history.output_tokens() {
        *counts.entry(t).or_default() += 1;
    }
    let rp = params.repetition_penalty;
    if rp != 1.0 {
        let mut seen: Vec<TokenId> = history.prompt.to_vec();
        seen.extend(counts.keys());
        seen.sort_unstable();
        seen.dedup();
        for t in seen {
            if let Some(l) = logits.get_mut(t as usize) {
                *l = if *l > 0.0 { *l / rp } else { *l * rp };
            }
        }
    }
    for (&t, &n) in &counts {
        if let Some(l) = logits.get_mut(t as usize) {
            *l -= params.frequency_penalty * n as f32 + params.presence_penalty;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> SamplingParams {
        SamplingParams::default()
    }

    fn history<'a>(prompt: &'a [TokenId], output: &'a [TokenId]) -> TokenHistory<'a> {
        TokenHistory {
            prompt,
            output,
            pending: &[],
        }
    }

    #[test]
    fn defaults_leave_the_logits_borrowed() {
        let logits = [1.0, 2.0];
        let out = process_logits(&logits, &params(), &[1], &history(&[0], &[1]));
        assert!(matches!(out, Cow::Borrowed(_)));
    }

    #[test]
    fn penalties_follow_vllm() {
        let logits = [2.0, -2.0, 3.0, 1.0];
        let p = SamplingParams {
            repetition_penalty: 2.0,
            frequency_penalty: 0.5,
            presence_penalty: 0.25,
            ..params()
        };
        // Token 0 in the prompt only; 1 twice in the output (once pending); 2 absent.
        let h = TokenHistory {
            prompt: &[0, 3],
            output: &[1],
            pending: &[1],
        };
        let out = process_logits(&logits, &p, &[], &h);
        assert_eq!(out[0], 1.0, "prompt token: repetition only");
        assert_eq!(out[1], -4.0 - 0.5 * 2.0 - 0.25, "negative logit multiplied");
        assert_eq!(out[2], 3.0, "unseen token untouched");
        assert_eq!(out[3], 0.5);
    }

    #[test]
    fn bias_allowed_ids_and_min_tokens() {
        let logits = [0.0, 1.0, 2.0, 3.0];
        let p = SamplingParams {
            logit_bias: vec![(0, 10.0), (9, 1.0)],
            allowed_token_ids: vec![0, 2, 3],
            min_tokens: 2,
            stop_token_ids: vec![2],
            ..params()
        };
        let out = process_logits(&logits, &p, &[3], &history(&[], &[5]));
        assert_eq!(
            &*out,
            &[
                10.0,
                f32::NEG_INFINITY,
                f32::NEG_INFINITY,
                f32::NEG_INFINITY
            ]
        );
        // Once min_tokens are out, EOS and stop ids are back.
        let out = process_logits(&logits, &p, &[3], &history(&[], &[5, 5]));
        assert_eq!(&*out, &[10.0, f32::NEG_INFINITY, 2.0, 3.0]);
        // ignore_eos: EOS is not a stop token to hold back.
        let p = SamplingParams {
            ignore_eos: true,
            ..p
        };
        let out = process_logits(&logits, &p, &[3], &history(&[], &[5]));
        assert_eq!(out[3], 3.0);
    }

    #[test]
    fn min_tokens_never_masks_every_token() {
        let p = SamplingParams {
            allowed_token_ids: vec![1],
            min_tokens: 5,
            ..params()
        };
        let out = process_logits(&[0.5, 0.25], &p, &[1], &history(&[], &[]));
        assert_eq!(&*out, &[f32::NEG_INFINITY, 0.25]);
    }
}
