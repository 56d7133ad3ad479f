//! The `/v1` session routes: thin handlers that extract, call one service
//! method, and render.

use std::fmt;
use std::net::IpAddr;

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use session_core::{
    AccountId, ClientMetadata, Label, ListScope, Session, SessionId, UserAgent, parse_ip,
};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::AppState;
use super::error::{ApiError, ErrorBody};
use super::input::{ApiJson, ApiQuery};

/// A session as the API shows it. Never includes the token or its hash.
#[derive(Serialize, ToSchema)]
pub(crate) struct SessionView<'a> {
    /// The session id (UUIDv7).
    id: Uuid,
    /// The account the session belongs to.
    account_id: Uuid,
    /// When the session was created (RFC 3339).
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    /// When the session was revoked (RFC 3339), or null while active.
    #[serde(with = "time::serde::rfc3339::option")]
    revoked_at: Option<OffsetDateTime>,
    /// The client's user agent, if given at creation.
    user_agent: Option<&'a str>,
    /// The client's IP address, if given at creation.
    #[schema(value_type = Option<String>)]
    ip: Option<IpAddr>,
    /// The session's label, if given at creation.
    label: Option<&'a str>,
}

impl<'a> From<&'a Session> for SessionView<'a> {
    fn from(session: &'a Session) -> Self {
        Self {
            id: *session.id.as_uuid(),
            account_id: *session.account_id.as_uuid(),
            created_at: session.created_at,
            revoked_at: session.revoked_at,
            user_agent: session.metadata.user_agent.as_ref().map(UserAgent::as_str),
            ip: session.metadata.ip,
            label: session.metadata.label.as_ref().map(Label::as_str),
        }
    }
}

/// One session.
#[derive(Serialize, ToSchema)]
pub(crate) struct SessionEnvelope<'a> {
    /// The session.
    session: SessionView<'a>,
}

/// An account's sessions, newest first.
#[derive(Serialize, ToSchema)]
pub(crate) struct SessionList<'a> {
    /// The sessions.
    sessions: Vec<SessionView<'a>>,
}

/// A new session for an account. Every field but `account_id` is optional.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateSessionRequest {
    /// The account to log in (a UUID owned by the host application).
    #[schema(format = Uuid)]
    account_id: String,
    /// The client's user agent, as sent. Whitespace runs become one space,
    /// the ends are trimmed, an empty value counts as absent, and anything
    /// past 512 bytes is cut off; other control characters are refused.
    user_agent: Option<String>,
    /// The client's IP address (IPv4 or IPv6).
    ip: Option<String>,
    /// A label for the session, such as a device name, at most 128 bytes.
    label: Option<String>,
}

/// A created session and its token. The only response that ever holds a token.
#[derive(Serialize, ToSchema)]
pub(crate) struct CreatedSession<'a> {
    /// The bearer token. Shown once: only its hash is stored.
    token: &'a str,
    /// The session.
    session: SessionView<'a>,
}

/// A token to resolve.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ResolveRequest {
    /// The session token, as handed to the client at creation.
    token: String,
}

impl fmt::Debug for ResolveRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ResolveRequest { token: <redacted> }")
    }
}

/// Options for listing an account's sessions.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListParams {
    /// Include revoked sessions (`true` or `false`, default `false`).
    include_revoked: Option<String>,
}

/// Options for revoking an account's sessions.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct RevokeAllParams {
    /// A session to keep ("log out everywhere else").
    #[param(format = Uuid)]
    except: Option<String>,
}

/// How many sessions a revoke-all revoked.
#[derive(Serialize, ToSchema)]
pub(crate) struct RevokedCount {
    /// Sessions revoked by this call.
    revoked: usize,
}

impl CreateSessionRequest {
    /// The account and the client metadata asked for, checked by the
    /// domain's rules; errors name the field, never its value.
    pub(crate) fn into_parts(self) -> Result<(AccountId, ClientMetadata), ApiError> {
        let account: AccountId = self.account_id.parse()?;
        let metadata = ClientMetadata {
            // Copied from the client's request by a gateway: normalised, not refused.
            user_agent: optional(self.user_agent, |agent| UserAgent::normalize(&agent))?.flatten(),
            ip: optional(self.ip, |ip| parse_ip(&ip))?,
            label: optional(self.label, Label::new)?,
        };
        Ok((account, metadata))
    }
}

impl ResolveRequest {
    /// The token's text, as the client sent it.
    pub(crate) fn token(&self) -> &str {
        &self.token
    }
}

impl ListParams {
    /// Which sessions to list.
    pub(crate) fn scope(&self) -> Result<ListScope, ApiError> {
        match self.include_revoked.as_deref() {
            None | Some("false") => Ok(ListScope::Active),
            Some("true") => Ok(ListScope::IncludeRevoked),
            Some(_) => Err(ApiError::invalid_request(
                "include_revoked: must be `true` or `false`",
            )),
        }
    }
}

impl RevokeAllParams {
    /// The session to keep, if any.
    pub(crate) fn except(self) -> Result<Option<SessionId>, ApiError> {
        self.except
            .map(|id| {
                id.parse::<SessionId>()
                    .map_err(|_| ApiError::invalid_request("except: must be a UUID"))
            })
            .transpose()
    }
}

fn optional<T, E>(
    value: Option<String>,
    parse: impl FnOnce(String) -> Result<T, E>,
) -> Result<Option<T>, E> {
    value.map(parse).transpose()
}

/// Renders a borrowed view as JSON right away, so no owned copy is made.
fn json(status: StatusCode, body: &impl Serialize) -> Response {
    (status, Json(body)).into_response()
}

/// Issue a session for an account.
#[utoipa::path(
    post, path = "/v1/sessions", tag = "sessions",
    request_body = CreateSessionRequest,
    responses(
        (status = 201, description = "Created; the token is shown only here", body = CreatedSession),
        (status = 400, description = "Invalid field", body = ErrorBody),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 503, description = "Store unavailable; nothing was created", body = ErrorBody),
    ),
    security(("api_key" = [])),
)]
pub(crate) async fn create_session(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<CreateSessionRequest>,
) -> Result<Response, ApiError> {
    let (account, metadata) = request.into_parts()?;
    let created = state
        .service()
        .create(account, metadata)
        .await
        .map_err(|err| state.failed("create", err))?;
    let body = CreatedSession {
        token: created.token.expose_secret(),
        session: SessionView::from(&*created.session),
    };
    Ok(json(StatusCode::CREATED, &body))
}

/// Resolve a token to its active session. The hot path: no database round-trip
/// on a single instance. Only `401 invalid_token` means "log the user out";
/// a 503 means retry.
#[utoipa::path(
    post, path = "/v1/sessions/resolve", tag = "sessions",
    request_body = ResolveRequest,
    responses(
        (status = 200, description = "The active session", body = SessionEnvelope),
        (status = 400, description = "Invalid body", body = ErrorBody),
        (status = 401, description = "`invalid_token`: malformed, unknown or revoked; or a missing API key", body = ErrorBody),
        (status = 503, description = "Retry after `Retry-After` seconds; never a reason to log the user out. \
`not_ready`: the cache is still warming. \
`busy`: with several instances, the token is not in this instance's cache and cache misses have \
spent their store-read budget, so it was not checked. \
`unavailable`: the store failed the read a miss needed", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait: 1"))),
    ),
    security(("api_key" = [])),
)]
pub(crate) async fn resolve_session(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<ResolveRequest>,
) -> Result<Response, ApiError> {
    let session = state.resolve(request.token()).await?;
    Ok(envelope(&session))
}

/// Read a session by id, active or revoked.
#[utoipa::path(
    get, path = "/v1/sessions/{id}", tag = "sessions",
    params(("id" = Uuid, Path, description = "Session id")),
    responses(
        (status = 200, description = "The session", body = SessionEnvelope),
        (status = 400, description = "Not a UUID", body = ErrorBody),
        (status = 404, description = "No such session", body = ErrorBody),
    ),
    security(("api_key" = [])),
)]
pub(crate) async fn get_session(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id: SessionId = id?.0.parse()?;
    let session = state
        .service()
        .get(id)
        .await
        .map_err(|err| state.failed("get", err))?;
    Ok(envelope(&session))
}

/// Revoke a session. Idempotent: revoking a revoked session is a success.
#[utoipa::path(
    delete, path = "/v1/sessions/{id}", tag = "sessions",
    params(("id" = Uuid, Path, description = "Session id")),
    responses(
        (status = 204, description = "Revoked now or before"),
        (status = 400, description = "Not a UUID", body = ErrorBody),
        (status = 404, description = "No such session", body = ErrorBody),
        (status = 503, description = "Store unavailable; nothing was revoked", body = ErrorBody),
    ),
    security(("api_key" = [])),
)]
pub(crate) async fn revoke_session(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let id: SessionId = id?.0.parse()?;
    state
        .service()
        .revoke(id)
        .await
        .map_err(|err| state.failed("revoke", err))?;
    Ok(StatusCode::NO_CONTENT)
}

/// List an account's sessions, newest first.
#[utoipa::path(
    get, path = "/v1/accounts/{account_id}/sessions", tag = "accounts",
    params(("account_id" = Uuid, Path, description = "Account id"), ListParams),
    responses(
        (status = 200, description = "The sessions, newest first", body = SessionList),
        (status = 400, description = "Invalid parameter", body = ErrorBody),
    ),
    security(("api_key" = [])),
)]
pub(crate) async fn list_sessions(
    State(state): State<AppState>,
    account: Result<Path<String>, PathRejection>,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<Response, ApiError> {
    let account: AccountId = account?.0.parse()?;
    let scope = params.scope()?;
    let sessions = state
        .service()
        .list(account, scope)
        .await
        .map_err(|err| state.failed("list", err))?;
    let body = SessionList {
        sessions: sessions.iter().map(SessionView::from).collect(),
    };
    Ok(json(StatusCode::OK, &body))
}

/// Revoke every active session of an account, optionally except one.
#[utoipa::path(
    delete, path = "/v1/accounts/{account_id}/sessions", tag = "accounts",
    params(("account_id" = Uuid, Path, description = "Account id"), RevokeAllParams),
    responses(
        (status = 200, description = "How many sessions were revoked", body = RevokedCount),
        (status = 400, description = "Invalid parameter", body = ErrorBody),
        (status = 503, description = "Store unavailable; nothing was revoked", body = ErrorBody),
    ),
    security(("api_key" = [])),
)]
pub(crate) async fn revoke_account_sessions(
    State(state): State<AppState>,
    account: Result<Path<String>, PathRejection>,
    ApiQuery(params): ApiQuery<RevokeAllParams>,
) -> Result<Json<RevokedCount>, ApiError> {
    let account: AccountId = account?.0.parse()?;
    let except = params.except()?;
    let revoked = state
        .service()
        .revoke_all(account, except)
        .await
        .map_err(|err| state.failed("revoke_all", err))?;
    Ok(Json(RevokedCount { revoked }))
}

fn envelope(session: &Session) -> Response {
    json(
        StatusCode::OK,
        &SessionEnvelope {
            session: SessionView::from(session),
        },
    )
}
