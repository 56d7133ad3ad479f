//! Prometheus metrics: requests, resolves by outcome, cache size, warm
//! duration, store errors. Labels come from fixed sets, never from input.

use std::sync::atomic::AtomicU64;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::AppState;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    route: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: &'static str,
    route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: &'static str,
}

type LatencyFamily = Family<RouteLabels, Histogram, fn() -> Histogram>;

/// Every metric the service exports, in its own registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: LatencyFamily,
    /// Resolves that found an active session.
    pub resolve_hit: Counter,
    /// Resolves of malformed, unknown or revoked tokens.
    pub resolve_invalid: Counter,
    /// Resolves refused because the cache was not warm.
    pub resolve_not_ready: Counter,
    store_errors: Family<OperationLabels, Counter>,
    cache_sessions: Gauge,
    cache_warm: Gauge,
    warm_seconds: Gauge<f64, AtomicU64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    #[must_use]
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("session");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by route and status",
            requests.clone(),
        );
        let latency: LatencyFamily = Family::new_with_constructor(|| {
            // 50 µs to about 1.6 s.
            Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
        });
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route",
            latency.clone(),
        );
        let resolves = Family::<ResolveLabels, Counter>::default();
        registry.register("resolves", "Token resolves by outcome", resolves.clone());
        let store_errors = Family::<OperationLabels, Counter>::default();
        registry.register(
            "store_errors",
            "Store failures by operation",
            store_errors.clone(),
        );
        let cache_sessions = Gauge::default();
        registry.register(
            "cache_sessions",
            "Active sessions in the cache",
            cache_sessions.clone(),
        );
        let cache_warm = Gauge::default();
        registry.register(
            "cache_warm",
            "1 once the cache has completed a warm",
            cache_warm.clone(),
        );
        let warm_seconds = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "cache_warm_duration_seconds",
            "How long the last completed warm took",
            warm_seconds.clone(),
        );
        let outcome = |outcome| resolves.get_or_create(&ResolveLabels { outcome }).clone();
        Self {
            resolve_hit: outcome("hit"),
            resolve_invalid: outcome("invalid"),
            resolve_not_ready: outcome("not_ready"),
            registry,
            requests,
            latency,
            store_errors,
            cache_sessions,
            cache_warm,
            warm_seconds,
        }
    }

    /// Counts a failed store call.
    pub fn store_error(&self, operation: &'static str) {
        self.store_errors
            .get_or_create(&OperationLabels { operation })
            .inc();
    }

    /// Records a completed warm.
    pub fn warmed(&self, seconds: f64) {
        self.warm_seconds.set(seconds);
    }

    /// The metrics in the OpenMetrics text format, with point-in-time gauges refreshed.
    #[must_use]
    pub fn render(&self, cached_sessions: usize, warm: bool) -> String {
        self.cache_sessions
            .set(i64::try_from(cached_sessions).unwrap_or(i64::MAX));
        self.cache_warm.set(i64::from(warm));
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResolveLabels {
    outcome: &'static str,
}

/// Counts every request and observes its latency, labelled by route template.
pub(crate) async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(request.method());
    let route = route_label(request.extensions().get::<MatchedPath>());
    let response = next.run(request).await;
    let metrics = state.metrics();
    metrics
        .requests
        .get_or_create(&RequestLabels {
            method,
            route,
            status: response.status().as_u16(),
        })
        .inc();
    metrics
        .latency
        .get_or_create(&RouteLabels { method, route })
        .observe(started.elapsed().as_secs_f64());
    response
}

fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::DELETE => "DELETE",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// The route template as a static label; anything else is `unmatched`, so
/// clients cannot grow the label set.
pub(crate) fn route_label(path: Option<&MatchedPath>) -> &'static str {
    super::ROUTES
        .iter()
        .copied()
        .find(|route| Some(*route) == path.map(MatchedPath::as_str))
        .unwrap_or("unmatched")
}
