//! Why a request has no session, and the response that says so (RFC 6750 §3).

use axum::response::{IntoResponse, Response};
use http::header::{CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderValue, StatusCode};

/// Why a request was refused a session. Each kind is one status and one
/// fixed message; none repeats anything the request sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RejectionKind {
    /// No configured source held a token: 401, `WWW-Authenticate: Bearer`
    /// with no error code (RFC 6750 §3.1: "If the request lacks any
    /// authentication information … SHOULD NOT include an error code").
    MissingToken,
    /// A token was sent and is malformed, unknown or revoked (one kind for
    /// all three, so nobody can probe which tokens exist): 401 with
    /// `error="invalid_token"`.
    InvalidToken,
    /// Two different tokens in one request: 400 with
    /// `error="invalid_request"` (RFC 6750 §3.1: "uses more than one method
    /// for including an access token … SHOULD respond with … 400").
    ConflictingTokens,
    /// An unsafe request that only the session cookie authenticates came
    /// from another site, or any unsafe request did behind
    /// [`CrossSiteCheck::layer`](crate::CrossSiteCheck::layer): 403 (the
    /// Fetch Metadata check, [`CrossSiteCheck`](crate::CrossSiteCheck)).
    CrossSite,
    /// The service's cache has not finished its first warm: 503 with
    /// `Retry-After: 1`. The token may be valid; do not log the user out.
    NotReady,
    /// A token missing from the cache could not be decided: the shared
    /// store's change log could not be read in time (shared stores only):
    /// 503 with `Retry-After: 1`.
    StoreUnavailable,
    /// The store failed in a way retrying will not fix: 500.
    StoreFailed,
}

/// A refused session, as the response RFC 6750 §3 describes: the status,
/// `WWW-Authenticate` on 400 and 401, `Retry-After` on 503, and
/// `Cache-Control: no-store` on every one, so no cache between the client
/// and the host keeps an answer about a token. The body is fixed text.
#[derive(Debug, Clone)]
pub struct SessionRejection {
    kind: RejectionKind,
    challenge: Option<HeaderValue>,
}

impl SessionRejection {
    pub(crate) const fn new(kind: RejectionKind, challenge: Option<HeaderValue>) -> Self {
        Self { kind, challenge }
    }

    /// Why the session was refused, for hosts that render their own errors.
    #[must_use]
    pub const fn kind(&self) -> RejectionKind {
        self.kind
    }

    /// The response status.
    #[must_use]
    pub const fn status(&self) -> StatusCode {
        match self.kind {
            RejectionKind::MissingToken | RejectionKind::InvalidToken => StatusCode::UNAUTHORIZED,
            RejectionKind::ConflictingTokens => StatusCode::BAD_REQUEST,
            RejectionKind::CrossSite => StatusCode::FORBIDDEN,
            RejectionKind::NotReady | RejectionKind::StoreUnavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            RejectionKind::StoreFailed => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Whether the session is gone and the client should sign in again;
    /// `false` for 503 and 500, which mean "retry".
    #[must_use]
    pub const fn means_signed_out(&self) -> bool {
        matches!(
            self.kind,
            RejectionKind::MissingToken | RejectionKind::InvalidToken
        )
    }

    const fn message(&self) -> &'static str {
        match self.kind {
            RejectionKind::MissingToken => "a session is required\n",
            RejectionKind::InvalidToken => "the session token is malformed, unknown or revoked\n",
            RejectionKind::ConflictingTokens => {
                "the request carries two different session tokens\n"
            }
            RejectionKind::CrossSite => "unsafe requests from another site are refused\n",
            RejectionKind::NotReady => "sessions are not ready yet; retry\n",
            RejectionKind::StoreUnavailable => "the session store is unavailable; retry\n",
            RejectionKind::StoreFailed => "the session could not be checked\n",
        }
    }

    /// The response, with any body type that can hold fixed text (axum's
    /// `Body`, `http_body_util::Full`), for tower stacks that are not axum.
    #[must_use]
    pub fn to_response<B: From<&'static str>>(&self) -> http::Response<B> {
        let mut response = http::Response::new(B::from(self.message()));
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(challenge) = &self.challenge {
            headers.insert(WWW_AUTHENTICATE, challenge.clone());
        }
        if self.status() == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

impl std::fmt::Display for SessionRejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message().trim_end())
    }
}

impl std::error::Error for SessionRejection {}

impl IntoResponse for SessionRejection {
    fn into_response(self) -> Response {
        self.to_response()
    }
}

/// The `WWW-Authenticate` values, built once from the realm.
#[derive(Debug, Clone)]
pub(crate) struct Challenges {
    missing: HeaderValue,
    invalid_token: HeaderValue,
    invalid_request: HeaderValue,
}

impl Challenges {
    /// # Panics
    ///
    /// If `realm` cannot be an RFC 9110 quoted string without escapes
    /// (visible ASCII or space, no `"` or `\`): a configuration bug.
    pub(crate) fn new(realm: Option<&str>) -> Self {
        let realm = realm.map(|realm| {
            assert!(
                realm
                    .bytes()
                    .all(|b| (b == b' ' || b.is_ascii_graphic()) && b != b'"' && b != b'\\'),
                "a realm must be visible ASCII or spaces, without quotes or backslashes"
            );
            format!(" realm=\"{realm}\"")
        });
        let realm = realm.as_deref().unwrap_or_default();
        let with_error = |error: &str| {
            let separator = if realm.is_empty() { " " } else { ", " };
            HeaderValue::try_from(format!("Bearer{realm}{separator}error=\"{error}\""))
                .expect("checked ASCII")
        };
        Self {
            missing: HeaderValue::try_from(format!("Bearer{realm}")).expect("checked ASCII"),
            invalid_token: with_error("invalid_token"),
            invalid_request: with_error("invalid_request"),
        }
    }

    pub(crate) fn reject(&self, kind: RejectionKind) -> SessionRejection {
        let challenge = match kind {
            RejectionKind::MissingToken => Some(self.missing.clone()),
            RejectionKind::InvalidToken => Some(self.invalid_token.clone()),
            RejectionKind::ConflictingTokens => Some(self.invalid_request.clone()),
            _ => None,
        };
        SessionRejection::new(kind, challenge)
    }
}
