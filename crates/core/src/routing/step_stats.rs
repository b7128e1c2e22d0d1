//! Statistics of one SLM step, accumulated token by token, for the policies
//! that judge a step after it is written.

/// Statistics of one step written by the SLM, accumulated token by token, for
/// the policies that judge a step after it is written.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepStats {
    tokens: usize,
    entropy_sum: f64,
    logprob_sum: f64,
    judged_tokens: usize,
    judge_logprob_sum: f64,
}

impl StepStats {
    pub fn new() -> Self {
        Self::default()
    }

    /// One SLM token: the entropy of the SLM's raw distribution at that
    /// position and the SLM's raw log-probability of the token it sampled.
    pub fn push_token(&mut self, entropy: f32, logprob: f32) {
        self.tokens += 1;
        self.entropy_sum += f64::from(entropy);
        self.logprob_sum += f64::from(logprob);
    }

    /// The judge's (LLM's) raw log-probability of one of the step's tokens,
    /// from its prefill pass over the step (`specreason`).
    pub fn push_judge_logprob(&mut self, logprob: f32) {
        self.judged_tokens += 1;
        self.judge_logprob_sum += f64::from(logprob);
    }

    /// SLM tokens pushed.
    pub fn tokens(&self) -> usize {
        self.tokens
    }

    /// Mean per-token entropy of the SLM (nats); `None` for an empty step.
    pub fn mean_entropy(&self) -> Option<f32> {
        (self.tokens > 0).then(|| (self.entropy_sum / self.tokens as f64) as f32)
    }

    /// The SLM's perplexity of its own step, `exp(-mean logprob)`.
    pub fn perplexity(&self) -> Option<f32> {
        (self.tokens > 0).then(|| (-self.logprob_sum / self.tokens as f64).exp() as f32)
    }

    /// The likelihood judge's score on SpecReason's 0-9 scale:
    /// `9 * exp(mean judge logprob)`, i.e. 9 times the geometric mean of the
    /// LLM's probabilities of the step's tokens.
    pub fn judge_score(&self) -> Option<f32> {
        (self.judged_tokens > 0)
            .then(|| (9.0 * (self.judge_logprob_sum / self.judged_tokens as f64).exp()) as f32)
    }

    /// Forgets everything, for the next step.
    pub fn reset(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_stats_means() {
        let mut s = StepStats::new();
        assert_eq!(
            (s.mean_entropy(), s.perplexity(), s.judge_score()),
            (None, None, None)
        );
        s.push_token(1.0, -1.0);
        s.push_token(3.0, -3.0);
        assert_eq!(s.tokens(), 2);
        assert!((s.mean_entropy().unwrap_or(f32::NAN) - 2.0).abs() < 1e-6);
        assert!((s.perplexity().unwrap_or(f32::NAN) - 2f32.exp()).abs() < 1e-5);
        s.push_judge_logprob(0.0);
        s.push_judge_logprob(-2f32.ln() * 2.0);
        // Geometric mean of probabilities 1 and 1/4 is 1/2.
        assert!((s.judge_score().unwrap_or(f32::NAN) - 4.5).abs() < 1e-5);
        s.reset();
        assert_eq!(s, StepStats::default());
    }
}
