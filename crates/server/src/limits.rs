//! Per-tenant limits: requests per minute, tokens per minute (both GCRA
//! limiters from `governor`) and concurrent requests (a semaphore).

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;

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
    tokens: Option<(u32, DefaultDirectRateLimiter)>,
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
                    tokens: t.tokens_per_minute.and_then(per_minute),
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

    /// Counts `tokens` against the tenant's tokens-per-minute limit.
    pub fn check_tokens(&self, tenant: &str, tokens: u64) -> Result<(), LimitExceeded> {
        let Some((limit, limiter)) = self.tenants.get(tenant).and_then(|t| t.tokens.as_ref())
        else {
            return Ok(());
        };
        let too_large = || {
            LimitExceeded {
            kind: LimitKind::Tokens,
            message: format!(
                "Request too large: it needs {tokens} tokens (prompt plus max_tokens for every choice) \
                 but tenant `{tenant}` may use {limit} tokens per minute."
            ),
            retry_after_secs: 60,
        }
        };
        let Some(n) = u32::try_from(tokens).ok().and_then(NonZeroU32::new) else {
            return if tokens == 0 {
                Ok(())
            } else {
                Err(too_large())
            };
        };
        match limiter.check_n(n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(LimitExceeded {
                kind: LimitKind::Tokens,
                message: format!(
                    "Rate limit reached: tenant `{tenant}` may use {limit} tokens per minute."
                ),
                retry_after_secs: ceil_secs(not_until.wait_time_from(self.clock.now())),
            }),
            Err(_) => Err(too_large()),
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

fn ceil_secs(wait: std::time::Duration) -> u64 {
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
