//! Request duration by route, method and status: OpenTelemetry's
//! `http.server.request.duration` in Prometheus naming,
//! `http_server_request_duration_seconds`, whose `_count` is the request
//! count. Labels come from fixed sets: the route template (or `unmatched`),
//! a standard method (or `_OTHER`, as the conventions ask), the status code.
//!
//! Observing a request takes no lock and allocates nothing once its label
//! set has been seen: every histogram is a row of atomic counters, found by
//! index in a table of routes × methods × common statuses and created on
//! first use. A status outside the common set (none of the API's answers)
//! goes to a map behind a mutex.
//!
//! Why not prometheus-client's own `Histogram`: in 0.25 it is an
//! `Arc<Mutex<…>>` locked on every observation, and its family type looks
//! the label set up in a map behind a lock per request. The change that
//! would have shortened that lock (prometheus/client_rust#143) was closed
//! unmerged. Once the crate observes without a lock (as the Go client has
//! since prometheus/client_golang#457), this module can go.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use axum::http::Method;
use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

/// The metric's name, without the service's `session_` prefix: it follows
/// OpenTelemetry's semantic conventions, which dashboards look for by name.
pub(crate) const NAME: &str = "http_server_request_duration_seconds";
/// The metric's help text.
pub(crate) const HELP: &str = "Duration of HTTP server requests, from the request reaching the \
                               router until its response head is ready, by method, route \
                               template and status code";

/// Upper bounds of the buckets, in nanoseconds: 1-2.5-5 steps from 5 µs,
/// where a resolve answered from the cache lands, to 10 s; `+Inf` follows.
/// OpenTelemetry's default boundaries start at 5 ms, which would put every
/// cache answer in the first bucket.
const BOUNDS_NANOS: [u64; 20] = [
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// The methods OpenTelemetry names (`http.request.method`); any other is
/// `_OTHER`, the last index.
const METHODS: [Method; 9] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::CONNECT,
    Method::OPTIONS,
    Method::TRACE,
    Method::PATCH,
];
const OTHER_METHOD: &str = "_OTHER";

/// Statuses with a place in the table: every status the API answers, and
/// those hyper may write for it.
const STATUSES: [u16; 16] = [
    200, 201, 204, 400, 401, 403, 404, 405, 408, 413, 415, 421, 429, 500, 503, 504,
];

/// A histogram of durations as atomic counters: observing is a few relaxed
/// atomic additions, with no lock (prometheus-client's `Histogram` takes a
/// mutex per observation).
#[derive(Debug)]
pub(crate) struct AtomicHistogram {
    /// Observations per bucket (not cumulative); the last is `+Inf`.
    buckets: [AtomicU64; BOUNDS_NANOS.len() + 1],
    /// Sum of every observation, in nanoseconds (584 years before it wraps).
    sum_nanos: AtomicU64,
}

impl AtomicHistogram {
    fn new() -> Self {
        Self {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_nanos: AtomicU64::new(0),
        }
    }

    /// Records one duration.
    pub(crate) fn observe(&self, elapsed: Duration) {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let bucket = BOUNDS_NANOS.partition_point(|&bound| bound < nanos);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }
}

impl EncodeMetric for AtomicHistogram {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        let mut buckets = [(0.0, 0); BOUNDS_NANOS.len() + 1];
        for (i, (bound, count)) in buckets.iter_mut().enumerate() {
            // Exact as f64: the bounds are far below 2^53.
            let seconds = BOUNDS_NANOS
                .get(i)
                .map_or(f64::INFINITY, |&b| b as f64 / 1e9);
            *bound = seconds;
            *count = self.buckets[i].load(Ordering::Relaxed);
        }
        // The count is the buckets' sum, so a scrape racing an observation
        // still sees `_count` equal to the `+Inf` bucket.
        let count = buckets.iter().map(|(_, count)| count).sum();
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
struct Labels {
    http_request_method: &'static str,
    http_route: &'static str,
    http_response_status_code: u16,
}

/// Where a request is counted: its method and route, found once when the
/// request arrives; the status is added when the response is ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RequestKind {
    method: usize,
    route: usize,
}

impl RequestKind {
    /// The method as a label: the standard name, or `_OTHER`.
    pub(crate) fn method_label(self) -> &'static str {
        METHODS
            .get(self.method)
            .map_or(OTHER_METHOD, Method::as_str)
    }
}

/// `http_server_request_duration_seconds`, every label set of it.
#[derive(Debug)]
pub(crate) struct RequestDurations {
    routes: &'static [&'static str],
    /// Index: (route × methods + method) × statuses + status.
    table: Box<[OnceLock<Box<AtomicHistogram>>]>,
    /// Statuses outside [`STATUSES`].
    rare: Mutex<BTreeMap<Labels, Arc<AtomicHistogram>>>,
}

impl RequestDurations {
    /// Durations for requests to `routes` (templates), plus unmatched ones.
    pub(crate) fn new(routes: &'static [&'static str]) -> Self {
        let cells = (routes.len() + 1) * (METHODS.len() + 1) * STATUSES.len();
        Self {
            routes,
            table: (0..cells).map(|_| OnceLock::new()).collect(),
            rare: Mutex::default(),
        }
    }

    /// The label indices of a request: its method, and its route template
    /// (`None` when no route matched).
    pub(crate) fn kind(&self, method: &Method, route: Option<&str>) -> RequestKind {
        RequestKind {
            method: METHODS
                .iter()
                .position(|m| m == method)
                .unwrap_or(METHODS.len()),
            route: route
                .and_then(|route| self.routes.iter().position(|r| *r == route))
                .unwrap_or(self.routes.len()),
        }
    }

    /// The route of `kind` as a label: the template, or `unmatched`.
    pub(crate) fn route_label(&self, kind: RequestKind) -> &'static str {
        self.routes.get(kind.route).copied().unwrap_or("unmatched")
    }

    /// Records a request of `kind` answered with `status` after `elapsed`.
    pub(crate) fn observe(&self, kind: RequestKind, status: u16, elapsed: Duration) {
        if let Some(slot) = STATUSES.iter().position(|&s| s == status) {
            let index = (kind.route * (METHODS.len() + 1) + kind.method) * STATUSES.len() + slot;
            self.table[index]
                .get_or_init(|| Box::new(AtomicHistogram::new()))
                .observe(elapsed);
        } else {
            let labels = self.labels(kind, status);
            let histogram = Arc::clone(
                self.rare
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .entry(labels)
                    .or_insert_with(|| Arc::new(AtomicHistogram::new())),
            );
            histogram.observe(elapsed);
        }
    }

    fn labels(&self, kind: RequestKind, status: u16) -> Labels {
        Labels {
            http_request_method: kind.method_label(),
            http_route: self.route_label(kind),
            http_response_status_code: status,
        }
    }
}

impl EncodeMetric for RequestDurations {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        for (index, cell) in self.table.iter().enumerate() {
            let Some(histogram) = cell.get() else {
                continue;
            };
            let status = STATUSES[index % STATUSES.len()];
            let kind = index / STATUSES.len();
            let kind = RequestKind {
                route: kind / (METHODS.len() + 1),
                method: kind % (METHODS.len() + 1),
            };
            histogram.encode(encoder.encode_family(&self.labels(kind, status))?)?;
        }
        let rare = self.rare.lock().unwrap_or_else(PoisonError::into_inner);
        for (labels, histogram) in rare.iter() {
            histogram.encode(encoder.encode_family(labels)?)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// A [`RequestDurations`] shared with the registry that encodes it.
#[derive(Debug)]
pub(crate) struct Shared(pub(crate) Arc<RequestDurations>);

impl EncodeMetric for Shared {
    fn encode(&self, encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        self.0.encode(encoder)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::registry::Registry;

    use super::*;

    fn render(durations: RequestDurations) -> String {
        let mut registry = Registry::default();
        registry.register(NAME, HELP, durations);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        text
    }

    #[test]
    fn buckets_resolve_microseconds_and_count_every_request() {
        let durations = RequestDurations::new(&["/healthz", "/v1/sessions/resolve"]);
        let resolve = durations.kind(&Method::POST, Some("/v1/sessions/resolve"));
        durations.observe(resolve, 200, Duration::from_micros(3));
        durations.observe(resolve, 200, Duration::from_micros(7));
        durations.observe(resolve, 200, Duration::from_secs(60));
        let text = render(durations);
        let labels = "http_request_method=\"POST\",http_route=\"/v1/sessions/resolve\",\
                      http_response_status_code=\"200\"";
        for line in [
            format!("http_server_request_duration_seconds_count{{{labels}}} 3"),
            format!("http_server_request_duration_seconds_bucket{{le=\"0.000005\",{labels}}} 1"),
            format!("http_server_request_duration_seconds_bucket{{le=\"0.00001\",{labels}}} 2"),
            format!("http_server_request_duration_seconds_bucket{{le=\"10.0\",{labels}}} 2"),
            format!("http_server_request_duration_seconds_bucket{{le=\"+Inf\",{labels}}} 3"),
            format!("http_server_request_duration_seconds_sum{{{labels}}} 60.00001"),
        ] {
            assert!(text.contains(&line), "missing {line:?} in\n{text}");
        }
    }

    #[test]
    fn labels_come_from_fixed_sets_only() {
        let durations = RequestDurations::new(&["/healthz"]);
        let odd = Method::from_bytes(b"BREW").unwrap();
        durations.observe(
            durations.kind(&odd, Some("/not/a/template")),
            200,
            Duration::from_micros(1),
        );
        durations.observe(
            durations.kind(&Method::GET, Some("/healthz")),
            418,
            Duration::from_micros(1),
        );
        let text = render(durations);
        assert!(text.contains(
            "http_server_request_duration_seconds_count{http_request_method=\"_OTHER\",\
             http_route=\"unmatched\",http_response_status_code=\"200\"} 1"
        ));
        assert!(text.contains(
            "http_server_request_duration_seconds_count{http_request_method=\"GET\",\
             http_route=\"/healthz\",http_response_status_code=\"418\"} 1"
        ));
        assert!(!text.contains("BREW") && !text.contains("/not/a"), "{text}");
    }
}
