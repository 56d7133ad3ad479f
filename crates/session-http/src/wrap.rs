//! What wraps every request: one hand-written tower layer, [`RequestLayer`],
//! instead of a stack of `from_fn` middlewares or layers of their own (axum
//! boxes every route again for each layer, a clone and a boxed future per
//! request and layer). Around every route it adds the request id, the
//! request span, the access log line, the log line of a failure's cause
//! (the only place one is logged), the duration metric and `Cache-Control:
//! no-store` on every answer, with one clock read at each end; and it runs
//! the route's [`Guard`] (the API key, the loopback name, a declared
//! oversized body), whose refusal is the answer.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::header::{CACHE_CONTROL, HeaderValue};
use axum::http::{HeaderMap, HeaderName};
use axum::response::{IntoResponse, Response};
use tower::{Layer, Service};
use tracing::Span;

use crate::ApiState;
use crate::error::{ApiError, Cause};
use crate::request_metrics::RequestKind;

/// The request id header, read from the client and sent back.
static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The checks a request must pass before its route runs, given the route
/// template it matched (`None` when none did): `Err` is the answer, and the
/// route is not called.
pub(crate) type Guard = fn(&ApiState, Option<&str>, &mut Request) -> Result<(), ApiError>;

/// Adds request ids, the request span and log line, the duration metric and
/// `no-store` to every request of the service it wraps, and runs a
/// [`Guard`] before it.
#[derive(Clone)]
pub(crate) struct RequestLayer {
    state: ApiState,
    guard: Guard,
}

impl RequestLayer {
    /// The layer, counting into `state`'s metrics and running `guard`
    /// before each request.
    pub(crate) fn new(state: ApiState, guard: Guard) -> Self {
        Self { state, guard }
    }
}

impl<S> Layer<S> for RequestLayer {
    type Service = RequestService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestService {
            inner,
            state: self.state.clone(),
            guard: self.guard,
        }
    }
}

/// The service [`RequestLayer`] makes.
#[derive(Clone)]
pub(crate) struct RequestService<S> {
    inner: S,
    state: ApiState,
    guard: Guard,
}

impl<S> Service<Request> for RequestService<S>
where
    S: Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = RequestFuture<Guarded<S::Future>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let started = Instant::now();
        let request_id = request_id(request.headers_mut());
        let durations = self.state.metrics().request_durations();
        // An `Arc<str>` clone, so the guard may change the request.
        let matched_path = request.extensions().get::<MatchedPath>().cloned();
        let matched = matched_path.as_ref().map(MatchedPath::as_str);
        let kind = durations.kind(request.method(), matched);
        let span = request_span(
            kind.method_label(),
            durations.route_label(kind),
            matched.is_some(),
            &request_id,
        );
        let inner = {
            let _entered = span.enter();
            match (self.guard)(&self.state, matched, &mut request) {
                Ok(()) => Guarded::Passed {
                    inner: self.inner.call(request),
                },
                Err(refusal) => Guarded::Refused {
                    response: Some(refusal.into_response()),
                },
            }
        };
        RequestFuture {
            inner,
            span,
            state: self.state.clone(),
            kind,
            started,
            request_id: Some(request_id),
        }
    }
}

pin_project_lite::pin_project! {
    /// The wrapped response future: polled inside the request's span; on
    /// completion it adds the headers, records the metric and logs the line.
    pub(crate) struct RequestFuture<F> {
        #[pin]
        inner: F,
        span: Span,
        state: ApiState,
        kind: RequestKind,
        started: Instant,
        request_id: Option<HeaderValue>,
    }
}

impl<F, E> Future for RequestFuture<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let polled = {
            let _entered = this.span.enter();
            this.inner.poll(cx)
        };
        let mut response = match polled {
            Poll::Ready(Ok(response)) => response,
            other => return other,
        };
        let latency = this.started.elapsed();
        let headers = response.headers_mut();
        // Session responses must not be cached by proxies: one of them holds a token.
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(id) = this.request_id.take() {
            headers.entry(&REQUEST_ID).or_insert(id);
        }
        // Taken out, so the cause never leaves the router.
        let cause = response.extensions_mut().remove::<Cause>();
        let status = response.status();
        this.state
            .metrics()
            .request_durations()
            .observe(*this.kind, status.as_u16(), latency);
        let span = &*this.span;
        if !span.is_disabled() {
            // As i64: OpenTelemetry has no unsigned integer, and an exporter writes a u64 as text.
            span.record("http.response.status_code", i64::from(status.as_u16()));
            // A server span is an error for 5xx only: 4xx is the client's.
            if status.is_server_error() {
                span.record("otel.status_code", "error");
            }
        }
        let _entered = span.enter();
        if let Some(cause) = cause {
            log_cause(&cause);
        }
        tracing::info!(
            status = status.as_u16(),
            latency_us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX),
            "request finished"
        );
        Poll::Ready(Ok(response))
    }
}

/// Logs why a request failed, in its span: once per failure, since no
/// error conversion logs (see `error.rs`). `warn` for what the client may
/// retry, `error` for the rest.
fn log_cause(cause: &Cause) {
    let Cause {
        what,
        retryable,
        error,
    } = cause;
    if *retryable {
        tracing::warn!(error = %error, "{what}");
    } else {
        tracing::error!(error = %error, "{what}");
    }
}

/// The request's id: the client's `X-Request-Id` if it sent exactly one and
/// it is a UUID, as gateways generate them; otherwise a new one, which
/// replaces whatever the client sent. The id is sent back and written on
/// every log line of the request, so free text there would be client input
/// echoed (a token, say).
fn request_id(headers: &mut HeaderMap) -> HeaderValue {
    let mut ids = headers.get_all(&REQUEST_ID).iter();
    if let (Some(id), None) = (ids.next(), ids.next())
        && id
            .to_str()
            .is_ok_and(|id| uuid::Uuid::try_parse(id).is_ok())
    {
        return id.clone();
    }
    let id = new_request_id();
    headers.insert(REQUEST_ID.clone(), id.clone());
    id
}

thread_local! {
    /// A fast generator per thread, seeded once from the OS's random source.
    static REQUEST_IDS: RefCell<fastrand::Rng> = RefCell::new(fastrand::Rng::with_seed(
        u64::from_le_bytes(uuid::Uuid::new_v4().as_bytes()[..8].try_into().unwrap_or_default()),
    ));
}

/// A new random (version 4) UUID as a header value.
///
/// Request ids correlate log lines and traces; they are not secrets and
/// grant nothing, so they come from a fast per-thread generator (wyrand,
/// seeded from the OS once per thread) instead of a read of the OS's random
/// source per request. Each thread's ids follow from its 64-bit seed, so
/// they are unique in practice (a collision needs two threads' sequences
/// to meet), not unpredictable to someone who sees many of them.
fn new_request_id() -> HeaderValue {
    let bytes = REQUEST_IDS.with(|rng| {
        let mut rng = rng.borrow_mut();
        ((u128::from(rng.u64(..)) << 64) | u128::from(rng.u64(..))).to_le_bytes()
    });
    let id = uuid::Builder::from_random_bytes(bytes).into_uuid();
    let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let text = id.hyphenated().encode_lower(&mut text);
    HeaderValue::from_str(text).unwrap_or_else(|_| unreachable!("a UUID is a valid header value"))
}

/// One span per request, named and attributed after OpenTelemetry's HTTP
/// server conventions (`METHOD /route`, `http.request.method`, `http.route`,
/// `http.response.status_code`), with the request id, so every log line of
/// the request carries them. Only values from fixed sets: the route
/// template, never the path; `other` for a method outside the standard set;
/// never the body, query or headers. When nothing records spans at `info`
/// the macro returns a disabled span without evaluating any field.
fn request_span(
    method: &'static str,
    route: &'static str,
    matched: bool,
    request_id: &HeaderValue,
) -> Span {
    let method = if method == "_OTHER" { "other" } else { method };
    // Without a matched route the name is the method alone, as the
    // conventions ask, so unmatched paths never grow the set of names.
    let name = SpanName {
        method,
        route: matched.then_some(route),
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
        request_id = request_id.to_str().unwrap_or("-"),
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

pin_project_lite::pin_project! {
    /// The route's answer, or the guard's refusal.
    #[project = GuardedProj]
    pub(crate) enum Guarded<F> {
        Passed { #[pin] inner: F },
        Refused { response: Option<Response> },
    }
}

impl<F, E> Future for Guarded<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            GuardedProj::Passed { inner } => inner.poll(cx),
            GuardedProj::Refused { response } => Poll::Ready(Ok(response
                .take()
                .unwrap_or_else(|| unreachable!("a refusal is polled once")))),
        }
    }
}
