//! The server's own Prometheus metrics and the `/metrics` endpoint, which
//! exports them together with the engine's.

use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus::{Encoder, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};

use crate::state::AppState;

pub struct ServerMetrics {
    registry: Registry,
    http_requests: IntCounterVec,
    rate_limited: IntCounterVec,
    tenant_running: IntGaugeVec,
    refused: IntCounterVec,
}

impl ServerMetrics {
    /// `tenants`: the label values of the per-tenant metrics, created up front
    /// so every tenant shows (at zero) from the first scrape.
    pub fn new(tenants: &[&str]) -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let http_requests = IntCounterVec::new(
            Opts::new(
                "glimp:http_requests_total",
                "HTTP requests by endpoint and status code.",
            ),
            &["endpoint", "status"],
        )?;
        let rate_limited = IntCounterVec::new(
            Opts::new(
                "glimp:rate_limited_requests_total",
                "Requests refused with 429, by tenant and limit.",
            ),
            &["tenant", "limit"],
        )?;
        let refused = IntCounterVec::new(
            Opts::new(
                "glimp:requests_refused_total",
                "Requests refused to bound the work: 503 queue_full (the engine holds \
                 max_num_seqs + max_waiting_requests), 400 too_many_choices (prompts x n \
                 above max_choices_per_request).",
            ),
            &["reason"],
        )?;
        let tenant_running = IntGaugeVec::new(
            Opts::new(
                "glimp:tenant_requests_running",
                "Generation requests in flight, by tenant.",
            ),
            &["tenant"],
        )?;
        registry.register(Box::new(http_requests.clone()))?;
        registry.register(Box::new(rate_limited.clone()))?;
        registry.register(Box::new(tenant_running.clone()))?;
        registry.register(Box::new(refused.clone()))?;
        for reason in ["queue_full", "too_many_choices"] {
            refused.with_label_values(&[reason]);
        }
        for tenant in tenants {
            tenant_running.with_label_values(&[*tenant]);
        }
        Ok(Self {
            registry,
            http_requests,
            rate_limited,
            tenant_running,
            refused,
        })
    }

    pub fn record_rate_limited(&self, tenant: &str, limit: &str) {
        self.rate_limited.with_label_values(&[tenant, limit]).inc();
    }

    /// Counts a request refused to bound the work (`reason`: see the metric's help).
    pub fn record_refused(&self, reason: &str) {
        self.refused.with_label_values(&[reason]).inc();
    }

    /// Counts a request as running for `tenant` until the guard is dropped.
    pub fn running(self: &Arc<Self>, tenant: &str) -> RunningGuard {
        let gauge = self.tenant_running.with_label_values(&[tenant]);
        gauge.inc();
        RunningGuard { gauge }
    }

    pub fn gather(&self) -> Vec<prometheus::proto::MetricFamily> {
        self.registry.gather()
    }
}

pub struct RunningGuard {
    gauge: prometheus::IntGauge,
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// Middleware counting every response by route template and status.
pub async fn count_requests(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    // The route template, never the raw path: the label stays bounded.
    let endpoint = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let response = next.run(request).await;
    state
        .metrics
        .http_requests
        .with_label_values(&[&endpoint, response.status().as_str()])
        .inc();
    response
}

/// `GET /metrics`: the engine's and the server's metrics in Prometheus text format.
pub async fn metrics_handler(State(state): State<Arc<AppState>>) -> Response {
    let mut families = state.backend.gather_metrics();
    families.extend(state.metrics.gather());
    let encoder = TextEncoder::new();
    let mut body = Vec::new();
    match encoder.encode(&families, &mut body) {
        Ok(()) => (
            [(header::CONTENT_TYPE, encoder.format_type().to_string())],
            body,
        )
            .into_response(),
        Err(error) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding metrics failed: {error}"),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(metrics: &ServerMetrics) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&metrics.gather(), &mut out)
            .unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn running_gauge_follows_guards() {
        let metrics = Arc::new(ServerMetrics::new(&["a", "b"]).unwrap());
        assert!(text(&metrics).contains("glimp:tenant_requests_running{tenant=\"b\"} 0"));
        let first = metrics.running("a");
        let second = metrics.running("a");
        assert!(text(&metrics).contains("glimp:tenant_requests_running{tenant=\"a\"} 2"));
        drop(first);
        drop(second);
        assert!(text(&metrics).contains("glimp:tenant_requests_running{tenant=\"a\"} 0"));
    }

    #[test]
    fn rate_limited_counter_has_tenant_and_limit() {
        let metrics = ServerMetrics::new(&["a"]).unwrap();
        metrics.record_rate_limited("a", "tokens");
        assert!(text(&metrics)
            .contains("glimp:rate_limited_requests_total{limit=\"tokens\",tenant=\"a\"} 1"));
    }
}
