//! API keys for the `/v1` routes.

use axum::extract::Request;
use axum::http::header;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::ApiState;
use crate::error::ApiError;

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

/// Why a configured API key is refused. Never holds the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidApiKey {
    /// Too short to be a secret.
    #[error("API keys must be at least {MIN_KEY_LEN} characters long")]
    TooShort,
    /// Holds a character a client cannot send as intended in an
    /// `Authorization` header: a control character, a space, or anything
    /// outside ASCII (such as a byte-order mark or a non-breaking space).
    /// Such a key would never match what clients send.
    #[error(
        "API keys may hold only visible ASCII characters (`!` to `~`); character {position} is \
         {code}"
    )]
    NotVisibleAscii {
        /// Where, counting characters from 1.
        position: usize,
        /// The character's code point, as `U+XXXX`: not a character of any
        /// valid key, so naming it reveals nothing of a key in use.
        code: String,
    },
}

/// The shortest accepted API key.
pub const MIN_KEY_LEN: usize = 16;

impl ApiKeys {
    /// No keys: the `/v1` routes are open, and every route answers only
    /// requests addressed to a loopback name, so serve it on loopback only.
    #[must_use]
    pub fn none() -> Self {
        Self::default()
    }

    /// The given keys.
    ///
    /// # Errors
    ///
    /// A key that [`check`](Self::check) refuses.
    pub fn new<'a>(keys: impl IntoIterator<Item = &'a str>) -> Result<Self, InvalidApiKey> {
        let digests = keys
            .into_iter()
            .map(|key| Self::check(key).map(|()| digest(key)))
            .collect::<Result<_, _>>()?;
        Ok(Self { digests })
    }

    /// The one rule for a key, wherever it comes from: only visible ASCII
    /// (what an HTTP header carries unchanged, so a client can present it
    /// as configured), and at least [`MIN_KEY_LEN`] characters.
    ///
    /// # Errors
    ///
    /// Why the key is refused; the error never holds the key.
    pub fn check(key: &str) -> Result<(), InvalidApiKey> {
        if let Some((index, character)) = key
            .chars()
            .enumerate()
            .find(|(_, character)| !character.is_ascii_graphic())
        {
            return Err(InvalidApiKey::NotVisibleAscii {
                position: index + 1,
                code: format!("U+{:04X}", u32::from(character)),
            });
        }
        if key.len() < MIN_KEY_LEN {
            return Err(InvalidApiKey::TooShort);
        }
        Ok(())
    }

    /// Whether any key is configured.
    #[must_use]
    pub fn is_enabled(&self) -> bool {
        !self.digests.is_empty()
    }

    /// Whether `presented` is one of the keys. Compares digests in constant
    /// time and checks every key, so timing reveals neither key nor match.
    #[must_use]
    pub(crate) fn verify(&self, presented: &str) -> bool {
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
pub(crate) fn require_api_key(state: &ApiState, request: &Request) -> Result<(), ApiError> {
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
    Ok(())
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
        assert_eq!(
            ApiKeys::new(["short"]).unwrap_err(),
            InvalidApiKey::TooShort
        );
    }

    #[test]
    fn keys_that_a_header_cannot_carry_are_refused_without_echoing_them() {
        let key = "0123456789abcdef";
        for (bad, position, code) in [
            (format!("\u{feff}{key}"), 1, "U+FEFF"),
            (format!("{key}\u{a0}x"), 17, "U+00A0"),
            (format!("0123\t{key}"), 5, "U+0009"),
            (format!("0123 {key}"), 5, "U+0020"),
            (format!("{key}\u{7f}"), 17, "U+007F"),
            (format!("{key}\u{0}"), 17, "U+0000"),
            (format!("caf\u{e9}-{key}"), 4, "U+00E9"),
        ] {
            let err = ApiKeys::check(&bad).unwrap_err();
            assert_eq!(
                err,
                InvalidApiKey::NotVisibleAscii {
                    position,
                    code: code.to_owned()
                },
                "{bad:?}"
            );
            assert!(!err.to_string().contains(key), "{err}");
            assert!(ApiKeys::new([bad.as_str()]).is_err(), "one rule: {bad:?}");
        }
        ApiKeys::check("!~0123456789abcdef-_.+/=").unwrap();
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer abc"), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer"), None);
    }
}
