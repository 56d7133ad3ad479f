//! API keys for the `/v1` routes.

use axum::extract::Request;
use axum::http::{Method, header};
use session_core::Revoker;
use sha2::{Digest, Sha256};
use subtle::{ConditionallySelectable, ConstantTimeEq};

use crate::ApiState;
use crate::error::ApiError;

/// The API keys callers may present. Several may be valid at once, so keys
/// can be rotated without downtime; each has a name, recorded with the
/// revocations it makes, and the [`Scopes`] it may use. Only their SHA-256
/// is kept in memory.
#[derive(Clone, Default)]
pub struct ApiKeys {
    keys: Vec<ApiKey>,
}

/// One configured key: its name, its scopes and its digest.
#[derive(Clone)]
pub struct ApiKey {
    name: Revoker,
    scopes: Scopes,
    digest: [u8; 32],
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKey")
            .field("name", &self.name)
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

impl ApiKey {
    /// A key named `name` that may use `scopes`.
    ///
    /// # Errors
    ///
    /// A secret that [`ApiKeys::check`] refuses.
    pub fn new(name: Revoker, scopes: Scopes, secret: &str) -> Result<Self, InvalidApiKey> {
        ApiKeys::check(secret)?;
        Ok(Self {
            name,
            scopes,
            digest: digest(secret),
        })
    }

    /// The key's name.
    #[must_use]
    pub fn name(&self) -> &Revoker {
        &self.name
    }

    /// What the key may do.
    #[must_use]
    pub fn scopes(&self) -> Scopes {
        self.scopes
    }
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKeys({} configured)", self.keys.len())
    }
}

/// What a key may do on the `/v1` routes. Resolve and forward auth need
/// only a valid key (of any scope), as before scopes existed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// `GET` a session, list an account's sessions, read the "not
    /// before" mark.
    Read,
    /// Follow the events feed (`GET /v1/events`).
    Events,
    /// Create sessions, revoke one, revoke an account's, raise the "not
    /// before" mark.
    Write,
}

impl Scope {
    /// Every scope, in the order above.
    pub const ALL: [Self; 3] = [Self::Read, Self::Events, Self::Write];

    /// The scope's name, as key files and `WWW-Authenticate` spell it.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Events => "events",
            Self::Write => "write",
        }
    }

    const fn bit(self) -> u8 {
        match self {
            Self::Read => 1,
            Self::Events => 2,
            Self::Write => 4,
        }
    }

    /// The RFC 6750 §3.1 challenge of a request this scope would allow.
    const fn challenge(self) -> &'static str {
        match self {
            Self::Read => r#"Bearer error="insufficient_scope", scope="read""#,
            Self::Events => r#"Bearer error="insufficient_scope", scope="events""#,
            Self::Write => r#"Bearer error="insufficient_scope", scope="write""#,
        }
    }
}

/// A set of [`Scope`]s.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Scopes(u8);

impl Scopes {
    /// Every scope: what a key given without scopes holds.
    pub const ALL: Self = Self(7);

    /// The set of `scopes`.
    #[must_use]
    pub fn of(scopes: &[Scope]) -> Self {
        Self(scopes.iter().fold(0, |bits, scope| bits | scope.bit()))
    }

    /// Whether `scope` is in the set.
    #[must_use]
    pub const fn contains(self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }

    /// Parses a comma-separated list of scope names (`read,write`), or
    /// `all`. `None` for anything else, an empty item or a repeated scope
    /// included.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        if text == "all" {
            return Some(Self::ALL);
        }
        let mut bits = 0;
        for item in text.split(',') {
            let scope = Scope::ALL
                .into_iter()
                .find(|scope| scope.as_str() == item)?;
            if bits & scope.bit() != 0 {
                return None;
            }
            bits |= scope.bit();
        }
        Some(Self(bits))
    }
}

impl std::fmt::Debug for Scopes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set()
            .entries(Scope::ALL.into_iter().filter(|scope| self.contains(*scope)))
            .finish()
    }
}

/// The key a request presented, put in its extensions by the guard when
/// keys are configured: revocations record its name.
#[derive(Debug, Clone)]
pub(crate) struct Caller(pub(crate) Revoker);

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

    /// The given keys, each named [`Revoker::DEFAULT`] and holding every
    /// scope: the configuration from before keys had names.
    ///
    /// # Errors
    ///
    /// A key that [`check`](Self::check) refuses.
    pub fn new<'a>(keys: impl IntoIterator<Item = &'a str>) -> Result<Self, InvalidApiKey> {
        let keys = keys
            .into_iter()
            .map(|secret| ApiKey::new(Revoker::DEFAULT, Scopes::ALL, secret))
            .collect::<Result<_, _>>()?;
        Ok(Self { keys })
    }

    /// The given named, scoped keys.
    #[must_use]
    pub fn scoped(keys: impl IntoIterator<Item = ApiKey>) -> Self {
        Self {
            keys: keys.into_iter().collect(),
        }
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
        !self.keys.is_empty()
    }

    /// The key `presented` is, if any. Compares digests in constant time
    /// and checks every key, so timing reveals neither key nor which one
    /// matched.
    #[must_use]
    pub(crate) fn verify(&self, presented: &str) -> Option<&ApiKey> {
        let presented = digest(presented);
        let mut found = subtle::Choice::from(0);
        let mut index = 0_u64;
        for (position, key) in self.keys.iter().enumerate() {
            let matches = key.digest.ct_eq(&presented);
            index = u64::conditional_select(&index, &(position as u64), matches);
            found |= matches;
        }
        bool::from(found)
            .then(|| usize::try_from(index).ok())
            .flatten()
            .and_then(|index| self.keys.get(index))
    }
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// When keys are configured: rejects a request without a valid
/// `Authorization: Bearer <key>` (401), and one whose key lacks the scope
/// its route needs (403), and tells the route which key it was.
pub(crate) fn require_api_key(
    state: &ApiState,
    route: &str,
    request: &mut Request,
) -> Result<(), ApiError> {
    let keys = state.api_keys();
    if !keys.is_enabled() {
        return Ok(());
    }
    let key = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(bearer)
        .and_then(|presented| keys.verify(presented))
        .ok_or_else(ApiError::unauthorized)?;
    if let Some(scope) = required_scope(route, request.method())
        && !key.scopes.contains(scope)
    {
        return Err(ApiError::insufficient_scope(
            scope.as_str(),
            scope.challenge(),
        ));
    }
    request.extensions_mut().insert(Caller(key.name.clone()));
    Ok(())
}

/// The scope a `/v1` route needs, by its template and method; `None` for
/// a route any valid key may use (resolve, forward auth, and what matches
/// no route, which answers 404 or 405 anyway).
pub(crate) fn required_scope(route: &str, method: &Method) -> Option<Scope> {
    match (route, method) {
        ("/v1/sessions" | "/v1/sessions/{id}" | "/v1/accounts/{account_id}/sessions", m)
            if m == Method::POST || m == Method::DELETE =>
        {
            Some(Scope::Write)
        }
        ("/v1/sessions/{id}" | "/v1/accounts/{account_id}/sessions" | crate::NOT_BEFORE, m)
            if m == Method::GET =>
        {
            Some(Scope::Read)
        }
        (crate::NOT_BEFORE, m) if m == Method::PUT => Some(Scope::Write),
        (EVENTS_ROUTE, _) => Some(Scope::Events),
        _ => None,
    }
}

/// The events feed's route, which needs [`Scope::Events`].
pub(crate) const EVENTS_ROUTE: &str = "/v1/events";

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
        assert!(keys.verify("first-key-0123456789").is_some());
        assert!(keys.verify("second-key-0123456789").is_some());
        assert!(keys.verify("first-key-012345678").is_none());
        assert!(keys.verify("").is_none());
        assert!(ApiKeys::none().verify("first-key-0123456789").is_none());
    }

    #[test]
    fn verify_finds_which_key_it_was() {
        let key = |name: &str, scopes, secret| {
            ApiKey::new(Revoker::new(name).unwrap(), scopes, secret).unwrap()
        };
        let keys = ApiKeys::scoped([
            key(
                "reader",
                Scopes::of(&[Scope::Read]),
                "reader-key-0123456789",
            ),
            key(
                "writer",
                Scopes::of(&[Scope::Write]),
                "writer-key-0123456789",
            ),
        ]);
        for (secret, name) in [
            ("reader-key-0123456789", "reader"),
            ("writer-key-0123456789", "writer"),
        ] {
            assert_eq!(keys.verify(secret).unwrap().name().as_str(), name);
        }
        assert!(keys.verify("other-key-0123456789").is_none());
    }

    #[test]
    fn each_route_needs_its_scope() {
        let id = "/v1/sessions/{id}";
        let account = "/v1/accounts/{account_id}/sessions";
        for (route, method, scope) in [
            ("/v1/sessions", Method::POST, Some(Scope::Write)),
            (id, Method::GET, Some(Scope::Read)),
            (id, Method::DELETE, Some(Scope::Write)),
            (account, Method::GET, Some(Scope::Read)),
            (account, Method::DELETE, Some(Scope::Write)),
            (EVENTS_ROUTE, Method::GET, Some(Scope::Events)),
            (crate::NOT_BEFORE, Method::GET, Some(Scope::Read)),
            (crate::NOT_BEFORE, Method::PUT, Some(Scope::Write)),
            ("/v1/sessions/resolve", Method::POST, None),
            ("/v1/forward-auth", Method::GET, None),
        ] {
            assert_eq!(required_scope(route, &method), scope, "{method} {route}");
        }
    }

    #[test]
    fn scopes_parse_strictly() {
        assert_eq!(Scopes::parse("all"), Some(Scopes::ALL));
        assert_eq!(
            Scopes::parse("read,write"),
            Some(Scopes::of(&[Scope::Read, Scope::Write]))
        );
        assert_eq!(Scopes::parse("events"), Some(Scopes::of(&[Scope::Events])));
        for bad in [
            "",
            "read,",
            "read,read",
            "Read",
            "read write",
            "admin",
            "all,read",
        ] {
            assert_eq!(Scopes::parse(bad), None, "{bad:?}");
        }
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
