//! The server's configuration: where to listen, request limits and tenants.

use std::collections::HashSet;

use glimprouter_core::RoutingParams;
use serde::Deserialize;

use crate::ServerError;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    pub host: String,
    pub port: u16,
    /// Larger request bodies are refused with 413.
    pub max_body_bytes: usize,
    /// After the shutdown signal, in-flight requests get this long to finish.
    pub shutdown_grace_secs: u64,
    /// No tenants = open server: every request belongs to tenant "default".
    pub tenants: Vec<TenantConfig>,
    /// Routing for requests that do not override it with `routing`; when
    /// absent, the engine's default (`EngineInfo::default_routing`).
    pub default_routing: Option<RoutingParams>,
    /// Generation requests still running after this long are aborted.
    pub request_timeout_secs: Option<u64>,
    /// Most completions one request may ask for (prompts x `n`); more get a 400.
    pub max_choices_per_request: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".to_string(),
            port: 8000,
            max_body_bytes: 4 * 1024 * 1024,
            shutdown_grace_secs: 30,
            tenants: Vec::new(),
            default_routing: None,
            request_timeout_secs: None,
            max_choices_per_request: 128,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    pub name: String,
    /// Sent by clients as `Authorization: Bearer <api_key>`.
    pub api_key: String,
    /// Share of the engine under contention (fair admission).
    #[serde(default = "default_weight")]
    pub weight: f64,
    pub requests_per_minute: Option<u32>,
    /// Prompt tokens plus requested completion tokens (`max_tokens * n`).
    pub tokens_per_minute: Option<u32>,
    pub max_concurrent: Option<usize>,
}

fn default_weight() -> f64 {
    1.0
}

impl TenantConfig {
    /// A tenant with the given key and no limits.
    pub fn new(name: impl Into<String>, api_key: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            api_key: api_key.into(),
            weight: 1.0,
            requests_per_minute: None,
            tokens_per_minute: None,
            max_concurrent: None,
        }
    }
}

impl ServerConfig {
    /// Catches configurations that would make the server misbehave later.
    pub fn validate(&self) -> Result<(), ServerError> {
        let bad = |msg: String| Err(ServerError::Config(msg));
        if self.max_body_bytes == 0 {
            return bad("max_body_bytes must be at least 1".into());
        }
        if self.max_choices_per_request == 0 {
            return bad("max_choices_per_request must be at least 1".into());
        }
        if self.request_timeout_secs == Some(0) {
            return bad("request_timeout_secs must be at least 1".into());
        }
        let mut names = HashSet::new();
        let mut keys = HashSet::new();
        for tenant in &self.tenants {
            if tenant.name.is_empty() {
                return bad("a tenant has an empty name".into());
            }
            if !names.insert(tenant.name.as_str()) {
                return bad(format!("tenant `{}` is configured twice", tenant.name));
            }
            if tenant.api_key.is_empty() {
                return bad(format!("tenant `{}` has an empty api_key", tenant.name));
            }
            if !keys.insert(tenant.api_key.as_str()) {
                return bad(format!(
                    "tenant `{}` reuses another tenant's api_key",
                    tenant.name
                ));
            }
            if !(tenant.weight.is_finite() && tenant.weight > 0.0) {
                return bad(format!(
                    "tenant `{}`: weight must be a positive number",
                    tenant.name
                ));
            }
            if tenant.requests_per_minute == Some(0)
                || tenant.tokens_per_minute == Some(0)
                || tenant.max_concurrent == Some(0)
            {
                return bad(format!(
                    "tenant `{}`: a limit of 0 would refuse every request; omit it for no limit",
                    tenant.name
                ));
            }
        }
        Ok(())
    }

    /// Tenant name -> weight, for the engine's fair admission.
    pub fn tenant_weights(&self) -> Vec<(String, f64)> {
        self.tenants
            .iter()
            .map(|t| (t.name.clone(), t.weight))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ServerConfig, serde_json::Error> {
        serde_json::from_str(text)
    }

    #[test]
    fn defaults_apply_to_missing_keys() {
        let config = parse("{}").unwrap();
        assert_eq!(config.host, "127.0.0.1");
        assert_eq!(config.port, 8000);
        assert_eq!(config.max_body_bytes, 4 << 20);
        assert_eq!(config.shutdown_grace_secs, 30);
        assert!(config.tenants.is_empty());
        assert_eq!(config.default_routing, None);
        config.validate().unwrap();
    }

    #[test]
    fn unknown_keys_are_rejected() {
        assert!(parse(r#"{"prot": 1}"#).is_err());
        assert!(parse(r#"{"tenants": [{"name": "a", "api_key": "k", "burst": 3}]}"#).is_err());
    }

    #[test]
    fn default_routing_takes_partial_tables() {
        let config = parse(r#"{"default_routing": {"policy": "llm", "tau": 0.25}}"#).unwrap();
        let routing = config.default_routing.unwrap();
        assert_eq!(routing.tau, 0.25);
        assert_eq!(routing.delimiter, RoutingParams::default().delimiter);
    }

    #[test]
    fn tenant_weight_defaults_to_one() {
        let config =
            parse(r#"{"tenants": [{"name": "a", "api_key": "k", "requests_per_minute": 5}]}"#)
                .unwrap();
        assert_eq!(config.tenants[0].weight, 1.0);
        assert_eq!(config.tenants[0].requests_per_minute, Some(5));
        assert_eq!(config.tenant_weights(), vec![("a".to_string(), 1.0)]);
    }

    #[test]
    fn duplicate_or_empty_tenants_are_rejected() {
        let mut config = ServerConfig {
            tenants: vec![TenantConfig::new("a", "k1"), TenantConfig::new("a", "k2")],
            ..ServerConfig::default()
        };
        assert!(config.validate().is_err());
        config.tenants = vec![TenantConfig::new("a", "k1"), TenantConfig::new("b", "k1")];
        assert!(config.validate().is_err());
        config.tenants = vec![TenantConfig::new("a", "")];
        assert!(config.validate().is_err());
        let mut zero = TenantConfig::new("a", "k");
        zero.requests_per_minute = Some(0);
        config.tenants = vec![zero];
        assert!(config.validate().is_err());
        let mut bad_weight = TenantConfig::new("a", "k");
        bad_weight.weight = -1.0;
        config.tenants = vec![bad_weight];
        assert!(config.validate().is_err());
        config.tenants = vec![TenantConfig::new("a", "k1"), TenantConfig::new("b", "k2")];
        config.validate().unwrap();
    }
}
