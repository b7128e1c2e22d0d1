//! API keys: `Authorization: Bearer <key>` mapped to a tenant.

use std::sync::Arc;

use axum::http::{header, HeaderMap};
use subtle::{ConditionallySelectable, ConstantTimeEq};

use crate::config::TenantConfig;
use crate::error::ApiError;

/// The tenant of requests to an open server (no keys configured).
pub const OPEN_TENANT: &str = "default";

/// The authenticated tenant, stored in the request's extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant(pub Arc<str>);

pub struct Authenticator {
    /// (key bytes, tenant name); empty = open server.
    keys: Vec<(Vec<u8>, Arc<str>)>,
}

impl Authenticator {
    pub fn new(tenants: &[TenantConfig]) -> Self {
        Self {
            keys: tenants
                .iter()
                .map(|t| (t.api_key.as_bytes().to_vec(), Arc::from(t.name.as_str())))
                .collect(),
        }
    }

    pub fn is_open(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Tenant, ApiError> {
        if self.is_open() {
            return Ok(Tenant(Arc::from(OPEN_TENANT)));
        }
        let token = bearer_token(headers).ok_or_else(|| {
            ApiError::unauthorized(
                "Missing API key: send it as the header `Authorization: Bearer <key>`.",
            )
        })?;
        // Every key is compared, without branching on the comparisons, so the
        // time taken does not tell which key (or how much of one) matched.
        // Only a key's length can show, which is not secret enough to matter.
        const NONE: u32 = u32::MAX;
        let mut found = NONE;
        for (index, (key, _)) in self.keys.iter().enumerate() {
            let matches = key.as_slice().ct_eq(token.as_bytes());
            found = u32::conditional_select(&found, &(index as u32), matches);
        }
        match self.keys.get(found as usize) {
            Some((_, name)) if found != NONE => Ok(Tenant(name.clone())),
            _ => Err(ApiError::unauthorized("Invalid API key.")),
        }
    }
}

fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderValue, StatusCode};

    use super::*;

    fn headers(auth: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(auth) = auth {
            headers.insert(header::AUTHORIZATION, HeaderValue::from_str(auth).unwrap());
        }
        headers
    }

    fn two_tenants() -> Authenticator {
        Authenticator::new(&[
            TenantConfig::new("alice", "sk-alice"),
            TenantConfig::new("bob", "sk-bob"),
        ])
    }

    #[test]
    fn open_server_accepts_everything_as_default() {
        let auth = Authenticator::new(&[]);
        assert!(auth.is_open());
        assert_eq!(
            auth.authenticate(&headers(None)).unwrap(),
            Tenant(Arc::from("default"))
        );
        assert_eq!(
            auth.authenticate(&headers(Some("Bearer junk"))).unwrap(),
            Tenant(Arc::from("default"))
        );
    }

    #[test]
    fn keys_map_to_their_tenants() {
        let auth = two_tenants();
        assert_eq!(
            auth.authenticate(&headers(Some("Bearer sk-alice")))
                .unwrap()
                .0
                .as_ref(),
            "alice"
        );
        assert_eq!(
            auth.authenticate(&headers(Some("bearer sk-bob")))
                .unwrap()
                .0
                .as_ref(),
            "bob"
        );
    }

    #[test]
    fn missing_or_wrong_keys_are_401() {
        let auth = two_tenants();
        for value in [
            None,
            Some("sk-alice"),
            Some("Bearer"),
            Some("Bearer "),
            Some("Basic sk-alice"),
            Some("Bearer sk-alic"),
            Some("Bearer sk-alice2"),
            Some("Bearer SK-ALICE"),
        ] {
            let error = auth.authenticate(&headers(value)).unwrap_err();
            assert_eq!(error.status, StatusCode::UNAUTHORIZED, "{value:?}");
        }
    }
}
