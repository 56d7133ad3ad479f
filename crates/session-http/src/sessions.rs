//! The `/v1` session routes: thin handlers that extract, call one service
//! method, and render.

use std::fmt;
use std::net::IpAddr;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use session_core::port::cache::CacheMode;
use session_core::port::store::SeenAt;
use session_core::validation::parse_ip;
use session_core::{
    AccountId, ClientMetadata, Error, Label, ListPosition, ListScope, PageLimit, PageRequest,
    RevocationReason, Revoker, Session, SessionId, SessionIdentity, SessionService, UserAgent,
};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::ApiState;
use crate::auth::Caller;
use crate::cursor;
use crate::error::{ApiError, ErrorBody};
use crate::input::{ApiJson, ApiPath, ApiQuery};

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
            revoked_at: session.revoked_at(),
            user_agent: session.metadata.user_agent.as_ref().map(UserAgent::as_str),
            ip: session.metadata.ip,
            label: session.metadata.label.as_ref().map(Label::as_str),
        }
    }
}

/// What resolve and forward auth answer about a session: its identity in
/// every cache mode, and the rest of its record in full mode only. Which
/// one depends on the service's cache mode alone, never on what a cache
/// happens to hold: with `--cache compact` the body is exactly `id` and
/// `account_id`, so the answer needs no store read.
#[derive(Serialize, ToSchema)]
pub(crate) struct ResolvedView<'a> {
    /// The session id (UUIDv7).
    id: Uuid,
    /// The account the session belongs to.
    account_id: Uuid,
    /// When the session was created (RFC 3339). Absent in compact mode.
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    #[schema(value_type = String, format = DateTime)]
    created_at: Option<OffsetDateTime>,
    /// Null (a resolved session is active). Absent in compact mode.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "null_or_rfc3339"
    )]
    #[schema(value_type = Option<String>, format = DateTime)]
    revoked_at: Option<Option<OffsetDateTime>>,
    /// The client's user agent, if given at creation. Absent in compact mode.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    user_agent: Option<Option<&'a str>>,
    /// The client's IP address, if given at creation. Absent in compact mode.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    ip: Option<Option<IpAddr>>,
    /// The session's label, if given at creation. Absent in compact mode.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    label: Option<Option<&'a str>>,
}

/// A present field that may be null: the instant as RFC 3339, or null.
fn null_or_rfc3339<S: serde::Serializer>(
    value: &Option<Option<OffsetDateTime>>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    time::serde::rfc3339::option::serialize(&value.flatten(), serializer)
}

impl<'a> ResolvedView<'a> {
    /// A full-mode answer: the whole record.
    fn full(session: &'a Session) -> Self {
        let view = SessionView::from(session);
        Self {
            id: view.id,
            account_id: view.account_id,
            created_at: Some(view.created_at),
            revoked_at: Some(view.revoked_at),
            user_agent: Some(view.user_agent),
            ip: Some(view.ip),
            label: Some(view.label),
        }
    }

    /// A compact-mode answer: the identity alone.
    fn identity(identity: &SessionIdentity) -> Self {
        Self {
            id: *identity.id.as_uuid(),
            account_id: *identity.account_id.as_uuid(),
            created_at: None,
            revoked_at: None,
            user_agent: None,
            ip: None,
            label: None,
        }
    }
}

/// One resolved session.
#[derive(Serialize, ToSchema)]
pub(crate) struct ResolvedEnvelope<'a> {
    /// The session: every field in full cache mode, `id` and `account_id`
    /// only in compact mode.
    session: ResolvedView<'a>,
}

impl ResolvedEnvelope<'_> {
    /// The body as JSON: exactly the bytes `serde_json` writes for the
    /// derived `Serialize` (a test holds the two equal), written by hand
    /// because resolve and forward auth answer it on every request: ids,
    /// times and addresses need no escaping and are written straight from
    /// stack buffers, with no escaping scan and no `String` per time; only
    /// the client's own text (user agent, label) goes through `serde_json`.
    pub(crate) fn to_json(&self) -> Vec<u8> {
        let view = &self.session;
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(br#"{"session":{"id":"#);
        push_uuid(&mut out, &view.id);
        out.extend_from_slice(br#","account_id":"#);
        push_uuid(&mut out, &view.account_id);
        if let Some(created_at) = view.created_at {
            out.extend_from_slice(br#","created_at":"#);
            push_time(&mut out, created_at);
        }
        if let Some(revoked_at) = view.revoked_at {
            out.extend_from_slice(br#","revoked_at":"#);
            match revoked_at {
                Some(revoked_at) => push_time(&mut out, revoked_at),
                None => out.extend_from_slice(b"null"),
            }
        }
        if let Some(user_agent) = view.user_agent {
            out.extend_from_slice(br#","user_agent":"#);
            push_text(&mut out, user_agent);
        }
        if let Some(ip) = view.ip {
            out.extend_from_slice(br#","ip":"#);
            match ip {
                // Digits, dots, colons and hex: nothing JSON escapes.
                Some(ip) => {
                    use std::io::Write as _;
                    // Writing to a `Vec` cannot fail.
                    let _ = write!(out, "\"{ip}\"");
                }
                None => out.extend_from_slice(b"null"),
            }
        }
        if let Some(label) = view.label {
            out.extend_from_slice(br#","label":"#);
            push_text(&mut out, label);
        }
        out.extend_from_slice(b"}}");
        out
    }
}

/// A UUID as a JSON string, hyphenated in lower case as its `Serialize` writes it.
fn push_uuid(out: &mut Vec<u8>, id: &Uuid) {
    out.push(b'"');
    out.extend_from_slice(
        id.hyphenated()
            .encode_lower(&mut Uuid::encode_buffer())
            .as_bytes(),
    );
    out.push(b'"');
}

/// An instant as a JSON string in RFC 3339, as `time::serde::rfc3339`
/// writes it, formatted on the stack. `null` for an instant RFC 3339
/// cannot hold (a year past 9999), which no stored session has: the domain
/// refuses them.
fn push_time(out: &mut Vec<u8>, at: OffsetDateTime) {
    // The longest RFC 3339 `time` writes: `-0001-01-01T00:00:00.123456789+00:00`
    // cannot occur (years 0 to 9999 only), so 35 bytes hold any.
    let mut buf = [0_u8; 40];
    let mut cursor = &mut buf[..];
    let capacity = cursor.len();
    match at.format_into(&mut cursor, &time::format_description::well_known::Rfc3339) {
        Ok(_) => {
            let written = capacity - cursor.len();
            out.push(b'"');
            out.extend_from_slice(&buf[..written]);
            out.push(b'"');
        }
        Err(_) => out.extend_from_slice(b"null"),
    }
}

/// The client's text (or null) as a JSON string, escaped by `serde_json`.
fn push_text(out: &mut Vec<u8>, text: Option<&str>) {
    match text {
        // Writing a string to a `Vec` cannot fail.
        Some(text) => drop(serde_json::to_writer(&mut *out, text)),
        None => out.extend_from_slice(b"null"),
    }
}

/// A session as read from the store by `GET` and list: with its last-seen
/// time and why it was revoked.
#[derive(Serialize, ToSchema)]
pub(crate) struct StoredSessionView<'a> {
    #[serde(flatten)]
    session: SessionView<'a>,
    /// The start of the minute the session was last resolved in (RFC 3339),
    /// as last written to the store (the service writes these every
    /// `--last-seen-flush-interval`, so up to that much behind). Null when it
    /// was never seen while last-seen activity was on, or when it is off.
    #[serde(with = "time::serde::rfc3339::option")]
    last_seen_at: Option<OffsetDateTime>,
    /// Why the session was revoked, or null while active. One of `logout`,
    /// `admin`, `idle`, `limit`, or a reason the caller named for its own
    /// flow: a lowercase identifier of at most 32 bytes. Also null for a
    /// session revoked before reasons were recorded.
    #[schema(value_type = Option<String>, pattern = "^[a-z][a-z0-9_]{0,31}$", min_length = 1, max_length = 32)]
    revocation_reason: Option<&'a str>,
    /// The name of the API key that revoked the session (`default` for a
    /// key configured without a name), or null: while active, for a
    /// revocation no key made (an eviction for the per-account limit, the
    /// API without keys, a host's own call) or made before this was
    /// recorded.
    #[schema(value_type = Option<String>, pattern = "^[a-z][a-z0-9_]{0,31}$", min_length = 1, max_length = 32)]
    revoked_by: Option<&'a str>,
}

impl<'a> StoredSessionView<'a> {
    fn new(session: &'a Session, seen: &[SeenAt]) -> Self {
        Self {
            session: SessionView::from(session),
            revocation_reason: session.revocation_reason().map(RevocationReason::as_str),
            revoked_by: session.revoked_by().map(Revoker::as_str),
            last_seen_at: seen
                .iter()
                .find(|mark| mark.id == session.id)
                .map(|mark| mark.at),
        }
    }
}

/// One session as read from the store.
#[derive(Serialize, ToSchema)]
pub(crate) struct StoredSessionEnvelope<'a> {
    /// The session.
    session: StoredSessionView<'a>,
}

/// One page of an account's sessions, newest first.
#[derive(Serialize, ToSchema)]
pub(crate) struct SessionList<'a> {
    /// The sessions of this page.
    sessions: Vec<StoredSessionView<'a>>,
    /// Present when more sessions follow: pass it as `cursor`, with the
    /// same `include_revoked`, for the next page. Opaque.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<String>,
}

/// A new session for an account. Every field but `account_id` is optional.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateSessionRequest {
    /// The account to log in (a UUID owned by the host application; not
    /// the nil UUID).
    #[schema(format = Uuid, pattern = r"^(?!0{8}-0{4}-0{4}-0{4}-0{12}$)[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")]
    account_id: String,
    /// The client's user agent, as sent. Whitespace runs (tabs and line
    /// breaks included) become one space, the ends are trimmed, an empty
    /// value counts as absent, and anything past 512 bytes is cut off;
    /// control characters that are not whitespace are refused.
    #[schema(pattern = r"^[^\u0000-\u0008\u000E-\u001F\u007F-\u0084\u0086-\u009F]*$")]
    user_agent: Option<String>,
    /// The client's IP address (IPv4 or IPv6).
    #[schema(schema_with = ip_schema)]
    ip: Option<String>,
    /// A label for the session, such as a device name: 1 to 128 bytes of
    /// UTF-8 without control characters.
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$"
    )]
    label: Option<String>,
}

/// An IPv4 or IPv6 address, or null.
fn ip_schema() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, OneOfBuilder, SchemaFormat, Type};
    let address = |format| {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(format)))
    };
    OneOfBuilder::new()
        .item(address(KnownFormat::Ipv4))
        .item(address(KnownFormat::Ipv6))
        .item(ObjectBuilder::new().schema_type(Type::Null))
        .description(Some("The client's IP address (IPv4 or IPv6)."))
        .build()
        .into()
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
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListParams {
    /// Include revoked sessions (`true` or `false`, default `false`).
    #[param(value_type = Option<bool>)]
    include_revoked: Option<String>,
    /// The most sessions in the page: 1 to 200, default 50.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 200)]
    limit: Option<String>,
    /// Where the page starts: the `next_cursor` of the previous page, from
    /// the same account and `include_revoked`. Absent or empty for the
    /// first page.
    cursor: Option<String>,
}

/// Options for revoking one session.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct RevokeParams {
    /// Why the session is revoked (default `logout`): `logout`, `admin`,
    /// `idle`, `limit`, or a reason of the caller's own, a lowercase
    /// identifier (a letter, then up to 31 letters, digits or `_`).
    #[param(pattern = "^[a-z][a-z0-9_]{0,31}$", min_length = 1, max_length = 32)]
    reason: Option<String>,
}

/// Options for revoking an account's sessions.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct RevokeAllParams {
    /// A session to keep ("log out everywhere else").
    #[param(format = Uuid)]
    except: Option<String>,
    /// Why the sessions are revoked (default `logout`): `logout`, `admin`,
    /// `idle`, `limit`, or a reason of the caller's own, a lowercase
    /// identifier (a letter, then up to 31 letters, digits or `_`).
    #[param(pattern = "^[a-z][a-z0-9_]{0,31}$", min_length = 1, max_length = 32)]
    reason: Option<String>,
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

    /// How many sessions the page may hold.
    pub(crate) fn limit(&self) -> Result<PageLimit, ApiError> {
        match &self.limit {
            None => Ok(PageLimit::DEFAULT),
            Some(limit) => limit.parse().ok().and_then(PageLimit::new).ok_or_else(|| {
                ApiError::invalid_request(format!(
                    "limit: must be a whole number from 1 to {}",
                    PageLimit::MAX.get()
                ))
            }),
        }
    }

    /// Where the page starts: the position the cursor names, which must
    /// have been handed out for this account and scope. An empty `cursor=`
    /// is no cursor, the first page: the schema allows the empty string,
    /// and a client that fills in a template (`?cursor={next}`) sends it.
    pub(crate) fn after(
        &self,
        account: AccountId,
        scope: ListScope,
    ) -> Result<Option<ListPosition>, ApiError> {
        self.cursor
            .as_deref()
            .filter(|text| !text.is_empty())
            .map(|text| cursor::decode(text, account, scope))
            .transpose()
    }
}

/// The reason a revoke names, `logout` when it names none. A refusal says
/// which rule the text breaks, never the text.
fn revocation_reason(reason: Option<String>) -> Result<RevocationReason, ApiError> {
    reason.map_or(Ok(RevocationReason::LOGOUT), |text| {
        Ok(RevocationReason::new(text)?)
    })
}

impl RevokeParams {
    /// Why the session is revoked.
    pub(crate) fn reason(self) -> Result<RevocationReason, ApiError> {
        revocation_reason(self.reason)
    }
}

impl RevokeAllParams {
    /// Why the sessions are revoked.
    pub(crate) fn reason(&mut self) -> Result<RevocationReason, ApiError> {
        revocation_reason(self.reason.take())
    }

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
        (status = 409, description = "`session_limit_reached`: the account holds the most active \
sessions it may (`--max-sessions-per-account` with `--session-limit-policy refuse`); nothing was \
created. Show it to the user", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 503, description = "Store unavailable; nothing was created", body = ErrorBody),
    ),
    security(("api_key" = [])),
)]
pub(crate) async fn create_session(
    State(state): State<ApiState>,
    ApiJson(request): ApiJson<CreateSessionRequest>,
) -> Result<Response, ApiError> {
    let (account, metadata) = request.into_parts()?;
    let created = state
        .service()
        .create(account, metadata)
        .await
        .map_err(ApiError::from)?;
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
        (status = 200, description = "The active session. With a full cache (`--cache map`, the \
default, or `moka`) every field of the session; with `--cache compact`, exactly `id` and `account_id`, \
whatever the bounded record cache holds (`GET /v1/sessions/{id}` has the rest)", body = ResolvedEnvelope),
        (status = 400, description = "Invalid body", body = ErrorBody),
        (status = 401, description = "`invalid_token`: malformed, unknown or revoked; or a missing API key", body = ErrorBody),
        (status = 503, description = "Retry after `Retry-After` seconds; never a reason to log the user out. \
`not_ready`: the cache is still warming. \
`unavailable`: with several instances, the token is not in this instance's cache and the change \
log could not be read in time to decide it", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait: 1"))),
    ),
    security(("api_key" = [])),
)]
pub(crate) async fn resolve_session(
    State(state): State<ApiState>,
    ApiJson(request): ApiJson<ResolveRequest>,
) -> Result<Response, ApiError> {
    let (_, answer) = resolved(state.service(), request.token()).await?;
    Ok(answer)
}

/// Read a session by id, active or revoked.
#[utoipa::path(
    get, path = "/v1/sessions/{id}", tag = "sessions",
    params(("id" = Uuid, Path, description = "Session id")),
    responses(
        (status = 200, description = "The session, with when it was last seen", body = StoredSessionEnvelope),
        (status = 400, description = "Not a UUID", body = ErrorBody),
        (status = 404, description = "No such session", body = ErrorBody),
    ),
    security(("api_key" = [])),
)]
pub(crate) async fn get_session(
    State(state): State<ApiState>,
    ApiPath(id): ApiPath<SessionId>,
) -> Result<Response, ApiError> {
    let session = state.service().get(id).await.map_err(ApiError::from)?;
    let seen = state
        .service()
        .last_seen(&[id])
        .await
        .map_err(ApiError::from)?;
    let body = StoredSessionEnvelope {
        session: StoredSessionView::new(&session, &seen),
    };
    Ok(json(StatusCode::OK, &body))
}

/// Revoke a session, recording why. Idempotent: revoking a revoked session
/// is a success, and keeps its first time and reason.
#[utoipa::path(
    delete, path = "/v1/sessions/{id}", tag = "sessions",
    params(("id" = Uuid, Path, description = "Session id"), RevokeParams),
    responses(
        (status = 204, description = "Revoked now or before"),
        (status = 400, description = "Not a UUID, or an invalid parameter", body = ErrorBody),
        (status = 404, description = "No such session", body = ErrorBody),
        (status = 503, description = "Store unavailable; nothing was revoked", body = ErrorBody),
    ),
    security(("api_key" = [])),
)]
pub(crate) async fn revoke_session(
    State(state): State<ApiState>,
    ApiPath(id): ApiPath<SessionId>,
    ApiQuery(params): ApiQuery<RevokeParams>,
    caller: Option<Extension<Caller>>,
) -> Result<StatusCode, ApiError> {
    let reason = params.reason()?;
    state
        .service()
        .revoke_as(id, reason, caller.map(|Extension(Caller(name))| name))
        .await
        .map_err(ApiError::from)?;
    Ok(StatusCode::NO_CONTENT)
}

/// List an account's sessions, newest first, a page at a time.
#[utoipa::path(
    get, path = "/v1/accounts/{account_id}/sessions", tag = "accounts",
    params(("account_id" = Uuid, Path, description = "Account id"), ListParams),
    responses(
        (status = 200, description = "A page of sessions, newest first; `next_cursor` when more follow", body = SessionList),
        (status = 400, description = "Invalid parameter or cursor", body = ErrorBody),
    ),
    security(("api_key" = [])),
)]
pub(crate) async fn list_sessions(
    State(state): State<ApiState>,
    ApiPath(account): ApiPath<AccountId>,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<Response, ApiError> {
    let scope = params.scope()?;
    let limit = params.limit()?;
    let after = params.after(account, scope)?;
    let page = state
        .service()
        .list(account, scope, PageRequest { after, limit })
        .await
        .map_err(ApiError::from)?;
    let ids: Vec<SessionId> = page.sessions.iter().map(|session| session.id).collect();
    let seen = state
        .service()
        .last_seen(&ids)
        .await
        .map_err(ApiError::from)?;
    let body = SessionList {
        sessions: page
            .sessions
            .iter()
            .map(|session| StoredSessionView::new(session, &seen))
            .collect(),
        next_cursor: page
            .next
            .map(|position| cursor::encode(account, scope, position)),
    };
    Ok(json(StatusCode::OK, &body))
}

/// Revoke every active session of an account, optionally except one,
/// recording why. Sessions revoked before keep their time and reason.
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
    State(state): State<ApiState>,
    ApiPath(account): ApiPath<AccountId>,
    ApiQuery(mut params): ApiQuery<RevokeAllParams>,
    caller: Option<Extension<Caller>>,
) -> Result<Json<RevokedCount>, ApiError> {
    let reason = params.reason()?;
    let except = params.except()?;
    let by = caller.map(|Extension(Caller(name))| name);
    let revoked = state
        .service()
        .revoke_all_as(account, except, reason, by)
        .await
        .map_err(ApiError::from)?;
    Ok(Json(RevokedCount { revoked }))
}

/// Resolves a token and renders the 200 answer resolve and forward auth
/// give: the whole record with a full cache (in memory, never the store),
/// the identity alone with a compact one. session-core counts the resolve's
/// outcome, so nothing is counted here.
pub(crate) async fn resolved(
    service: &SessionService,
    token: &str,
) -> Result<(SessionIdentity, Response), Error> {
    let identity = service.resolve(token).await?;
    let body = match service.cache_mode() {
        CacheMode::Full => {
            let session = service.session(&identity).await?;
            ResolvedEnvelope {
                session: ResolvedView::full(&session),
            }
            .to_json()
        }
        CacheMode::Compact => ResolvedEnvelope {
            session: ResolvedView::identity(&identity),
        }
        .to_json(),
    };
    let answer = (
        [(
            axum::http::header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response();
    Ok((identity, answer))
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use session_core::{
        ClientMetadata, Label, RevocationDetails, Session, SessionId, SessionIdentity, UserAgent,
    };
    use time::macros::datetime;

    use super::{ResolvedEnvelope, ResolvedView};

    fn sessions() -> Vec<Session> {
        let token = session_core::SessionToken::generate();
        let mut sessions = Vec::new();
        let texts = [
            "Mozilla/5.0 (X11; Linux x86_64)",
            "quote \" backslash \\ slash /",
            "non-ASCII: Undersøgelse, 日本語, emoji 🎉",
        ];
        let times = [
            datetime!(2026-11-24 02:41:07.123456 UTC),
            datetime!(2026-11-24 02:41:07 UTC),
            datetime!(2026-11-24 02:41:07.1 UTC),
            datetime!(2026-11-24 02:41:07.000001 UTC),
            datetime!(0001-01-01 00:00:00 UTC),
            datetime!(9999-12-31 23:59:59.999999 UTC),
            datetime!(2026-11-24 02:41:07.5 +05:30),
        ];
        let ips = [
            None,
            Some(Ipv4Addr::new(203, 0, 113, 7).into()),
            Some(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1).into()),
            Some(Ipv6Addr::LOCALHOST.into()),
        ];
        for (i, created_at) in times.into_iter().enumerate() {
            let text = texts[i % texts.len()];
            let revoked_at = (i % 2 == 1).then_some(times[(i + 1) % times.len()]);
            sessions.push(Session {
                id: SessionId::new(),
                account_id: session_core::AccountId::new(uuid::Uuid::new_v4()).unwrap(),
                token_hash: token.hash(),
                created_at,
                revocation: RevocationDetails::of(revoked_at, None, None),
                metadata: ClientMetadata {
                    user_agent: (i % 3 != 0).then(|| UserAgent::new(text).unwrap()),
                    ip: ips[i % ips.len()],
                    label: (i % 2 == 0).then(|| Label::new(text).unwrap()),
                },
            });
        }
        sessions
    }

    #[test]
    fn the_hand_written_body_is_what_serde_writes() {
        for session in sessions() {
            for envelope in [
                ResolvedEnvelope {
                    session: ResolvedView::full(&session),
                },
                ResolvedEnvelope {
                    session: ResolvedView::identity(&SessionIdentity::from(&session)),
                },
            ] {
                let expected = serde_json::to_vec(&envelope).unwrap();
                assert_eq!(
                    String::from_utf8(envelope.to_json()).unwrap(),
                    String::from_utf8(expected).unwrap()
                );
            }
        }
    }
}
