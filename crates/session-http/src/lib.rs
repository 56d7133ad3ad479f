//! The session service's HTTP API as an axum [`Router`]: the `/v1` session
//! routes, forward auth for gateways, liveness, readiness, Prometheus
//! metrics and the OpenAPI document.
//!
//! The router needs a [`SessionService`](session_core::SessionService) and nothing else: the store, the
//! cache, the configuration and how connections are accepted belong to the
//! caller. `session-app` serves it behind its own accept loop; a host
//! backend can mount it in its own axum app, as below. Build an
//! [`ApiState`] with [`ApiState::builder`], then the [`router`] over it.
//!
//! Every answer passes through the same layers: the request id, the request
//! span and its log line (the one place a failed request's cause is
//! logged), the request-duration metric and `Cache-Control: no-store`.
//! Without an API key the API answers only requests addressed to a loopback
//! name (`localhost`, 127.0.0.0/8, `[::1]`), so serve it on loopback or
//! configure a key.
//!
//! # Mounting the API in a host's app
//!
//! The router owns its paths (`/v1/…`, `/healthz`, `/readyz`, `/metrics`,
//! `/openapi.json`) and answers every other path with a JSON 404, so a host
//! adds it as the fallback of its own router (or serves it on a listener of
//! its own):
//!
//! ```
//! use std::sync::Arc;
//!
//! use axum::Router;
//! use axum::body::Body;
//! use axum::http::{Request, StatusCode};
//! use axum::routing::get;
//! use session_core::memory::MemoryStore;
//! use session_core::{MemoryCache, SessionService};
//! use session_http::{ApiKeys, ApiState};
//! use tower::ServiceExt as _;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let service =
//!     SessionService::builder(Arc::new(MemoryStore::new()), Arc::new(MemoryCache::new())).build();
//! // Warms the cache (and follows a change log, given one) while held.
//! let background = service.start();
//!
//! let state = ApiState::builder(service)
//!     .api_keys(ApiKeys::new(["admin-key-0123456789"])?)
//!     .build();
//! let app = Router::new()
//!     .route("/", get(|| async { "the host's own page" }))
//!     .fallback_service(session_http::router(state));
//!
//! let answer = |path: &str| {
//!     let request = Request::get(path).body(Body::empty()).unwrap();
//!     app.clone().oneshot(request)
//! };
//! assert_eq!(answer("/healthz").await?.status(), StatusCode::OK);
//! let session = "/v1/sessions/019ab5d2-0000-7000-8000-000000000000";
//! assert_eq!(answer(session).await?.status(), StatusCode::UNAUTHORIZED, "no API key");
//! assert_eq!(answer("/").await?.status(), StatusCode::OK, "the host's own route");
//! background.shutdown().await?;
//! # Ok(())
//! # }
//! ```

mod auth;
mod cursor;
mod error;
mod events;
mod forward_auth;
// Also in the unit tests, so its own test runs with the suite.
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
mod health;
mod host;
mod input;
mod metrics;
mod not_before;
mod openapi;
mod request_metrics;
mod sessions;
mod state;
mod store_metrics;
mod wrap;

use axum::Router;
use axum::extract::Request;
use axum::routing::{any, get, post};
use utoipa::OpenApi;

pub use auth::{ApiKey, ApiKeys, InvalidApiKey, MIN_KEY_LEN, Scope, Scopes};
pub use error::{ErrorCode, MAX_BODY_BYTES, timeout_response};
pub use events::{EventFeed, HEARTBEAT, MAX_WAIT_SECONDS};
pub use forward_auth::{
    DEFAULT_ACCOUNT_ID_HEADER, DEFAULT_COOKIE, DEFAULT_SESSION_ID_HEADER, ForwardAuth,
    InvalidForwardAuth, SESSION_TOKEN_HEADER,
};
pub use health::STORE_CHECK_INTERVAL;
/// The metrics library `/metrics` is built on, so a host registers its own
/// metrics (see [`ApiStateBuilder::register_metrics`]) with the same version.
pub use prometheus_client;
pub use state::{ApiState, ApiStateBuilder};
pub use store_metrics::{PoolReader, PoolUse, StoreMetrics};

use error::ApiError;
use openapi::LayerAnswers;
use wrap::RequestLayer;

/// Every route template, for metric and span labels.
const ROUTES: &[&str] = &[
    "/v1/sessions",
    "/v1/sessions/resolve",
    "/v1/sessions/{id}",
    "/v1/accounts/{account_id}/sessions",
    "/v1/events",
    NOT_BEFORE,
    FORWARD_AUTH,
    FORWARD_AUTH_SLASH,
    FORWARD_AUTH_BELOW,
    "/healthz",
    "/readyz",
    "/metrics",
    "/openapi.json",
];

/// The "not before" mark's route.
pub(crate) const NOT_BEFORE: &str = "/v1/not-before";

/// The forward-auth route, and every path below it (Envoy and Oathkeeper
/// may append the original request's path).
const FORWARD_AUTH: &str = "/v1/forward-auth";
const FORWARD_AUTH_SLASH: &str = "/v1/forward-auth/";
const FORWARD_AUTH_BELOW: &str = "/v1/forward-auth/{*path}";

/// The OpenAPI document of the API, generated from the handlers and types.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "session",
        description = "Opaque, revoke-only login sessions. Tokens are shown once, at creation."
    ),
    paths(
        sessions::create_session,
        sessions::resolve_session,
        sessions::get_session,
        sessions::revoke_session,
        sessions::list_sessions,
        sessions::revoke_account_sessions,
        events::events,
        not_before::read_not_before,
        not_before::raise_not_before,
        forward_auth::forward_auth,
        health::healthz,
        health::readyz,
    ),
    modifiers(&BearerAuth, &LayerAnswers),
)]
struct ApiDoc;

/// The OpenAPI document of the API, as `/openapi.json` serves it:
/// generated from the handlers and request types, with the answers of the
/// layers around every route (401, 413, 415, 421, 500, 503).
#[must_use]
pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The whole API as an axum router, over `state`: every route, a JSON 404
/// and 405 for the rest, and the one layer around them (see `guard` for
/// the checks it runs before a route).
pub fn router(state: ApiState) -> Router {
    // Rendered once: the document never changes while the process runs.
    let openapi = axum::body::Bytes::from(openapi().to_pretty_json().unwrap_or_default());

    Router::new()
        .route("/v1/sessions", post(sessions::create_session))
        .route("/v1/sessions/resolve", post(sessions::resolve_session))
        .route(
            "/v1/sessions/{id}",
            get(sessions::get_session).delete(sessions::revoke_session),
        )
        .route(
            "/v1/accounts/{account_id}/sessions",
            get(sessions::list_sessions).delete(sessions::revoke_account_sessions),
        )
        .route("/v1/events", get(events::events))
        .route(
            NOT_BEFORE,
            get(not_before::read_not_before).put(not_before::raise_not_before),
        )
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route(
            "/openapi.json",
            get(move || {
                let openapi = openapi.clone();
                async move {
                    (
                        [(axum::http::header::CONTENT_TYPE, "application/json")],
                        openapi,
                    )
                }
            }),
        )
        .route(FORWARD_AUTH, any(forward_auth::forward_auth))
        .route(FORWARD_AUTH_SLASH, any(forward_auth::forward_auth))
        .route(FORWARD_AUTH_BELOW, any(forward_auth::forward_auth))
        .fallback(|| async { ApiError::no_route() })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        // One layer, wrapping every route and the fallbacks: axum boxes each
        // route again for every layer added here (a clone and a boxed future
        // per request and layer), so the checks below run inside it instead
        // of as layers of their own.
        .layer(RequestLayer::new(state.clone(), guard))
        .with_state(state)
}

/// The checks a request passes before its route runs, by the route template
/// it matched (`None` for the fallbacks). A refusal is the answer, logged,
/// counted and marked `no-store` like any other.
///
/// - Forward auth passes unchecked: it never reads a body, and answers under
///   the client's `Host` that gateways forward (see `forward_auth.rs` for
///   why that is safe).
/// - Every other request, unmatched ones included, must name a loopback host
///   when no API key is configured, and is refused 413 when it declares a
///   body over the limit.
/// - The `/v1` routes need an API key, when keys are configured, with the
///   scope the route and method need (see `auth.rs`).
fn guard(state: &ApiState, route: Option<&str>, request: &mut Request) -> Result<(), ApiError> {
    let Some(route) = route else {
        host::require_loopback_host(state, request)?;
        return refuse_declared_oversized_bodies(request);
    };
    if [FORWARD_AUTH, FORWARD_AUTH_SLASH, FORWARD_AUTH_BELOW].contains(&route) {
        return Ok(());
    }
    host::require_loopback_host(state, request)?;
    refuse_declared_oversized_bodies(request)?;
    if route.starts_with("/v1/") {
        auth::require_api_key(state, route, request)?;
    }
    Ok(())
}

/// Answers 413 to a request whose `Content-Length` is over the limit before
/// anything reads its body: hyper sends `100 Continue` to a client that
/// asked for it (`Expect: 100-continue`) only once the body is read, so the
/// client is told no before it uploads. A body without a length (chunked)
/// is still cut at the limit as it is read.
fn refuse_declared_oversized_bodies(request: &Request) -> Result<(), ApiError> {
    let declared = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > MAX_BODY_BYTES as u64) {
        return Err(ApiError::payload_too_large());
    }
    Ok(())
}
