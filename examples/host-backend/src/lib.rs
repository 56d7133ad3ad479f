//! An example host backend: the code a backend engineer copies.
//!
//! It embeds [`SessionService`] over SQLite (or PostgreSQL, given a
//! `postgres://` URL), signs a user in with a toy login (an account name, no
//! password) that sets the session cookie, and lets the user see and sign
//! out their devices. [`CurrentSession`] does every session check: a route
//! that takes it answers 401 without a session, and refuses cross-site
//! cookie requests that would change state.

use std::sync::Arc;

use anyhow::Context as _;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use session_axum::{CurrentSession, SessionAuth};
use session_core::{
    AccountId, ClientMetadata, Label, ListScope, MemoryCache, PageRequest, SessionId,
    SessionIdentity, SessionService, UserAgent,
};

/// Opens the store `database_url` names (`sqlite://PATH` or `postgres://…`),
/// migrating it, and builds the service over it. Call
/// [`SessionService::start`] before serving, and keep the guard it returns.
///
/// # Errors
///
/// The store could not be opened or migrated.
pub async fn open(database_url: &str) -> anyhow::Result<SessionService> {
    let cache = Arc::new(MemoryCache::new());
    if database_url.starts_with("postgres://") || database_url.starts_with("postgresql://") {
        let config = session_postgres::PgConfig::from_url(database_url)?;
        let store = Arc::new(session_postgres::PgSessionStore::connect(config).await?);
        store.migrate().await.context("migrating PostgreSQL")?;
        // Other processes write this database: follow their changes.
        return Ok(SessionService::builder(store.clone(), cache)
            .change_log(store)
            .build());
    }
    let path = database_url
        .strip_prefix("sqlite://")
        .unwrap_or(database_url);
    let store = session_sqlite::SqliteSessionStore::open(path).await?;
    Ok(SessionService::builder(Arc::new(store), cache).build())
}

/// The routes. `auth` is the whole state: handlers reach the service
/// through it. Every unsafe request from another site is refused, login
/// included: a page elsewhere must not sign the browser in to an account
/// of its choosing (login CSRF).
pub fn app(auth: SessionAuth) -> Router {
    let cross_site = auth.cross_site_layer();
    Router::new()
        .route("/login", post(login))
        .route("/me", get(me))
        .route("/devices", get(devices))
        .route("/devices/{id}", delete(sign_out_device))
        .route("/logout", post(logout))
        .route("/logout/others", post(logout_others))
        .route("/logout/everywhere", post(logout_everywhere))
        .with_state(auth)
        .layer(cross_site)
}

#[derive(Deserialize)]
struct Login {
    account: String,
    device: Option<String>,
}

/// Toy login: a real one checks a password or a passkey first.
async fn login(
    State(auth): State<SessionAuth>,
    headers: HeaderMap,
    login: Result<Json<Login>, JsonRejection>,
) -> Result<Response, Error> {
    // axum's own rejection text quotes the body; answer with fixed text.
    let Json(login) = login.map_err(|_| Error::BadRequest("a JSON body {account, device?}"))?;
    if login.account.is_empty() || login.account.len() > 64 {
        return Err(Error::BadRequest("account: 1 to 64 bytes"));
    }
    let account = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, login.account.as_bytes());
    let metadata = ClientMetadata {
        user_agent: headers
            .get(header::USER_AGENT)
            .and_then(|ua| ua.to_str().ok())
            .and_then(|ua| UserAgent::normalize(ua).ok().flatten()),
        ip: None,
        label: match login.device {
            Some(device) => Some(Label::new(device).map_err(|_| Error::BadRequest("device"))?),
            None => None,
        },
    };
    let account = AccountId::new(account).map_err(|_| Error::BadRequest("account"))?;
    let created = auth.service().create(account, metadata).await?;
    let set_cookie = auth.cookie().set_cookie(&created.token);
    let body = Json(Me::from(SessionIdentity::from(&*created.session)));
    Ok(([(header::SET_COOKIE, set_cookie)], body).into_response())
}

#[derive(Serialize)]
struct Me {
    account_id: String,
    session_id: String,
}

impl From<SessionIdentity> for Me {
    fn from(session: SessionIdentity) -> Self {
        Self {
            account_id: session.account_id.to_string(),
            session_id: session.id.to_string(),
        }
    }
}

// The session's id and account come from the cache alone, in either cache
// mode; `CurrentSessionRecord` would give its whole record.
async fn me(CurrentSession(session): CurrentSession) -> Json<Me> {
    Json(Me::from(session))
}

#[derive(Serialize)]
struct Device {
    session_id: String,
    device: Option<String>,
    user_agent: Option<String>,
    signed_in_at: i64,
    current: bool,
}

async fn devices(
    State(auth): State<SessionAuth>,
    CurrentSession(current): CurrentSession,
) -> Result<Json<Vec<Device>>, Error> {
    // Every page: an account's active sessions, newest first.
    let mut sessions = Vec::new();
    let mut page = PageRequest::default();
    loop {
        let found = auth
            .service()
            .list(current.account_id, ListScope::Active, page)
            .await?;
        sessions.extend(found.sessions);
        match found.next {
            Some(next) => page.after = Some(next),
            None => break,
        }
    }
    let devices = sessions.iter().map(|session| Device {
        session_id: session.id.to_string(),
        device: session.metadata.label.as_ref().map(ToString::to_string),
        user_agent: session
            .metadata
            .user_agent
            .as_ref()
            .map(ToString::to_string),
        signed_in_at: session.created_at.unix_timestamp(),
        current: session.id == current.id,
    });
    Ok(Json(devices.collect()))
}

async fn sign_out_device(
    State(auth): State<SessionAuth>,
    CurrentSession(current): CurrentSession,
    Path(id): Path<String>,
) -> Result<StatusCode, Error> {
    let id: SessionId = id.parse().map_err(|_| Error::NotFound)?;
    // Only the user's own devices: another account's session is "not found".
    match auth.service().get(id).await {
        Ok(session) if session.account_id == current.account_id => {}
        Ok(_) | Err(session_core::Error::NotFound) => return Err(Error::NotFound),
        Err(error) => return Err(error.into()),
    }
    auth.service()
        .revoke(id, session_core::RevocationReason::LOGOUT)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn logout(
    State(auth): State<SessionAuth>,
    CurrentSession(current): CurrentSession,
) -> Result<Response, Error> {
    auth.service()
        .revoke(current.id, session_core::RevocationReason::LOGOUT)
        .await?;
    Ok(signed_out(&auth))
}

async fn logout_others(
    State(auth): State<SessionAuth>,
    CurrentSession(current): CurrentSession,
) -> Result<Json<usize>, Error> {
    let revoked = auth
        .service()
        .revoke_all(
            current.account_id,
            Some(current.id),
            session_core::RevocationReason::LOGOUT,
        )
        .await?;
    Ok(Json(revoked))
}

async fn logout_everywhere(
    State(auth): State<SessionAuth>,
    CurrentSession(current): CurrentSession,
) -> Result<Response, Error> {
    auth.service()
        .revoke_all(
            current.account_id,
            None,
            session_core::RevocationReason::LOGOUT,
        )
        .await?;
    Ok(signed_out(&auth))
}

/// 204 that clears the session cookie.
fn signed_out(auth: &SessionAuth) -> Response {
    let clear = auth.cookie().clear_cookie();
    (StatusCode::NO_CONTENT, [(header::SET_COOKIE, clear)]).into_response()
}

/// Every failure of a handler, one status each.
enum Error {
    BadRequest(&'static str),
    NotFound,
    Service(session_core::Error),
}

impl From<session_core::Error> for Error {
    fn from(error: session_core::Error) -> Self {
        Self::Service(error)
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        match self {
            Self::BadRequest(field) => (StatusCode::BAD_REQUEST, field).into_response(),
            Self::NotFound => StatusCode::NOT_FOUND.into_response(),
            Self::Service(error) => {
                // The store's message can name hosts: log it, never send it.
                eprintln!("session service: {error}");
                let status = match error {
                    session_core::Error::NotFound => StatusCode::NOT_FOUND,
                    _ => StatusCode::SERVICE_UNAVAILABLE,
                };
                status.into_response()
            }
        }
    }
}
