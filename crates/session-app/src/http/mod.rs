//! The HTTP API: routes, middleware, and the state handlers share.

mod auth;
mod cursor;
mod error;
mod forward_auth;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod health;
mod host;
mod input;
mod metrics;
mod openapi;
mod request_metrics;
mod sessions;
mod wrap;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::routing::{any, get, post};
use session_core::SessionService;
use utoipa::OpenApi;

pub use auth::{ApiKeys, InvalidApiKey, MIN_KEY_LEN};
pub use error::{ApiError, ErrorCode, MAX_BODY_BYTES};
pub use forward_auth::{
    DEFAULT_ACCOUNT_ID_HEADER, DEFAULT_COOKIE, DEFAULT_SESSION_ID_HEADER, ForwardAuth,
    InvalidForwardAuth, SESSION_TOKEN_HEADER,
};
pub use health::STORE_CHECK_INTERVAL;
pub use metrics::Metrics;
use openapi::LayerAnswers;
use wrap::{CheckLayer, RequestLayer};

use crate::store_metrics::StoreMetrics;

/// Every route template, for metric and span labels.
const ROUTES: &[&str] = &[
    "/v1/sessions",
    "/v1/sessions/resolve",
    "/v1/sessions/{id}",
    "/v1/accounts/{account_id}/sessions",
    FORWARD_AUTH,
    FORWARD_AUTH_SLASH,
    FORWARD_AUTH_BELOW,
    "/healthz",
    "/readyz",
    "/metrics",
    "/openapi.json",
];

/// The forward-auth route, and every path below it (Envoy and Oathkeeper
/// may append the original request's path).
const FORWARD_AUTH: &str = "/v1/forward-auth";
const FORWARD_AUTH_SLASH: &str = "/v1/forward-auth/";
const FORWARD_AUTH_BELOW: &str = "/v1/forward-auth/{*path}";

/// What every handler can reach: the service, the API keys, the
/// forward-auth settings and the metrics.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<StateInner>,
}

struct StateInner {
    service: SessionService,
    api_keys: ApiKeys,
    forward_auth: ForwardAuth,
    metrics: Metrics,
    readiness_timeout: Duration,
    store_probe: health::StoreProbe,
}

impl AppState {
    /// State over a service, with the default forward-auth settings. The
    /// service's cache need not be warm yet.
    #[must_use]
    pub fn new(service: SessionService, api_keys: ApiKeys) -> Self {
        Self::with_forward_auth(service, api_keys, ForwardAuth::default())
    }

    /// State over a service, with the given forward-auth settings.
    #[must_use]
    pub fn with_forward_auth(
        service: SessionService,
        api_keys: ApiKeys,
        forward_auth: ForwardAuth,
    ) -> Self {
        Self::with_store_metrics(service, api_keys, forward_auth, &StoreMetrics::default())
    }

    /// State over a service whose store (and change log) `store` wraps, so
    /// `/metrics` shows its calls and pools.
    #[must_use]
    pub fn with_store_metrics(
        service: SessionService,
        api_keys: ApiKeys,
        forward_auth: ForwardAuth,
        store: &StoreMetrics,
    ) -> Self {
        Self {
            inner: Arc::new(StateInner {
                metrics: Metrics::new(service.clone(), store),
                service,
                api_keys,
                forward_auth,
                readiness_timeout: Duration::from_secs(2),
                store_probe: health::StoreProbe::default(),
            }),
        }
    }

    /// The session service.
    #[must_use]
    pub fn service(&self) -> &SessionService {
        &self.inner.service
    }

    /// The service's metrics.
    #[must_use]
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    fn api_keys(&self) -> &ApiKeys {
        &self.inner.api_keys
    }

    fn forward_auth(&self) -> &ForwardAuth {
        &self.inner.forward_auth
    }

    /// Resolves a token. session-core counts its outcome (see
    /// `SessionService::resolve_counts`), and store calls are counted by the
    /// store's decorator, so nothing is counted here.
    async fn resolve(&self, token: &str) -> Result<Arc<session_core::Session>, ApiError> {
        Ok(self.service().resolve(token).await?)
    }
}

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
        forward_auth::forward_auth,
        health::healthz,
        health::readyz,
    ),
    modifiers(&BearerAuth, &LayerAnswers),
)]
pub struct ApiDoc;

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

/// The whole API as an axum router.
pub fn router(state: AppState) -> Router {
    let v1 = Router::new()
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
        .route_layer(CheckLayer::new(state.clone(), auth::require_api_key));
    // Rendered once: the document never changes while the process runs.
    let openapi = axum::body::Bytes::from(ApiDoc::openapi().to_pretty_json().unwrap_or_default());

    Router::new()
        .merge(v1)
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
        .fallback(|| async { ApiError::no_route() })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        // Around every route above and the fallbacks, inside the layers
        // below, so a refusal is logged, counted and marked `no-store` like
        // any answer.
        .layer(CheckLayer::new(state.clone(), |state, request| {
            host::require_loopback_host(state, request)?;
            refuse_declared_oversized_bodies(request)
        }))
        // Added after that layer, so it does not wrap them: forward auth
        // never reads a body, and answers under the client's `Host` that
        // gateways forward (see `forward_auth.rs` for why that is safe).
        .route(FORWARD_AUTH, any(forward_auth::forward_auth))
        .route(FORWARD_AUTH_SLASH, any(forward_auth::forward_auth))
        .route(FORWARD_AUTH_BELOW, any(forward_auth::forward_auth))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(RequestLayer::new(state.clone()))
        .with_state(state)
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
