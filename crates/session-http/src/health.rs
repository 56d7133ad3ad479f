//! Liveness, readiness, metrics: open routes for orchestrators and scrapers.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use std::time::Duration;

use session_core::SessionService;
use session_core::status::ChangeLogLag;
use tokio::time::Instant;
use utoipa::ToSchema;

use crate::ApiState;

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
    /// With several instances on one PostgreSQL: whether this one has
    /// applied every change committed longer ago than its staleness bound.
    /// Absent when the store has no change log.
    #[serde(skip_serializing_if = "Option::is_none")]
    change_log: Option<LogCheck>,
}

/// The change-log check.
#[derive(Serialize, ToSchema)]
pub(crate) struct LogCheck {
    /// `ok` while the lag is within the bound, `lagging` past it, `starting`
    /// before the first read that reached the end of the log.
    status: &'static str,
    /// Time since the start of the last read that reached the end of the
    /// log, in milliseconds; absent while `starting`.
    #[serde(skip_serializing_if = "Option::is_none")]
    lag_ms: Option<u64>,
    /// The most lag at which the instance is ready, in milliseconds.
    max_staleness_ms: u64,
    /// `listening` while other instances' writes wake this one at once;
    /// `polling` while it learns of them only at each poll of the log
    /// (wake-ups off, lost, or not delivered, as behind a transaction
    /// pooler without a direct URL). Either mode may be ready.
    wake_ups: &'static str,
}

impl LogCheck {
    fn new(lag: ChangeLogLag, listening: bool) -> Self {
        let millis =
            |duration: std::time::Duration| u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        Self {
            status: match lag.lag {
                None => "starting",
                Some(_) if lag.within_bound() => "ok",
                Some(_) => "lagging",
            },
            lag_ms: lag.lag.map(millis),
            max_staleness_ms: millis(lag.bound),
            wake_ups: if listening { "listening" } else { "polling" },
        }
    }
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
    /// Why the check failed: `unavailable` (the store answered with an
    /// error) or `timeout`. Fixed words: the driver's message, which can
    /// name hosts and users, goes to the log, not to an open route.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
}

/// How long one store health check answers readiness: `/readyz` is open,
/// so without this every probe, anyone's, would be a database round trip.
pub const STORE_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// What the last store health check found.
#[derive(Clone, Copy)]
enum StoreHealth {
    Ok,
    Unavailable,
    Timeout,
}

impl StoreHealth {
    fn check(self) -> StoreCheck {
        let (status, reason) = match self {
            Self::Ok => ("ok", None),
            Self::Unavailable => ("error", Some("unavailable")),
            Self::Timeout => ("error", Some("timeout")),
        };
        StoreCheck { status, reason }
    }
}

/// The store health check behind `/readyz`: at most one per
/// [`STORE_CHECK_INTERVAL`], shared by every probe meanwhile.
#[derive(Default)]
pub(crate) struct StoreProbe {
    /// When the last check finished, and what it found. Held across a
    /// check, so probes that arrive during it wait and share its result
    /// rather than each starting one.
    last: tokio::sync::Mutex<Option<(Instant, StoreHealth)>>,
}

impl StoreProbe {
    async fn health(&self, service: &SessionService, timeout: Duration) -> StoreHealth {
        let mut last = self.last.lock().await;
        if let Some((at, health)) = *last
            && at.elapsed() < STORE_CHECK_INTERVAL
        {
            return health;
        }
        let health = match tokio::time::timeout(timeout, service.check_store()).await {
            Ok(Ok(())) => StoreHealth::Ok,
            Ok(Err(err)) => {
                tracing::warn!(error = %err, "readiness: the store health check failed");
                StoreHealth::Unavailable
            }
            Err(_) => {
                tracing::warn!(?timeout, "readiness: the store health check timed out");
                StoreHealth::Timeout
            }
        };
        *last = Some((Instant::now(), health));
        health
    }
}

/// Readiness: 200 only when the cache is warm and the store answers its
/// health check (run at most once a second, whoever asks), and, with a
/// change log, the lag is within the bound.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready", body = ReadinessBody),
        (status = 503, description = "Not ready; the body says which check failed", body = ReadinessBody),
    ))]
pub(crate) async fn readyz(State(state): State<ApiState>) -> Response {
    let service = state.service();
    let (probe, timeout) = state.store_probe();
    let store = probe.health(service, timeout).await;
    // session-core's rule: the cache's part (`ServiceStatus::cache_ready`)
    // and the store's check, here from the shared probe instead of a round
    // trip per probe.
    let status = service.status();
    let ready = status.cache_ready() && matches!(store, StoreHealth::Ok);
    let body = ReadinessBody {
        status: if ready { "ready" } else { "not_ready" },
        checks: Checks {
            cache: CacheCheck {
                status: if status.cache_warm { "ok" } else { "warming" },
                sessions: status.cached_sessions,
            },
            store: store.check(),
            change_log: status
                .change_log
                .map(|lag| LogCheck::new(lag, status.wake_ups_listening)),
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
pub(crate) async fn metrics(State(state): State<ApiState>) -> Response {
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
