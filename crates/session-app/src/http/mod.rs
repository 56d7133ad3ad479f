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
mod sessions;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::middleware::{from_fn, from_fn_with_state};
use axum::response::Response;
use axum::routing::{any, get, post};
use session_core::SessionService;
use tower::ServiceBuilder;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use tracing::Span;
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

use crate::store_metrics::StoreMetrics;

/// Every route template, for metric labels.
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
        .route_layer(from_fn_with_state(state.clone(), auth::require_api_key));
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
        .layer(from_fn(refuse_declared_oversized_bodies))
        .layer(from_fn_with_state(
            state.clone(),
            host::require_loopback_host,
        ))
        // Added after those two layers, so neither wraps it: forward auth
        // never reads a body, and answers under the client's `Host` that
        // gateways forward (see `forward_auth.rs` for why that is safe).
        .route(FORWARD_AUTH, any(forward_auth::forward_auth))
        .route(FORWARD_AUTH_SLASH, any(forward_auth::forward_auth))
        .route(FORWARD_AUTH_BELOW, any(forward_auth::forward_auth))
        .layer(
            ServiceBuilder::new()
                .layer(from_fn(only_uuid_request_ids))
                .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                .layer(
                    TraceLayer::new_for_http()
                        .make_span_with(request_span)
                        .on_request(())
                        .on_response(log_response)
                        .on_failure(()),
                )
                .layer(PropagateRequestIdLayer::x_request_id())
                .layer(from_fn_with_state(state.clone(), metrics::track))
                .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
                .layer(from_fn(no_store)),
        )
        .with_state(state)
}

/// Answers 413 to a request whose `Content-Length` is over the limit before
/// anything reads its body: hyper sends `100 Continue` to a client that
/// asked for it (`Expect: 100-continue`) only once the body is read, so the
/// client is told no before it uploads. A body without a length (chunked)
/// is still cut at the limit as it is read.
async fn refuse_declared_oversized_bodies(
    request: Request,
    next: axum::middleware::Next,
) -> Response {
    let declared = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > MAX_BODY_BYTES as u64) {
        return axum::response::IntoResponse::into_response(ApiError::payload_too_large());
    }
    next.run(request).await
}

/// Keeps a client's `X-Request-Id` only if it is one UUID, as gateways
/// generate them; anything else is dropped and replaced by a new id. The id
/// is sent back in the response and written on every log line of the
/// request, so free text there would be client input echoed (a token, say).
async fn only_uuid_request_ids(mut request: Request, next: axum::middleware::Next) -> Response {
    let headers = request.headers_mut();
    let mut ids = headers.get_all(REQUEST_ID).iter();
    let one_uuid = match (ids.next(), ids.next()) {
        (Some(id), None) => id
            .to_str()
            .is_ok_and(|id| uuid::Uuid::try_parse(id).is_ok()),
        _ => false,
    };
    if !one_uuid {
        headers.remove(REQUEST_ID);
    }
    next.run(request).await
}

const REQUEST_ID: &str = "x-request-id";

/// One span per request, named and attributed after OpenTelemetry's HTTP
/// server conventions (`METHOD /route`, `http.request.method`, `http.route`,
/// `http.response.status_code`), with the request id, so every log line of
/// the request carries them. Only values from fixed sets: the route
/// template, never the path; `other` for a method outside the standard set;
/// never the body, query or headers.
fn request_span(request: &Request) -> Span {
    let matched = request.extensions().get::<MatchedPath>();
    let route = metrics::route_label(matched);
    let method = metrics::method_label(request.method());
    let request_id = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("-");
    // Without a matched route the name is the method alone, as the
    // conventions ask, so unmatched paths never grow the set of names.
    let name = SpanName {
        method,
        route: matched.map(|_| route),
    };
    tracing::info_span!(
        "request",
        otel.name = %name,
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = method,
        http.route = route,
        http.response.status_code = tracing::field::Empty,
        url.scheme = "http",
        request_id,
    )
}

/// `METHOD /route`, formatted only if a layer records the span.
struct SpanName {
    method: &'static str,
    route: Option<&'static str>,
}

impl std::fmt::Display for SpanName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.route {
            Some(route) => write!(f, "{} {route}", self.method),
            None => f.write_str(self.method),
        }
    }
}

fn log_response(response: &Response, latency: Duration, span: &Span) {
    let status = response.status().as_u16();
    // As i64: OpenTelemetry has no unsigned integer, and an exporter writes a u64 as text.
    span.record("http.response.status_code", i64::from(status));
    // A server span is an error for 5xx only: 4xx is the client's.
    if response.status().is_server_error() {
        span.record("otel.status_code", "error");
    }
    tracing::info!(
        status,
        latency_us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX),
        "request finished"
    );
}

/// Session responses must not be cached by proxies: one of them holds a token.
async fn no_store(request: Request, next: axum::middleware::Next) -> Response {
    let mut response = next.run(request).await;
    response.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    response
}
