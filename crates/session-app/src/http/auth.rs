//! API keys for the `/v1` routes.

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::AppState;
use super::error::ApiError;

/// The API keys callers may present. Several may be valid at once, so keys
/// can be rotated without downtime. Only their SHA-256 is kept in memory.
#[derive(Clone, Default)]
pub struct ApiKeys {
    digests: Vec<[u8; 32]>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKeys({} configured)", self.digests.len())
    }
}

/// An API key that is too short to be a secret.
#[derive(Debug, thiserror::Error)]
#[error("API keys must be at least {MIN_KEY_LEN} characters long")]
pub struct WeakApiKey;

/// The shortest accepted API key.
pub const MIN_KEY_LEN: usize = 16;

impl ApiKeys {
    /// No keys: the `/v1` routes are open (the service then listens on loopback only).
    #[must_use]
    pub fn none() -> Self {
        Self::default()
    }

    /// The given keys.
    ///
    /// # Errors
    ///
    /// A key shorter than [`MIN_KEY_LEN`].
    pub fn new<'a>(keys: impl IntoIterator<Item = &'a str>) -> Result<Self, WeakApiKey> {
        let digests = keys
            .into_iter()
            .map(|key| {
                if key.len() < MIN_KEY_LEN {
                    Err(WeakApiKey)
                } else {
                    Ok(digest(key))
                }
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { digests })
    }

    /// Whether any key is configured.
    #[must_use]
    pub fn is_enabled(&self) -> bool {
        !self.digests.is_empty()
    }

    /// Whether `presented` is one of the keys. Compares digests in constant
    /// time and checks every key, so timing reveals neither key nor match.
    #[must_use]
    pub fn verify(&self, presented: &str) -> bool {
        let presented = digest(presented);
        self.digests
            .iter()
            .fold(subtle::Choice::from(0), |found, key| {
                found | key.ct_eq(&presented)
            })
            .into()
    }
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// Rejects requests without a valid `Authorization: Bearer <key>` when keys are configured.
pub(crate) async fn require_api_key(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let keys = state.api_keys();
    if keys.is_enabled() {
        let presented = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(bearer);
        if !presented.is_some_and(|key| keys.verify(key)) {
            return Err(ApiError::unauthorized());
        }
    }
    Ok(next.run(request).await)
}

/// The credentials of a `Bearer` authorization value; the scheme is case-insensitive.
fn bearer(value: &str) -> Option<&str> {
    let (scheme, credentials) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| credentials.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_accepts_only_configured_keys() {
        let keys = ApiKeys::new(["first-key-0123456789", "second-key-0123456789"]).unwrap();
        assert!(keys.verify("first-key-0123456789"));
        assert!(keys.verify("second-key-0123456789"));
        assert!(!keys.verify("first-key-012345678"));
        assert!(!keys.verify(""));
        assert!(!ApiKeys::none().verify("first-key-0123456789"));
    }

    #[test]
    fn short_keys_are_refused() {
        assert!(ApiKeys::new(["short"]).is_err());
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer abc"), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer"), None);
    }
}
