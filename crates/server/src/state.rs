//! What every handler shares.

use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use glimprouter_core::RoutingParams;

use crate::auth::{Authenticator, OPEN_TENANT};
use crate::backend::Backend;
use crate::config::ServerConfig;
use crate::limits::Limits;
use crate::metrics::ServerMetrics;
use crate::ServerError;

pub struct AppState {
    pub backend: Arc<dyn Backend>,
    pub auth: Authenticator,
    pub limits: Limits,
    pub metrics: Arc<ServerMetrics>,
    /// Engine request ids in flight; a second request may not reuse one.
    pub inflight: DashMap<String, ()>,
    pub default_routing: RoutingParams,
    pub request_timeout: Option<Duration>,
    pub max_choices_per_request: usize,
}

impl AppState {
    pub fn new(backend: Arc<dyn Backend>, config: &ServerConfig) -> Result<Self, ServerError> {
        config.validate()?;
        let auth = Authenticator::new(&config.tenants);
        let tenant_names: Vec<&str> = if auth.is_open() {
            vec![OPEN_TENANT]
        } else {
            config.tenants.iter().map(|t| t.name.as_str()).collect()
        };
        let metrics =
            ServerMetrics::new(&tenant_names).map_err(|e| ServerError::Metrics(e.to_string()))?;
        Ok(Self {
            default_routing: config
                .default_routing
                .clone()
                .unwrap_or_else(|| backend.default_routing()),
            backend,
            auth,
            limits: Limits::new(&config.tenants),
            metrics: Arc::new(metrics),
            inflight: DashMap::new(),
            request_timeout: config.request_timeout_secs.map(Duration::from_secs),
            max_choices_per_request: config.max_choices_per_request,
        })
    }
}
