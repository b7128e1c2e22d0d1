//! Per-tenant limits: requests per minute (a GCRA limiter from `governor`), tokens
//! per minute (a token bucket, which unlike governor's limiters can take back what a
//! request did not use) and concurrent requests (a semaphore).

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::TenantConfig;

/// Which limit refused a request (the `limit` label of the metric).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    Requests,
    Tokens,
    Concurrency,
}

impl LimitKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LimitKind::Requests => "requests",
            LimitKind::Tokens => "tokens",
            LimitKind::Concurrency => "concurrency",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct LimitExceeded {
    pub kind: LimitKind,
    pub message: String,
    pub retry_after_secs: u64,
}

struct TenantLimits {
    requests: Option<(u32, DefaultDirectRateLimiter)>,
    tokens: Option<Arc<TokenBucket>>,
    concurrency: Option<(usize, Arc<Semaphore>)>,
}

pub struct Limits {
    tenants: HashMap<String, TenantLimits>,
    clock: DefaultClock,
}

fn per_minute(limit: u32) -> Option<(u32, DefaultDirectRateLimiter)> {
    NonZeroU32::new(limit).map(|n| (limit, RateLimiter::direct(Quota::per_minute(n))))
}

impl Limits {
    pub fn new(tenants: &[TenantConfig]) -> Self {
        let tenants = tenants
            .iter()
            .map(|t| {
                let limits = TenantLimits {
                    requests: t.requests_per_minute.and_then(per_minute),
                    tokens: t
                        .tokens_per_minute
                        .filter(|&n| n > 0)
                        .map(|n| Arc::new(TokenBucket::new(n))),
                    concurrency: t.max_concurrent.map(|n| (n, Arc::new(Semaphore::new(n)))),
                };
                (t.name.clone(), limits)
            })
            .collect();
        Self {
            tenants,
            clock: DefaultClock::default(),
        }
    }

    /// Counts one request against the tenant's requests-per-minute limit.
    pub fn check_request(&self, tenant: &str) -> Result<(), LimitExceeded> {
        let Some((limit, limiter)) = self.tenants.get(tenant).and_then(|t| t.requests.as_ref())
        else {
            return Ok(());
        };
        limiter.check().map_err(|not_until| LimitExceeded {
            kind: LimitKind::Requests,
            message: format!(
                "Rate limit reached: tenant `{tenant}` may send {limit} requests per minute."
            ),
            retry_after_secs: ceil_secs(not_until.wait_time_from(self.clock.now())),
        })
    }

    /// Charges `tokens` to the tenant's tokens-per-minute limit; the charge can give
    /// back what the request did not use. `None` when the tenant has no such limit.
    pub fn check_tokens(
        &self,
        tenant: &str,
        tokens: u64,
    ) -> Result<Option<TokenCharge>, LimitExceeded> {
        let Some(bucket) = self.tenants.get(tenant).and_then(|t| t.tokens.as_ref()) else {
            return Ok(None);
        };
        let limit = bucket.limit;
        if tokens > u64::from(limit) {
            return Err(LimitExceeded {
                kind: LimitKind::Tokens,
                message: format!(
                    "Request too large: it needs {tokens} tokens (prompt plus max_tokens for every choice) \
                     but tenant `{tenant}` may use {limit} tokens per minute."
                ),
                retry_after_secs: 60,
            });
        }
        match bucket.take(tokens) {
            Ok(()) => Ok(Some(TokenCharge {
                bucket: bucket.clone(),
                charged: tokens,
            })),
            Err(wait) => Err(LimitExceeded {
                kind: LimitKind::Tokens,
                message: format!(
                    "Rate limit reached: tenant `{tenant}` may use {limit} tokens per minute."
                ),
                retry_after_secs: ceil_secs(wait),
            }),
        }
    }

    /// Takes one of the tenant's concurrent-request slots, held until the
    /// permit is dropped. `None` when the tenant has no such limit.
    pub fn try_acquire(&self, tenant: &str) -> Result<Option<OwnedSemaphorePermit>, LimitExceeded> {
        let Some((limit, semaphore)) = self
            .tenants
            .get(tenant)
            .and_then(|t| t.concurrency.as_ref())
        else {
            return Ok(None);
        };
        semaphore
            .clone()
            .try_acquire_owned()
            .map(Some)
            .map_err(|_| LimitExceeded {
                kind: LimitKind::Concurrency,
                message: format!(
                    "Too many concurrent requests: tenant `{tenant}` may run {limit} at once."
                ),
                retry_after_secs: 1,
            })
    }
}

/// `limit` tokens that refill at `limit` per minute, continuously, up to `limit`.
#[derive(Debug)]
struct TokenBucket {
    limit: u32,
    /// Tokens available, as of an instant.
    state: parking_lot::Mutex<(f64, Instant)>,
}

impl TokenBucket {
    fn new(limit: u32) -> Self {
        Self {
            limit,
            state: parking_lot::Mutex::new((f64::from(limit), Instant::now())),
        }
    }

    fn per_second(&self) -> f64 {
        f64::from(self.limit) / 60.0
    }

    /// Available tokens now, refilled since the last look.
    fn refilled(&self, state: &mut (f64, Instant)) -> f64 {
        let now = Instant::now();
        let refill = now.duration_since(state.1).as_secs_f64() * self.per_second();
        *state = ((state.0 + refill).min(f64::from(self.limit)), now);
        state.0
    }

    /// Takes `n` (at most `limit`), or says how long until they are there.
    fn take(&self, n: u64) -> Result<(), Duration> {
        let mut state = self.state.lock();
        let available = self.refilled(&mut state);
        let n = n as f64;
        if n <= available {
            state.0 -= n;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((n - available) / self.per_second()))
        }
    }

    fn give_back(&self, n: u64) {
        let mut state = self.state.lock();
        self.refilled(&mut state);
        state.0 = (state.0 + n as f64).min(f64::from(self.limit));
    }
}

/// Tokens charged to a tenant for one request, until it settles.
#[derive(Debug)]
pub struct TokenCharge {
    bucket: Arc<TokenBucket>,
    charged: u64,
}

impl TokenCharge {
    /// Gives back what the request did not use of what it was charged.
    pub fn settle(self, used: u64) {
        self.bucket.give_back(self.charged.saturating_sub(used));
    }
}

fn ceil_secs(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(rpm: Option<u32>, tpm: Option<u32>, concurrent: Option<usize>) -> TenantConfig {
        TenantConfig {
            requests_per_minute: rpm,
            tokens_per_minute: tpm,
            max_concurrent: concurrent,
            ..TenantConfig::new("t", "k")
        }
    }

    #[test]
    fn request_limit_allows_the_burst_then_refuses() {
        let limits = Limits::new(&[tenant(Some(3), None, None)]);
        for _ in 0..3 {
            limits.check_request("t").unwrap();
        }
        let refused = limits.check_request("t").unwrap_err();
        assert_eq!(refused.kind, LimitKind::Requests);
        // One request every 20 s refills; the wait is at most that.
        assert!(
            (1..=20).contains(&refused.retry_after_secs),
            "{}",
            refused.retry_after_secs
        );
    }

    #[test]
    fn unknown_or_unlimited_tenants_pass() {
        let limits = Limits::new(&[tenant(None, None, None)]);
        for _ in 0..100 {
            limits.check_request("t").unwrap();
            limits.check_request("someone-else").unwrap();
            limits.check_tokens("t", 1_000_000).unwrap();
        }
        assert!(limits.try_acquire("t").unwrap().is_none());
    }

    #[test]
    fn token_limit_counts_tokens_not_requests() {
        let limits = Limits::new(&[tenant(None, Some(100), None)]);
        limits.check_tokens("t", 60).unwrap();
        limits.check_tokens("t", 40).unwrap();
        let refused = limits.check_tokens("t", 10).unwrap_err();
        assert_eq!(refused.kind, LimitKind::Tokens);
        assert!(refused.retry_after_secs >= 1);
        // Larger than the whole budget: can never pass.
        let limits = Limits::new(&[tenant(None, Some(100), None)]);
        let refused = limits.check_tokens("t", 101).unwrap_err();
        assert!(
            refused.message.starts_with("Request too large"),
            "{}",
            refused.message
        );
        assert!(limits.check_tokens("t", u64::MAX).is_err());
        limits.check_tokens("t", 100).unwrap();
    }

    #[test]
    fn tokens_a_request_did_not_use_come_back() {
        let limits = Limits::new(&[tenant(None, Some(100), None)]);
        let charge = limits
            .check_tokens("t", 60)
            .unwrap()
            .expect("a limited tenant");
        assert!(limits.check_tokens("t", 50).is_err());
        // It used 10 of its 60.
        charge.settle(10);
        limits.check_tokens("t", 90).unwrap();
        assert!(limits.check_tokens("t", 20).is_err());
    }

    #[test]
    fn concurrency_slots_come_back_when_dropped() {
        let limits = Limits::new(&[tenant(None, None, Some(2))]);
        let first = limits.try_acquire("t").unwrap();
        let second = limits.try_acquire("t").unwrap();
        assert!(first.is_some() && second.is_some());
        let refused = limits.try_acquire("t").unwrap_err();
        assert_eq!(refused.kind, LimitKind::Concurrency);
        drop(first);
        assert!(limits.try_acquire("t").unwrap().is_some());
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(ceil_secs(std::time::Duration::from_millis(1)), 1);
        assert_eq!(ceil_secs(std::time::Duration::from_millis(2001)), 3);
        assert_eq!(ceil_secs(std::time::Duration::from_secs(2)), 2);
        assert_eq!(ceil_secs(std::time::Duration::ZERO), 1);
    }
}
