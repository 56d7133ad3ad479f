//! Liveness, readiness, metrics: open routes for orchestrators and scrapers.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;

/// The process is up.
#[derive(Serialize, ToSchema)]
pub(crate) struct Liveness {
    /// Always `ok`.
    status: &'static str,
}

/// Liveness: 200 while the process runs.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "Alive", body = Liveness)))]
pub(crate) async fn healthz() -> Json<Liveness> {
    Json(Liveness { status: "ok" })
}

/// Readiness, check by check.
#[derive(Serialize, ToSchema)]
pub(crate) struct ReadinessBody {
    /// `ready` or `not_ready`.
    status: &'static str,
    /// Each check.
    checks: Checks,
}

/// The readiness checks.
#[derive(Serialize, ToSchema)]
pub(crate) struct Checks {
    /// Whether the cache holds every active session.
    cache: CacheCheck,
    /// Whether the store answers.
    store: StoreCheck,
    /// With several instances on one PostgreSQL: whether this one follows
    /// the others' writes (`ok`) or lost the change feed and is resyncing
    /// (`resyncing`). Absent when the store has no change feed.
    #[serde(skip_serializing_if = "Option::is_none")]
    change_feed: Option<FeedCheck>,
}

/// The change-feed check.
#[derive(Serialize, ToSchema)]
pub(crate) struct FeedCheck {
    /// `ok` or `resyncing`.
    status: &'static str,
}

/// The cache check.
#[derive(Serialize, ToSchema)]
pub(crate) struct CacheCheck {
    /// `ok` once warm, `warming` before.
    status: &'static str,
    /// Active sessions in the cache.
    sessions: usize,
}

/// The store check.
#[derive(Serialize, ToSchema)]
pub(crate) struct StoreCheck {
    /// `ok` or `error`.
    status: &'static str,
    /// Why the check failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
}

/// Readiness: 200 only when the cache is warm and the store answers its health check.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready", body = ReadinessBody),
        (status = 503, description = "Not ready; the body says which check failed", body = ReadinessBody),
    ))]
pub(crate) async fn readyz(State(state): State<AppState>) -> Response {
    let service = state.service();
    let timeout = state.inner.readiness_timeout;
    let readiness = tokio::time::timeout(timeout, service.readiness()).await;
    let (cache_warm, store) = match readiness {
        Ok(readiness) => (
            readiness.cache_warm,
            readiness.store.map_err(|err| err.to_string()),
        ),
        Err(_) => (
            service.is_warm(),
            Err(format!("the store did not answer within {timeout:?}")),
        ),
    };
    let feed = service.change_feed_in_sync();
    let ready = cache_warm && store.is_ok() && feed != Some(false);
    let body = ReadinessBody {
        status: if ready { "ready" } else { "not_ready" },
        checks: Checks {
            cache: CacheCheck {
                status: if cache_warm { "ok" } else { "warming" },
                sessions: service.cached_sessions(),
            },
            store: match store {
                Ok(()) => StoreCheck {
                    status: "ok",
                    message: None,
                },
                Err(message) => StoreCheck {
                    status: "error",
                    message: Some(message),
                },
            },
            change_feed: feed.map(|in_sync| FeedCheck {
                status: if in_sync { "ok" } else { "resyncing" },
            }),
        },
    };
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// Prometheus metrics in the OpenMetrics text format.
pub(crate) async fn metrics(State(state): State<AppState>) -> Response {
    let text = state.metrics().render();
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}
