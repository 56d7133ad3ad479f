//! The one error type of the HTTP API: every failure becomes
//! `{"error": {"code", "message"}}` with one status code, decided here.
//!
//! Every message is fixed text, a number, or a field name the API defines:
//! never text the client sent, which may be a token or hostile.
//!
//! Building an error and turning it into a response log nothing. An error
//! whose cause the client is not told (a store failure, a bug) keeps that
//! cause as a [`Cause`] in the response's extensions, and the request layer
//! (`wrap.rs`) logs it, once, in the request's span, beside the request's
//! own line.

use std::borrow::Cow;
use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use session_core::port::store::StoreError;
use session_core::validation::ValidationError;
use utoipa::ToSchema;

/// An API failure: a stable machine-readable code, which decides the status,
/// and a human message; for a failure that is not the client's, its cause.
#[derive(Debug)]
pub(crate) struct ApiError {
    code: ErrorCode,
    message: Cow<'static, str>,
    cause: Option<Cause>,
    /// The `WWW-Authenticate` challenge, when it is not the plain `Bearer`
    /// of a 401.
    challenge: Option<&'static str>,
}

/// Why an answer failed when the client is told only that it did: what the
/// request layer logs for it, and nothing else does. Rides in the
/// response's extensions from `into_response` to that layer, which takes it
/// out, so it never leaves the router.
#[derive(Debug, Clone)]
pub(crate) struct Cause {
    /// What failed, as the log line's message.
    pub(crate) what: &'static str,
    /// `warn` for what retrying may fix (the client got 503), `error` for
    /// the rest (500).
    pub(crate) retryable: bool,
    /// The underlying error, which may name hosts and users: for the log
    /// only, never for a body.
    pub(crate) error: Arc<dyn std::error::Error + Send + Sync>,
}

impl Cause {
    fn new(
        what: &'static str,
        retryable: bool,
        error: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self {
            what,
            retryable,
            error: Arc::new(error),
        }
    }
}

/// The stable code of every error the API answers, serialised in snake_case
/// (`invalid_request`, ...). The one place a code is spelled: handlers,
/// middleware and tests name a variant, never a string, and each code has
/// one HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// 400: a malformed body, query, path or header; the message names the field.
    InvalidRequest,
    /// 400 on `PUT /v1/not-before`: the mark asked for is past the
    /// service's clock, which would refuse sessions not yet created;
    /// nothing was changed.
    NotBeforeInFuture,
    /// 401 on resolve: the session token is malformed, unknown or revoked.
    /// The only answer that means "log the user out".
    InvalidToken,
    /// 401: a missing or wrong API key.
    Unauthorized,
    /// 401 from forward auth: the request presents no session token.
    MissingToken,
    /// 403: a valid API key without the scope the route needs (`read`,
    /// `events` or `write`); `WWW-Authenticate` names it, as RFC 6750
    /// §3.1 says.
    InsufficientScope,
    /// 404: no such session, or no such route.
    NotFound,
    /// 405: the route exists with other methods.
    MethodNotAllowed,
    /// 421: without an API key, a request not addressed to a loopback name.
    MisdirectedRequest,
    /// 409 on create: the account holds the most active sessions it may
    /// (session-app's `--max-sessions-per-account`) and the policy is
    /// `refuse`; nothing was changed. Show it to the user: a session must be
    /// revoked before another login.
    SessionLimitReached,
    /// 413: the body is over [`MAX_BODY_BYTES`].
    PayloadTooLarge,
    /// 415: the body is not declared JSON.
    UnsupportedMediaType,
    /// 503: the session cache is still warming.
    NotReady,
    /// 503: the store is unavailable; nothing was changed.
    Unavailable,
    /// 503: the service did not answer within its time limit (session-app's
    /// `--request-timeout`). Unlike `unavailable`, a write may still take
    /// effect: retrying a create may leave a session whose token no one got.
    Timeout,
    /// 500: a failure retrying will not fix; details are in the log.
    Internal,
    /// 410 from the events feed: the cursor is older than the feed's
    /// retention, of another database (a new one, or a restored backup), or
    /// past its head. List again, then follow from a fresh start.
    CursorExpired,
    /// 503 from the events feed: as many subscribers as it serves are
    /// following it; retry after `Retry-After`.
    TooManySubscribers,
}

impl ErrorCode {
    /// The HTTP status every answer with this code has.
    #[must_use]
    pub const fn status(self) -> StatusCode {
        match self {
            Self::InvalidRequest | Self::NotBeforeInFuture => StatusCode::BAD_REQUEST,
            Self::InvalidToken | Self::Unauthorized | Self::MissingToken => {
                StatusCode::UNAUTHORIZED
            }
            Self::InsufficientScope => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::MisdirectedRequest => StatusCode::MISDIRECTED_REQUEST,
            Self::SessionLimitReached => StatusCode::CONFLICT,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::NotReady | Self::Unavailable | Self::Timeout | Self::TooManySubscribers => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::CursorExpired => StatusCode::GONE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// The JSON body of every error response.
#[derive(Serialize, ToSchema)]
pub(crate) struct ErrorBody {
    /// The error.
    error: ErrorDetail,
}

/// What went wrong.
#[derive(Serialize, ToSchema)]
pub(crate) struct ErrorDetail {
    /// A stable code to branch on.
    code: ErrorCode,
    /// A message for people. Never repeats what the client sent, other than
    /// a field name the API defines.
    message: String,
}

impl ApiError {
    fn new(code: ErrorCode, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            code,
            message: message.into(),
            cause: None,
            challenge: None,
        }
    }

    /// A 500 `internal` whose cause only the log is told.
    fn internal(cause: Cause) -> Self {
        Self {
            cause: Some(cause),
            ..Self::new(ErrorCode::Internal, "internal error")
        }
    }

    /// The status, code and message, for the fuzz targets and unit tests,
    /// which check what a client would be told.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn parts(&self) -> (StatusCode, ErrorCode, &str) {
        (self.code.status(), self.code, &self.message)
    }

    /// 400: the request is malformed; the message names the field.
    pub(crate) fn invalid_request(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::InvalidRequest, message)
    }

    /// 400: the id named `name` (the API's name for it) in the path is not
    /// a UUID. Never repeats the segment.
    pub(crate) fn invalid_path_id(name: &'static str) -> Self {
        Self::invalid_request(format!("{name} in the path: must be a UUID"))
    }

    /// 401: no valid API key.
    pub(crate) fn unauthorized() -> Self {
        Self::new(
            ErrorCode::Unauthorized,
            "a valid API key is required: send `Authorization: Bearer <key>`",
        )
    }

    /// 403: the key is valid but lacks `scope`; `challenge` is RFC 6750's
    /// `insufficient_scope` naming it.
    pub(crate) fn insufficient_scope(scope: &'static str, challenge: &'static str) -> Self {
        Self {
            challenge: Some(challenge),
            ..Self::new(
                ErrorCode::InsufficientScope,
                format!("this API key lacks the `{scope}` scope this route needs"),
            )
        }
    }

    /// 401 from forward auth: the request presents no session token.
    pub(crate) fn missing_token() -> Self {
        Self::new(
            ErrorCode::MissingToken,
            "no session token: send `Authorization: Bearer <token>`, the session cookie, or \
             `X-Session-Token`",
        )
    }

    /// 421: without an API key, a request not addressed to a loopback name.
    /// The message does not repeat the name the request gave.
    pub(crate) fn misdirected() -> Self {
        Self::new(
            ErrorCode::MisdirectedRequest,
            "without an API key this service answers only requests addressed to localhost, \
             127.0.0.1 or [::1]; configure an API key to serve it under another name",
        )
    }

    /// 415: the body is not declared JSON. Does not repeat the type given.
    pub(crate) fn unsupported_media_type() -> Self {
        Self::new(
            ErrorCode::UnsupportedMediaType,
            "expected `Content-Type: application/json`",
        )
    }

    /// 413: the body is over [`MAX_BODY_BYTES`].
    pub(crate) fn payload_too_large() -> Self {
        Self::new(
            ErrorCode::PayloadTooLarge,
            format!("the request body is larger than {MAX_BODY_BYTES} bytes"),
        )
    }

    /// 404 for a route that does not exist.
    pub(crate) fn no_route() -> Self {
        Self::new(ErrorCode::NotFound, "no such route")
    }

    /// 410: the events feed cannot answer from this cursor.
    pub(crate) fn cursor_expired() -> Self {
        Self::new(
            ErrorCode::CursorExpired,
            "the event id is older than the feed's retention, of another database, or past its \
             head: list the sessions again, then follow the feed from a fresh start",
        )
    }

    /// 503: the events feed serves as many subscribers as it may.
    pub(crate) fn too_many_subscribers() -> Self {
        Self::new(
            ErrorCode::TooManySubscribers,
            "the events feed has as many subscribers as it serves; retry later",
        )
    }

    /// 404: this service keeps no events feed.
    pub(crate) fn not_before_in_future() -> Self {
        Self::new(
            ErrorCode::NotBeforeInFuture,
            "not_before: must not be in the future; omit it for now",
        )
    }

    pub(crate) fn no_events_feed() -> Self {
        Self::new(ErrorCode::NotFound, "this service keeps no events feed")
    }

    /// The JSON body this error is answered with, for a stream that can no
    /// longer change its status.
    pub(crate) fn body_json(&self) -> String {
        serde_json::to_string(&ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message.clone().into_owned(),
            },
        })
        .unwrap_or_default()
    }

    /// 405 for a route that exists with another method.
    pub(crate) fn method_not_allowed() -> Self {
        Self::new(
            ErrorCode::MethodNotAllowed,
            "this route does not accept this method",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message.into_owned(),
            },
        };
        let status = self.code.status();
        let mut response = (status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        if let Some(challenge) = self.challenge {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        } else if matches!(self.code, ErrorCode::Unauthorized | ErrorCode::MissingToken) {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if self.code == ErrorCode::TooManySubscribers {
            // A subscriber stays for long: a slot frees slowly.
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        } else if status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if let Some(cause) = self.cause {
            response.extensions_mut().insert(cause);
        }
        response
    }
}

impl From<session_core::Error> for ApiError {
    fn from(err: session_core::Error) -> Self {
        use session_core::Error;
        match err {
            Error::InvalidToken => Self::new(
                ErrorCode::InvalidToken,
                "the session token is malformed, unknown or revoked",
            ),
            Error::NotReady => Self::new(
                ErrorCode::NotReady,
                "the session cache is still warming; retry shortly",
            ),
            Error::NotFound => Self::new(ErrorCode::NotFound, "no such session"),
            Error::SessionLimitReached => Self::new(
                ErrorCode::SessionLimitReached,
                "the account holds the most sessions it may; revoke one before creating another",
            ),
            Error::Store(err) => err.into(),
            other => Self::internal(Cause::new("unexpected service error", false, other)),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        if err.is_retryable() {
            Self {
                cause: Some(Cause::new("session store unavailable", true, err)),
                ..Self::new(
                    ErrorCode::Unavailable,
                    "the session store is unavailable; nothing was changed, retry later",
                )
            }
        } else {
            Self::internal(Cause::new("session store failed", false, err))
        }
    }
}

impl From<ValidationError> for ApiError {
    fn from(err: ValidationError) -> Self {
        Self::invalid_request(err.to_string())
    }
}

impl From<PathRejection> for ApiError {
    /// A rejection other than a malformed segment (which
    /// `ApiPath` answers itself): a handler asking
    /// for a parameter its route lacks, a bug here rather than a bad request.
    fn from(rejection: PathRejection) -> Self {
        Self::internal(Cause::new(
            "path parameters do not match the route",
            false,
            rejection,
        ))
    }
}

/// The answer to a request its server gave up on: 503 `timeout`, with
/// `Retry-After: 1` and `Cache-Control: no-store`, in the body every error
/// has. For a server that bounds a request's time outside the router and
/// drops the router's future when the bound passes, as session-app's accept
/// loop does at `--request-timeout`; the router itself never answers it.
#[must_use]
pub fn timeout_response() -> Response {
    let mut response = ApiError::new(
        ErrorCode::Timeout,
        "the service did not answer in time; a write may still take effect. Retry later",
    )
    .into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The largest request body accepted, in bytes. Requests here are a few hundred bytes.
pub const MAX_BODY_BYTES: usize = 16 * 1024;
