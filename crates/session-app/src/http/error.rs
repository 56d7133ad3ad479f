//! The one error type of the HTTP API: every failure becomes
//! `{"error": {"code", "message"}}` with one status code, decided here.
//!
//! Every message is fixed text, a number, or a field name the API defines:
//! never text the client sent, which may be a token or hostile.

use std::borrow::Cow;

use axum::extract::rejection::PathRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use session_core::{StoreError, ValidationError};
use utoipa::ToSchema;

/// An API failure: a status, a stable machine-readable code and a human message.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: Cow<'static, str>,
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
    /// A stable code to branch on: `invalid_request`, `invalid_token`,
    /// `unauthorized`, `not_found`, `method_not_allowed`,
    /// `misdirected_request`, `payload_too_large`, `unsupported_media_type`,
    /// `not_ready`, `busy`, `unavailable` or `internal`.
    code: &'static str,
    /// A message for people. Never repeats what the client sent, other than
    /// a field name the API defines.
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    /// The status, code and message, for the fuzz targets, which check
    /// what a client would be told.
    #[cfg(feature = "fuzzing")]
    pub(crate) fn parts(&self) -> (StatusCode, &'static str, &str) {
        (self.status, self.code, &self.message)
    }

    /// 400: the request is malformed; the message names the field.
    pub(crate) fn invalid_request(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    /// 401: no valid API key.
    pub(crate) fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid API key is required: send `Authorization: Bearer <key>`",
        )
    }

    /// 421: without an API key, a request not addressed to a loopback name.
    /// The message does not repeat the name the request gave.
    pub(crate) fn misdirected() -> Self {
        Self::new(
            StatusCode::MISDIRECTED_REQUEST,
            "misdirected_request",
            "without an API key this service answers only requests addressed to localhost, \
             127.0.0.1 or [::1]; configure an API key to serve it under another name",
        )
    }

    /// 415: the body is not declared JSON. Does not repeat the type given.
    pub(crate) fn unsupported_media_type() -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "expected `Content-Type: application/json`",
        )
    }

    /// 413: the body is over [`MAX_BODY_BYTES`].
    pub(crate) fn payload_too_large() -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the request body is larger than {MAX_BODY_BYTES} bytes"),
        )
    }

    /// 404 for a route that does not exist.
    pub(crate) fn no_route() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "no such route")
    }

    /// 405 for a route that exists with another method.
    pub(crate) fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
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
        let mut response = (self.status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        match self.status {
            StatusCode::UNAUTHORIZED if self.code == "unauthorized" => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}

impl From<session_core::Error> for ApiError {
    fn from(err: session_core::Error) -> Self {
        use session_core::Error;
        match err {
            Error::InvalidToken => Self::new(
                StatusCode::UNAUTHORIZED,
                "invalid_token",
                "the session token is malformed, unknown or revoked",
            ),
            Error::NotReady => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_ready",
                "the session cache is still warming; retry shortly",
            ),
            Error::Busy => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                "the token could not be checked now; retry shortly, and do not treat this as \
                 logged out",
            ),
            Error::NotFound => Self::new(StatusCode::NOT_FOUND, "not_found", "no such session"),
            Error::Store(err) => err.into(),
            other => {
                tracing::error!(error = %other, "unexpected service error");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error",
                )
            }
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        if err.is_retryable() {
            tracing::warn!(error = %err, "session store unavailable");
            Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the session store is unavailable; nothing was changed, retry later",
            )
        } else {
            tracing::error!(error = %err, "session store failed");
            Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error",
            )
        }
    }
}

impl From<ValidationError> for ApiError {
    fn from(err: ValidationError) -> Self {
        Self::invalid_request(err.to_string())
    }
}

impl From<PathRejection> for ApiError {
    /// The only path parameters are UUIDs, parsed by the handlers; axum
    /// rejects a segment before that only when it does not decode to UTF-8.
    fn from(_: PathRejection) -> Self {
        Self::invalid_request("a path segment is not valid percent-encoded UTF-8")
    }
}

/// The largest request body accepted, in bytes. Requests here are a few hundred bytes.
pub const MAX_BODY_BYTES: usize = 16 * 1024;
