//! Forward auth: the check a gateway (nginx `auth_request`, Caddy
//! `forward_auth`, Traefik ForwardAuth, Envoy `ext_authz`, Oathkeeper) makes
//! before it lets a request through.
//!
//! The gateway sends the client's headers to `/v1/forward-auth` (or any path
//! below it, with any method: Envoy keeps the original method and path); the
//! body is never read. The answer is 200 with the session's identity in
//! headers and the resolve JSON as body, 401 for anything that is not an
//! active session, or 503 when the token cannot be checked now: gateways let
//! a request through only on a 2xx, so every failure refuses.
//!
//! The route needs no API key: it answers only about the token presented, as
//! Ory Kratos' `/sessions/whoami` does, and the `Authorization` header it
//! reads is the client's own. For the same reason it is exempt from the
//! loopback-name rule of a keyless service (`host.rs`): gateways forward the
//! client's `Host`, and a DNS-rebinding page learns nothing here that it did
//! not send.

use std::str::FromStr;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use session_axum::{Presented, TokenSources, is_token};
use session_core::{Error, SessionToken};

use crate::ApiState;
use crate::error::{ApiError, ErrorBody};
use crate::metrics::ForwardAuthOutcome;
use crate::sessions::resolved;

/// The header a client may carry its token in when it can set neither
/// `Authorization` nor a cookie.
pub const SESSION_TOKEN_HEADER: &str = "x-session-token";

/// Where forward auth looks for the token besides `Authorization: Bearer`
/// and [`SESSION_TOKEN_HEADER`], and which headers carry the identity back.
#[derive(Debug, Clone)]
pub struct ForwardAuth {
    /// Bearer, the cookie, then [`SESSION_TOKEN_HEADER`]: session-axum's
    /// rule for finding a token, the one host backends use too.
    sources: TokenSources,
    session_id_header: HeaderName,
    account_id_header: HeaderName,
}

/// The cookie forward auth reads unless told otherwise.
pub const DEFAULT_COOKIE: &str = "__Host-session";
/// The response header carrying the session id unless told otherwise.
pub const DEFAULT_SESSION_ID_HEADER: &str = "X-Session-Id";
/// The response header carrying the account id unless told otherwise.
pub const DEFAULT_ACCOUNT_ID_HEADER: &str = "X-Account-Id";

impl Default for ForwardAuth {
    fn default() -> Self {
        Self {
            sources: sources(DEFAULT_COOKIE),
            session_id_header: HeaderName::from_static("x-session-id"),
            account_id_header: HeaderName::from_static("x-account-id"),
        }
    }
}

/// Why a forward-auth setting is refused. Names the setting, not its value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidForwardAuth {
    /// The cookie name is empty or holds a character a cookie name cannot
    /// (RFC 6265: an HTTP token).
    #[error("the cookie name must be an HTTP token: letters, digits and !#$%&'*+-.^_`|~")]
    CookieName,
    /// An identity header name is not a valid HTTP header name.
    #[error("the {0} header name must be an HTTP token: letters, digits and !#$%&'*+-.^_`|~")]
    HeaderName(&'static str),
    /// An identity header name is one HTTP or this route already gives a
    /// meaning to; a gateway copying it would break the request.
    #[error("the {0} header must not be a header HTTP or forward auth already uses")]
    Reserved(&'static str),
    /// Both identity headers have the same name.
    #[error("the session id and account id headers must have different names")]
    SameHeader,
}

/// Headers whose meaning is fixed by HTTP, by the gateways, or by this route
/// itself (it reads or sets them), compared lowercase.
const RESERVED_HEADERS: &[&str] = &[
    "authorization",
    "cache-control",
    "connection",
    "content-encoding",
    "content-length",
    "content-type",
    "cookie",
    "host",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "retry-after",
    "set-cookie",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "www-authenticate",
    "x-request-id",
    SESSION_TOKEN_HEADER,
];

impl ForwardAuth {
    /// Settings from their names.
    ///
    /// # Errors
    ///
    /// A name that is not an HTTP token, an identity header HTTP already
    /// uses (see [`InvalidForwardAuth`]), or two identity headers of one name.
    pub fn new(
        cookie: &str,
        session_id_header: &str,
        account_id_header: &str,
    ) -> Result<Self, InvalidForwardAuth> {
        if !is_token(cookie) {
            return Err(InvalidForwardAuth::CookieName);
        }
        let header = |text: &str, which: &'static str| {
            // `HeaderName` also accepts names it lowercases; a token is what a
            // gateway can copy as-is.
            if !is_token(text) {
                return Err(InvalidForwardAuth::HeaderName(which));
            }
            let name =
                HeaderName::from_str(text).map_err(|_| InvalidForwardAuth::HeaderName(which))?;
            if RESERVED_HEADERS.contains(&name.as_str()) {
                return Err(InvalidForwardAuth::Reserved(which));
            }
            Ok(name)
        };
        let session_id_header = header(session_id_header, "session id")?;
        let account_id_header = header(account_id_header, "account id")?;
        if session_id_header == account_id_header {
            return Err(InvalidForwardAuth::SameHeader);
        }
        Ok(Self {
            // Checked above to be a token, as a cookie name must be.
            sources: sources(cookie),
            session_id_header,
            account_id_header,
        })
    }
}

impl ForwardAuth {
    /// Whether `headers` hold a name that differs from an identity header's
    /// only in `_` against `-` (`X_Session_Id`, `x-session_id` for
    /// `X-Session-Id`; header names compare without case).
    ///
    /// Gateways replace the identity headers under their own names with
    /// this answer's, but Caddy, Traefik and Envoy pass the other spellings
    /// on, and CGI, WSGI, Rack and PHP turn both into one variable
    /// (`HTTP_X_SESSION_ID`, RFC 3875 §4.1.18), where the client's may win.
    /// This answer cannot remove a header from the request the gateway
    /// forwards (only Envoy would honour that), so it refuses the request
    /// instead: no real client sends such a header.
    fn carries_identity_spelt_otherwise(&self, headers: &HeaderMap) -> bool {
        let same_variable = |sent: &[u8], set: &[u8]| {
            sent.len() == set.len()
                && sent.iter().zip(set).all(|(a, b)| {
                    let fold = |c: u8| if c == b'_' { b'-' } else { c };
                    fold(*a) == fold(*b)
                })
        };
        headers.keys().any(|name| {
            [&self.session_id_header, &self.account_id_header]
                .into_iter()
                .any(|set| name != set && same_variable(name.as_ref(), set.as_ref()))
        })
    }
}

/// Why the token a request presents cannot be resolved. Both are answered
/// as an invalid token; neither holds any part of what was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenRejection {
    /// A token was sent, but it is not a well-formed session token.
    Malformed,
    /// Two different tokens were sent (say a stale cookie and a fresh
    /// Bearer token): which one the client meant is a guess, and a guess
    /// could act for the wrong account, so neither is used.
    Conflicting,
}

/// Where forward auth reads a token: `Authorization: Bearer`, the cookie
/// `cookie`, and [`SESSION_TOKEN_HEADER`], in that order.
fn sources(cookie: &str) -> TokenSources {
    TokenSources::new()
        .bearer()
        .cookie(cookie)
        .header(HeaderName::from_static(SESSION_TOKEN_HEADER))
}

/// The token a request presents, found by session-axum's rule: every
/// occurrence in every source is read, the same token in several places
/// counts once, and two different ones are refused. An `Authorization` of
/// another scheme is not a session token and is left alone.
pub(crate) fn presented_token(
    headers: &HeaderMap,
    config: &ForwardAuth,
) -> Result<Option<SessionToken>, TokenRejection> {
    match config.sources.find(headers) {
        Presented::Missing => Ok(None),
        // The one copy of the token, which wipes itself on drop.
        Presented::Token(token) => SessionToken::parse(token.expose_secret())
            .map(Some)
            .map_err(|_| TokenRejection::Malformed),
        Presented::Conflicting => Err(TokenRejection::Conflicting),
        Presented::Malformed => Err(TokenRejection::Malformed),
    }
}

/// Check the session a gateway's request presents.
///
/// Any method, and any path below `/v1/forward-auth`; the body is never read.
/// The token is taken from `Authorization: Bearer`, the session cookie
/// (`--forward-auth-cookie`, `__Host-session` by default) and
/// `X-Session-Token`; two different tokens are refused. No API key is
/// needed, and a keyless service answers this route under any `Host`.
#[utoipa::path(
    method(get, head, post, put, delete, patch, options, trace),
    path = "/v1/forward-auth", tag = "forward-auth",
    responses(
        (status = 200, description = "An active session. The identity headers carry its ids \
(names set by `--forward-auth-session-id-header` and `--forward-auth-account-id-header`); \
the body is the resolve response", body = crate::sessions::ResolvedEnvelope,
            headers(
                ("X-Session-Id" = String, description = "The session id (UUID)"),
                ("X-Account-Id" = String, description = "The account id (UUID)"),
            )),
        (status = 400, description = "`invalid_request`: the request carries an identity header \
spelt with `_` for `-` (say `X_Session_Id`), which applications may read as the one this answer \
sets: refuse the request", body = ErrorBody),
        (status = 401, description = "No token (`missing_token`), or a malformed, unknown or \
revoked one, or two different ones (`invalid_token`): refuse the request", body = ErrorBody,
            headers(("WWW-Authenticate" = String,
                description = "`Bearer`, with `error=\"invalid_token\"` when a token was sent"))),
        (status = 503, description = "The token cannot be checked now (`not_ready`, \
`unavailable`): refuse the request, and do not log the user out", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait: 1"))),
    ),
)]
pub(crate) async fn forward_auth(State(state): State<ApiState>, headers: HeaderMap) -> Response {
    let config = state.forward_auth();
    let metrics = state.metrics();
    if config.carries_identity_spelt_otherwise(&headers) {
        metrics.forward_auth(ForwardAuthOutcome::Invalid);
        return ApiError::invalid_request(
            "the request carries an identity header spelt with `_` for `-` (or `-` for `_`), \
             which applications read as the one this answer sets: the gateway must strip it",
        )
        .into_response();
    }
    let token = match presented_token(&headers, config) {
        Ok(Some(token)) => token,
        Ok(None) => {
            metrics.forward_auth(ForwardAuthOutcome::Missing);
            return challenge(ApiError::missing_token(), "Bearer");
        }
        Err(TokenRejection::Malformed | TokenRejection::Conflicting) => {
            metrics.forward_auth(ForwardAuthOutcome::Invalid);
            return challenge(Error::InvalidToken.into(), INVALID_TOKEN_CHALLENGE);
        }
    };
    match resolved(state.service(), token.expose_secret()).await {
        Ok((session, mut response)) => {
            metrics.forward_auth(ForwardAuthOutcome::Active);
            let headers = response.headers_mut();
            for (name, id) in [
                (&config.session_id_header, session.id.as_uuid()),
                (&config.account_id_header, session.account_id.as_uuid()),
            ] {
                let text = id.as_hyphenated().to_string();
                // A UUID's text is always a valid header value.
                if let Ok(value) = HeaderValue::from_str(&text) {
                    headers.insert(name.clone(), value);
                }
            }
            response
        }
        Err(Error::InvalidToken) => {
            metrics.forward_auth(ForwardAuthOutcome::Invalid);
            challenge(Error::InvalidToken.into(), INVALID_TOKEN_CHALLENGE)
        }
        Err(err) => {
            // As the client is answered: 503 for what a retry may fix, 500 otherwise.
            metrics.forward_auth(match err {
                Error::NotReady => ForwardAuthOutcome::NotReady,
                _ if err.is_store_unavailable() => ForwardAuthOutcome::Unavailable,
                _ => ForwardAuthOutcome::Failed,
            });
            ApiError::from(err).into_response()
        }
    }
}

/// RFC 6750 §3.1: a token was sent and is not valid.
const INVALID_TOKEN_CHALLENGE: &str = r#"Bearer error="invalid_token""#;

/// A 401 with its `WWW-Authenticate` challenge (RFC 6750 §3).
fn challenge(error: ApiError, challenge: &'static str) -> Response {
    let mut response = error.into_response();
    debug_assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_that_a_gateway_could_not_copy_are_refused_by_name() {
        ForwardAuth::new("sid", "X-Session-Id", "X-Account-Id").unwrap();
        ForwardAuth::new("__Host-session", "x-user-session", "X-Remote-User").unwrap();
        for cookie in ["", "a b", "a;b", "a=b", "caf\u{e9}", "a\"b"] {
            assert_eq!(
                ForwardAuth::new(cookie, "X-Session-Id", "X-Account-Id").unwrap_err(),
                InvalidForwardAuth::CookieName,
                "{cookie:?}"
            );
        }
        for header in ["", "X Session", "X-Session:", "caf\u{e9}", "a\nb"] {
            assert_eq!(
                ForwardAuth::new("sid", header, "X-Account-Id").unwrap_err(),
                InvalidForwardAuth::HeaderName("session id"),
                "{header:?}"
            );
            assert_eq!(
                ForwardAuth::new("sid", "X-Session-Id", header).unwrap_err(),
                InvalidForwardAuth::HeaderName("account id"),
                "{header:?}"
            );
        }
        for header in [
            "Authorization",
            "COOKIE",
            "Set-Cookie",
            "X-Session-Token",
            "Host",
        ] {
            assert_eq!(
                ForwardAuth::new("sid", header, "X-Account-Id").unwrap_err(),
                InvalidForwardAuth::Reserved("session id"),
                "{header}"
            );
        }
        assert_eq!(
            ForwardAuth::new("sid", "X-Id", "x-id").unwrap_err(),
            InvalidForwardAuth::SameHeader
        );
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_str(name).unwrap(),
                HeaderValue::from_bytes(value.as_bytes()).unwrap(),
            );
        }
        map
    }

    fn found(pairs: &[(&str, &str)]) -> Result<Option<String>, TokenRejection> {
        presented_token(&headers(pairs), &ForwardAuth::default())
            .map(|token| token.map(|token| token.expose_secret().to_owned()))
    }

    #[test]
    fn a_token_is_found_in_each_place_and_nowhere_else() {
        let token = SessionToken::generate();
        let token = token.expose_secret();
        assert_eq!(found(&[]), Ok(None));
        for pairs in [
            vec![("authorization", format!("Bearer {token}"))],
            vec![("authorization", format!("bearer  {token}"))],
            vec![("cookie", format!("__Host-session={token}"))],
            vec![("cookie", format!("theme=dark; __Host-session={token}; x=y"))],
            vec![("x-session-token", token.to_owned())],
            // The same token in every place counts once.
            vec![
                ("authorization", format!("Bearer {token}")),
                ("cookie", format!("__Host-session={token}")),
                ("x-session-token", token.to_owned()),
                ("cookie", format!("__Host-session={token}")),
            ],
            // Other schemes and other cookies are not session tokens.
            vec![
                ("authorization", "Basic dXNlcjpwYXNz".to_owned()),
                ("cookie", format!("session={token}x; __host-session=y")),
                ("x-session-token", token.to_owned()),
            ],
        ] {
            let pairs: Vec<(&str, &str)> = pairs.iter().map(|(n, v)| (*n, v.as_str())).collect();
            assert_eq!(found(&pairs), Ok(Some(token.to_owned())), "{pairs:?}");
        }
        for pairs in [
            vec![("authorization", "Basic dXNlcjpwYXNz")],
            vec![("cookie", "session=abc; other=def")],
            vec![("cookie", "\u{e9}\u{e9}")],
        ] {
            assert_eq!(found(&pairs), Ok(None), "{pairs:?}");
        }
    }

    #[test]
    fn a_malformed_token_in_any_place_is_malformed_not_absent() {
        let token = SessionToken::generate();
        let token = token.expose_secret();
        // Its last character changed, whatever it was: the checksum fails.
        let (kept, last) = token.split_at(token.len() - 1);
        let damaged = format!("{kept}{}", if last == "x" { "y" } else { "x" });
        for pairs in [
            vec![("authorization", format!("Bearer {damaged}"))],
            vec![("authorization", "Bearer".to_owned())],
            vec![("authorization", "Bearer ".to_owned())],
            vec![("authorization", "Bearer caf\u{e9}".to_owned())],
            vec![("cookie", format!("__Host-session={damaged}"))],
            vec![("cookie", "__Host-session=".to_owned())],
            vec![("x-session-token", damaged.clone())],
            vec![("x-session-token", "caf\u{e9}".to_owned())],
        ] {
            let pairs: Vec<(&str, &str)> = pairs.iter().map(|(n, v)| (*n, v.as_str())).collect();
            assert_eq!(found(&pairs), Err(TokenRejection::Malformed), "{pairs:?}");
        }
    }

    #[test]
    fn two_different_tokens_are_refused_wherever_they_are() {
        let (first, second) = (SessionToken::generate(), SessionToken::generate());
        let (first, second) = (first.expose_secret(), second.expose_secret());
        let places = |token: &str| {
            [
                ("authorization", format!("Bearer {token}")),
                ("cookie", format!("__Host-session={token}")),
                ("x-session-token", token.to_owned()),
            ]
        };
        for (a_name, a_value) in places(first) {
            for (b_name, b_value) in places(second) {
                let pairs = [(a_name, a_value.as_str()), (b_name, b_value.as_str())];
                assert_eq!(
                    found(&pairs),
                    Err(TokenRejection::Conflicting),
                    "{a_name} and {b_name}"
                );
            }
        }
        // Two of one cookie in one header, as a browser sends a stale
        // cookie of a wider path beside the current one.
        let pairs = [(
            "cookie",
            format!("__Host-session={first}; __Host-session={second}"),
        )];
        let pairs: Vec<(&str, &str)> = pairs.iter().map(|(n, v)| (*n, v.as_str())).collect();
        assert_eq!(found(&pairs), Err(TokenRejection::Conflicting));
    }
}
