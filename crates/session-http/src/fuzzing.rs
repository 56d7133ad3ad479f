//! The decoding every handler runs on what a client sends, up to the call
//! into the service, for the fuzz targets in `fuzz/`: not an API.
//!
//! Each input goes through the same functions as in a request: the body
//! and query extractors of [`input`](crate::input), the request types'
//! `Deserialize` impls and their conversions into domain values.

use std::sync::OnceLock;

use axum::http::Uri;
use session_core::token::TokenHash;
use session_core::{AccountId, SessionId};

use utoipa::openapi::path::ParameterIn;
use utoipa::openapi::{RefOr, Schema};
use utoipa::{IntoParams, PartialSchema};

use crate::error::ErrorCode;
use crate::input::{parse_json, parse_query, path_id};
use crate::sessions::{
    CreateSessionRequest, ListParams, ResolveRequest, RevokeAllParams, RevokeParams,
};

/// A place a client's text is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// The JSON body of `POST /v1/sessions`.
    CreateBody,
    /// The JSON body of `POST /v1/sessions/resolve`.
    ResolveBody,
    /// The query string of `GET /v1/accounts/{account_id}/sessions`.
    ListQuery,
    /// The query string of `DELETE /v1/accounts/{account_id}/sessions`.
    RevokeAllQuery,
    /// The `{id}` of `/v1/sessions/{id}`, percent-decoded.
    SessionIdPath,
    /// The `{account_id}` of `/v1/accounts/{account_id}/sessions`, percent-decoded.
    AccountIdPath,
    /// The query string of `DELETE /v1/sessions/{id}`.
    RevokeQuery,
}

impl Input {
    /// Every input, in a fixed order, so a fuzzer can pick one by index.
    pub const ALL: [Self; 7] = [
        Self::CreateBody,
        Self::ResolveBody,
        Self::ListQuery,
        Self::RevokeAllQuery,
        Self::SessionIdPath,
        Self::AccountIdPath,
        Self::RevokeQuery,
    ];

    /// The names the API defines for this input: the only client-visible
    /// names an error about it may contain. Read from the same derives the
    /// OpenAPI document is built from (the request types' schemas and
    /// query parameters), so a field a route gains is known here at once.
    #[must_use]
    pub fn fields(self) -> &'static [&'static str] {
        static FIELDS: OnceLock<Vec<Vec<&'static str>>> = OnceLock::new();
        let all = FIELDS.get_or_init(|| Self::ALL.iter().map(|input| input.names()).collect());
        let index = Self::ALL
            .iter()
            .position(|input| *input == self)
            .unwrap_or(0);
        &all[index]
    }

    fn names(self) -> Vec<&'static str> {
        let query = |params: Vec<utoipa::openapi::path::Parameter>| {
            params
                .into_iter()
                .map(|param| &*Box::leak(param.name.into_boxed_str()))
                .collect()
        };
        let body = |schema: RefOr<Schema>| match schema {
            RefOr::T(Schema::Object(object)) => object
                .properties
                .into_keys()
                .map(|name| &*Box::leak(name.into_boxed_str()))
                .collect(),
            _ => Vec::new(),
        };
        let in_query = || Some(ParameterIn::Query);
        match self {
            Self::CreateBody => body(CreateSessionRequest::schema()),
            Self::ResolveBody => body(ResolveRequest::schema()),
            Self::ListQuery => query(ListParams::into_params(in_query)),
            Self::RevokeAllQuery => query(RevokeAllParams::into_params(in_query)),
            Self::RevokeQuery => query(RevokeParams::into_params(in_query)),
            Self::SessionIdPath => vec!["session_id in the path"],
            Self::AccountIdPath => vec!["account_id in the path"],
        }
    }
}

/// What the service would do with an input.
#[derive(Debug)]
pub enum Outcome {
    /// It passes every check and would reach the service.
    Accepted,
    /// It is refused with this answer.
    Rejected {
        /// The HTTP status.
        status: u16,
        /// The error code.
        code: &'static str,
        /// The error message.
        message: String,
    },
    /// It cannot reach this decoding at all (a query string that is not
    /// a valid URI, a path segment that is not UTF-8).
    Unreachable,
}

/// Decodes `bytes` as the handler reading `input` does.
#[must_use]
pub fn decode(input: Input, bytes: &[u8]) -> Outcome {
    let result = match input {
        Input::CreateBody => parse_json::<CreateSessionRequest>(bytes)
            .and_then(|request| request.into_parts().map(drop)),
        Input::ResolveBody => parse_json::<ResolveRequest>(bytes).and_then(|request| {
            // What `SessionService::resolve` does first, before any lookup.
            TokenHash::of_token_text(request.token())
                .map(drop)
                .map_err(|_| session_core::Error::InvalidToken.into())
        }),
        Input::ListQuery | Input::RevokeAllQuery | Input::RevokeQuery => {
            let Some(query) = query(bytes) else {
                return Outcome::Unreachable;
            };
            if input == Input::ListQuery {
                parse_query::<ListParams>(&query).and_then(|params| {
                    let scope = params.scope()?;
                    params.limit()?;
                    // Any account: a cursor is checked against the one in the path.
                    let account =
                        AccountId::new(uuid::Uuid::from_u128(1)).expect("not the nil UUID");
                    params.after(account, scope)?;
                    Ok(())
                })
            } else if input == Input::RevokeAllQuery {
                // In the handler's order: the reason, then the session kept.
                parse_query::<RevokeAllParams>(&query).and_then(|mut params| {
                    params.reason()?;
                    params.except().map(drop)
                })
            } else {
                parse_query::<RevokeParams>(&query).and_then(|params| params.reason().map(drop))
            }
        }
        Input::SessionIdPath | Input::AccountIdPath => {
            let Ok(segment) = std::str::from_utf8(bytes) else {
                return Outcome::Unreachable;
            };
            if input == Input::SessionIdPath {
                path_id::<SessionId>(segment).map(drop)
            } else {
                path_id::<AccountId>(segment).map(drop)
            }
        }
    };
    match result {
        Ok(()) => Outcome::Accepted,
        Err(err) => {
            let (status, code, message) = err.parts();
            Outcome::Rejected {
                status: status.as_u16(),
                code: match code {
                    ErrorCode::InvalidRequest => "invalid_request",
                    ErrorCode::InvalidToken => "invalid_token",
                    _ => "other",
                },
                message: message.to_owned(),
            }
        }
    }
}

/// The query string a request with `bytes` after its `?` would hand the
/// handler, if the request line is a valid URI at all.
fn query(bytes: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(bytes).ok()?;
    let uri: Uri = format!("/v1/accounts/a/sessions?{text}").parse().ok()?;
    Some(uri.query().unwrap_or_default().to_owned())
}

#[cfg(test)]
mod tests {
    use super::Input;

    #[test]
    fn each_input_knows_the_names_its_route_defines() {
        let names = |input: Input| {
            let mut names = input.fields().to_vec();
            names.sort_unstable();
            names
        };
        assert_eq!(
            names(Input::CreateBody),
            ["account_id", "ip", "label", "user_agent"]
        );
        assert_eq!(names(Input::ResolveBody), ["token"]);
        assert_eq!(
            names(Input::ListQuery),
            ["cursor", "include_revoked", "limit"]
        );
        assert_eq!(names(Input::RevokeAllQuery), ["except", "reason"]);
        assert_eq!(names(Input::RevokeQuery), ["reason"]);
    }
}
