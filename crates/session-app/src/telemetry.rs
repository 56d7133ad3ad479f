//! Logging and tracing set-up: human-readable or JSON lines on stderr, so
//! stdout stays for command output, and, when an OTLP endpoint is
//! configured, every span exported over OTLP/HTTP with protobuf.
//!
//! Log lines are formatted on the thread that emits them and written by a
//! thread of their own (`tracing-appender`'s non-blocking writer), so a
//! request never waits on a write to stderr. Up to
//! [`LOG_LINES_BUFFERED`] lines wait for that thread; past that a line is
//! dropped rather than holding up the request, and counted
//! ([`log_lines_dropped`], the `session_log_lines_dropped` metric). Lines
//! still waiting when the process stops are written before it exits (the
//! guard returned by [`init`]).
//!
//! Export never holds up a request: ended spans go to a bounded queue that a
//! batch processor drains on its own thread; a span that finds the queue
//! full is dropped, and so is a batch the collector did not take, each
//! counted in [`spans_dropped`] (the `session_otlp_spans_dropped` metric).

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use clap::ValueEnum;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{SpanExporter as OtlpExporter, WithExportConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider, Span, SpanData, SpanExporter,
    SpanProcessor,
};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric as _};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::{FilterExt, LevelFilter, Targets};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Filter, SubscriberExt as _};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{Layer, fmt};

use crate::ConfigError;
use crate::loopback::is_loopback;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// The standard variables the OpenTelemetry SDK reads for the endpoint.
const ENDPOINT_VARS: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
];
/// The standard variables holding headers for every export request (often
/// a collector's key), most specific first.
const HEADERS_VARS: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
    "OTEL_EXPORTER_OTLP_HEADERS",
];
/// The standard variables naming the OTLP protocol, most specific first.
const PROTOCOL_VARS: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
];
/// The one protocol this build speaks.
const HTTP_PROTOBUF: &str = "http/protobuf";
/// The SDK's variable for the batch queue's bound, and its default.
const QUEUE_SIZE_VAR: &str = "OTEL_BSP_MAX_QUEUE_SIZE";
const QUEUE_SIZE_DEFAULT: usize = 2_048;
/// The longest shutdown waits for the last spans to reach the collector.
const SHUTDOWN_FLUSH_BOUND: Duration = Duration::from_secs(5);
/// What spans reach the exporter: this service's and its adapters' spans
/// (info and above), never the exporter's own HTTP client's.
const TRACE_FILTER: &str = "info,opentelemetry=off,opentelemetry_sdk=off,opentelemetry_otlp=off,\
                            reqwest=off,hyper=off,hyper_util=off,h2=off";

/// Spans dropped because the queue was full, and because the collector did
/// not take their batch (unreachable, slow past the export timeout, or
/// refusing it).
static DROPPED_QUEUE_FULL: AtomicU64 = AtomicU64::new(0);
static DROPPED_EXPORT_FAILED: AtomicU64 = AtomicU64::new(0);

/// Log lines waiting for the writer thread at most; a line past it is dropped.
pub(crate) const LOG_LINES_BUFFERED: usize = 128_000;

/// Counts the lines the non-blocking writer dropped, once installed.
static LOG_LINES_DROPPED: std::sync::OnceLock<tracing_appender::non_blocking::ErrorCounter> =
    std::sync::OnceLock::new();

/// Log lines dropped since start because [`LOG_LINES_BUFFERED`] lines were
/// already waiting to be written.
fn log_lines_dropped() -> u64 {
    LOG_LINES_DROPPED
        .get()
        .map_or(0, |counter| counter.dropped_lines() as u64)
}

/// Spans lost on the way to the collector since start: `(queue_full,
/// export_failed)`. Both stay 0 while export is off.
fn spans_dropped() -> (u64, u64) {
    (
        DROPPED_QUEUE_FULL.load(Ordering::Relaxed),
        DROPPED_EXPORT_FAILED.load(Ordering::Relaxed),
    )
}

/// Where spans go, when export is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum OtlpEndpoint {
    /// `--otlp-endpoint`: a base URL, to which `/v1/traces` is appended as
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` would have it.
    Flag(reqwest::Url),
    /// Whatever the standard variables say, read by the SDK itself.
    Environment,
}

impl OtlpEndpoint {
    /// The endpoint from the flag or, without it, from the standard
    /// variables; `None` (export off) when neither is set.
    ///
    /// # Errors
    ///
    /// An endpoint that is not an `http://` URL, headers
    /// (`OTEL_EXPORTER_OTLP_HEADERS`, `…_TRACES_HEADERS`) to be sent to an
    /// endpoint that is not loopback, or a protocol other than
    /// `http/protobuf`. The message names the setting, never its value
    /// (a URL may carry credentials, headers a key).
    pub(crate) fn configured(flag: Option<&str>) -> Result<Option<Self>, ConfigError> {
        let from_env = ENDPOINT_VARS.iter().find_map(|var| {
            std::env::var(var)
                .ok()
                .filter(|v| !v.is_empty())
                .map(|v| (var, v))
        });
        let (endpoint, setting, url) = match (flag, from_env) {
            (Some(flag), _) => {
                let url = http_url("--otlp-endpoint", flag)?;
                (Self::Flag(url.clone()), "--otlp-endpoint", url)
            }
            (None, Some((var, value))) => (Self::Environment, *var, http_url(var, &value)?),
            (None, None) => return Ok(None),
        };
        // The CLI's rule for its API key: a secret goes over plain HTTP only
        // to this machine.
        if let Some(var) = HEADERS_VARS
            .iter()
            .find(|var| std::env::var_os(var).is_some_and(|value| !value.is_empty()))
            && !is_loopback(&url)
        {
            return Err(ConfigError(format!(
                "{var} is set and {setting} is plain http:// to a host that is not loopback: \
                 the headers (often a collector's key) would cross the network in clear text; \
                 export to a collector on this host, or unset {var}"
            )));
        }
        if let Some((var, protocol)) = PROTOCOL_VARS
            .iter()
            .find_map(|var| std::env::var(var).ok().map(|v| (var, v)))
            && protocol != HTTP_PROTOBUF
        {
            return Err(ConfigError(format!(
                "{var}: only {HTTP_PROTOBUF} is supported; unset it or set it to {HTTP_PROTOBUF}"
            )));
        }
        Ok(Some(endpoint))
    }
}

/// `text` as an `http://` URL with a host; the error names `setting` only.
fn http_url(setting: &str, text: &str) -> Result<reqwest::Url, ConfigError> {
    let url =
        reqwest::Url::parse(text).map_err(|_| ConfigError(format!("{setting} is not a URL")))?;
    if url.scheme() != "http" || url.host().is_none() {
        return Err(ConfigError(format!(
            "{setting} must be an http:// URL with a host (spans are sent over plain HTTP: \
             point it at a collector on this host or its private network)"
        )));
    }
    Ok(url)
}

/// Flushes and stops span export when dropped, waiting at most
/// [`SHUTDOWN_FLUSH_BOUND`], then writes the log lines still waiting.
/// Drop it outside the async runtime.
#[must_use = "dropping it stops span export and logging"]
pub(crate) struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
    /// Dropped after the provider (fields drop after `drop`): flushes the
    /// log lines and stops the writer thread.
    _logs: tracing_appender::non_blocking::WorkerGuard,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(err) = provider.shutdown_with_timeout(SHUTDOWN_FLUSH_BOUND)
        {
            eprintln!("warning: the last spans may not have reached the collector: {err}");
        }
    }
}

/// Installs the global subscriber: the log lines `filter` selects and, with
/// an endpoint, every span at info and above over OTLP, whatever `filter`.
pub(crate) fn init(
    format: LogFormat,
    filter: &str,
    otlp: Option<OtlpEndpoint>,
) -> Result<TelemetryGuard, ConfigError> {
    let filter = log_filter(filter)?;
    let (writer, log_guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .buffered_lines_limit(LOG_LINES_BUFFERED)
        .lossy(true)
        .thread_name("session-log-writer")
        .finish(CoalescingWriter::new(std::io::stderr()));
    let _ = LOG_LINES_DROPPED.set(writer.error_counter());
    let logs = match format {
        LogFormat::Text => fmt::layer()
            .with_writer(writer)
            // Colour codes only for people watching a terminal, never in log files.
            .with_ansi(std::io::stderr().is_terminal())
            .with_target(false)
            .boxed(),
        LogFormat::Json => json_lines(writer).boxed(),
    }
    .with_filter(filter);
    let provider = otlp.map(tracer_provider).transpose()?;
    let traces = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("session-app"))
            .with_location(false)
            .with_threads(false)
            .with_tracked_inactivity(false)
            .with_filter(EnvFilter::new(TRACE_FILTER))
    });
    // Without export, no layer at all rather than an absent one: tracing
    // treats `None` as a layer interested in everything, so every span
    // would be created and entered even when `--log` wants none of them.
    let registry = tracing_subscriber::registry().with(logs);
    match traces {
        Some(traces) => registry.with(traces).try_init(),
        None => registry.try_init(),
    }
    .map_err(|err| ConfigError(format!("could not install the logger: {err}")))?;
    Ok(TelemetryGuard {
        provider,
        _logs: log_guard,
    })
}

/// The JSON log lines: tracing-subscriber's JSON format (the event's fields
/// flattened, the current span, the span list) as json-subscriber writes
/// it, which keeps each span's fields as JSON and copies them into a line
/// instead of parsing them back for every line, as tracing-subscriber's own
/// formatter does (about 9 µs a line against 3 µs, measured in process).
fn json_lines<S>(writer: impl for<'w> MakeWriter<'w> + Send + Sync + 'static) -> impl Layer<S>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    json_subscriber::fmt::layer()
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(true)
        .with_writer(writer)
}

/// The target prefix of the spans log lines carry: the service's own (the
/// request span of session-http's request layer, with the request id). The use-case and store spans are
/// for traces; a log layer that wanted them would have each allocated,
/// entered and closed per request even without an OTLP endpoint.
const LOGGED_SPAN_TARGET: &str = "session_http";

/// The log layer's filter: the events `spec` selects (`--log`, in
/// `tracing` filter syntax), inside only the service's own spans
/// ([`LOGGED_SPAN_TARGET`]). A plain level (`info`, `warn`, `off`) is a
/// static level check, and target directives (`warn,session_http=info`) a
/// static [`Targets`] match decided once per callsite; only directives
/// that name spans or fields (`[span{field}]=debug`) go through
/// [`EnvFilter`], which also tracks every span it sees.
///
/// # Errors
///
/// A `spec` that is neither a level nor a valid filter.
fn log_filter<S>(spec: &str) -> Result<impl Filter<S> + Send + Sync + 'static, ConfigError>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    let events =
        if let Ok(level) = spec.trim().parse::<LevelFilter>() {
            FilterExt::boxed(level)
        } else if let Ok(targets) = spec.parse::<Targets>() {
            FilterExt::boxed(targets)
        } else {
            FilterExt::boxed(EnvFilter::try_new(spec).map_err(|err| {
                ConfigError(format!("--log {spec:?} is not a valid filter: {err}"))
            })?)
        };
    let own_spans = tracing_subscriber::filter::filter_fn(|metadata| {
        !metadata.is_span() || metadata.target().starts_with(LOGGED_SPAN_TARGET)
    });
    Ok(events.and(own_spans))
}

/// How long the log writer thread waits after writing, so that the lines
/// emitted meanwhile leave in one write instead of a write (and a wake-up
/// of the writer thread) each. It bounds how late a line reaches stderr.
const LOG_WRITE_INTERVAL: Duration = Duration::from_millis(10);

/// The log writer thread's writer: lines are buffered, and each flush (the
/// writer thread flushes once it has written every line waiting) writes
/// them at once and then pauses for [`LOG_WRITE_INTERVAL`]. Lines emitted
/// during the pause queue up, so under load a write carries many lines and
/// the threads emitting them never wake the writer; a quiet service's line
/// is written as soon as it comes.
struct CoalescingWriter<W: std::io::Write> {
    inner: std::io::BufWriter<W>,
}

impl<W: std::io::Write> CoalescingWriter<W> {
    fn new(inner: W) -> Self {
        Self {
            inner: std::io::BufWriter::with_capacity(64 * 1024, inner),
        }
    }
}

impl<W: std::io::Write> std::io::Write for CoalescingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.inner.write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.inner.write_all(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let wrote = !self.inner.buffer().is_empty();
        self.inner.flush()?;
        if wrote {
            std::thread::sleep(LOG_WRITE_INTERVAL);
        }
        Ok(())
    }
}

fn tracer_provider(endpoint: OtlpEndpoint) -> Result<SdkTracerProvider, ConfigError> {
    let mut exporter = OtlpExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary);
    if let OtlpEndpoint::Flag(base) = &endpoint {
        let traces = base
            .join("v1/traces")
            .map_err(|_| ConfigError("--otlp-endpoint is not a base URL".to_owned()))?;
        exporter = exporter.with_endpoint(traces.as_str());
    }
    // The SDK's message may quote the endpoint (and its credentials): name the settings instead.
    let exporter = exporter.build().map_err(|_| {
        ConfigError(
            "could not set up OTLP export: check --otlp-endpoint and the OTEL_EXPORTER_OTLP_* \
             variables"
                .to_owned(),
        )
    })?;
    let capacity = std::env::var(QUEUE_SIZE_VAR)
        .ok()
        .and_then(|size| size.parse::<usize>().ok())
        .filter(|size| *size > 0)
        .unwrap_or(QUEUE_SIZE_DEFAULT);
    let queued = Arc::new(AtomicUsize::new(0));
    let batches = BatchSpanProcessor::builder(CountingExporter {
        inner: exporter,
        queued: Arc::clone(&queued),
    })
    // The other OTEL_BSP_* variables (delay, batch size, timeout) as the SDK reads them.
    .with_batch_config(
        BatchConfigBuilder::default()
            .with_max_queue_size(capacity)
            .build(),
    )
    .build();
    let mut resource = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name("session-app");
    }
    Ok(SdkTracerProvider::builder()
        .with_span_processor(BoundedQueue {
            inner: batches,
            queued,
            capacity,
        })
        .with_resource(resource.build())
        .build())
}

/// The batch processor behind a queue bound this process can count: a span
/// ended while `capacity` spans wait for export is dropped and counted. The
/// SDK's processor drops at the same bound but only logs the total.
#[derive(Debug)]
struct BoundedQueue {
    inner: BatchSpanProcessor,
    /// Spans handed to `inner` and not yet handed to the exporter.
    queued: Arc<AtomicUsize>,
    capacity: usize,
}

impl SpanProcessor for BoundedQueue {
    fn on_start(&self, span: &mut Span, cx: &opentelemetry::Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        let taken = self
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |queued| {
                (queued < self.capacity).then_some(queued + 1)
            });
        if taken.is_ok() {
            self.inner.on_end(span);
        } else {
            DROPPED_QUEUE_FULL.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// The OTLP exporter, releasing queue places as batches leave the queue and
/// counting the spans of every batch the collector did not take.
#[derive(Debug)]
struct CountingExporter<E> {
    inner: E,
    queued: Arc<AtomicUsize>,
}

impl<E: SpanExporter> SpanExporter for CountingExporter<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len();
        self.queued.fetch_sub(spans, Ordering::AcqRel);
        let exported = self.inner.export(batch).await;
        if exported.is_err() {
            DROPPED_EXPORT_FAILED.fetch_add(spans as u64, Ordering::Relaxed);
        }
        exported
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// What telemetry loses, read at each scrape for `/metrics`: log lines the
/// writer thread dropped, and spans that never reached the collector.
#[derive(Debug)]
pub(crate) struct DropsCollector;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DropLabels {
    reason: &'static str,
}

impl Collector for DropsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let dropped = ConstCounter::new(log_lines_dropped());
        let metric = encoder.encode_descriptor(
            "log_lines_dropped",
            "Log lines dropped because the writer thread was that many lines behind \
             (the request is never held up for a log line)",
            None,
            dropped.metric_type(),
        )?;
        dropped.encode(metric)?;
        let (queue_full, export_failed) = spans_dropped();
        let mut family = encoder.encode_descriptor(
            "otlp_spans_dropped",
            "Spans not exported over OTLP, by reason: queue_full (ended while the export queue \
             was full) or export_failed (the collector was unreachable, too slow or refused them)",
            None,
            MetricType::Counter,
        )?;
        for (reason, dropped) in [("queue_full", queue_full), ("export_failed", export_failed)] {
            let labels = DropLabels { reason };
            ConstCounter::new(dropped).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::PoisonError;

    use tracing_subscriber::layer::SubscriberExt as _;

    use std::io;
    use std::sync::Mutex;

    use super::*;

    /// Lines written, shared with the test.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Self;

        fn make_writer(&'a self) -> Self {
            self.clone()
        }
    }

    impl Captured {
        /// The lines written so far, parsed, without their timestamps.
        fn lines(&self) -> Vec<serde_json::Value> {
            let bytes = self
                .0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            String::from_utf8(bytes)
                .expect("UTF-8")
                .lines()
                .map(|line| {
                    let mut line: serde_json::Value =
                        serde_json::from_str(line).expect("a JSON line");
                    line.as_object_mut().expect("an object").remove("timestamp");
                    line
                })
                .collect()
        }
    }

    /// Spans nested two deep, fields recorded later (new names, and one
    /// recorded twice), events with no span, with strings to escape and
    /// every kind of value the service logs.
    fn log_a_request() {
        tracing::info!(answer = 42, "before any span");
        let request = tracing::info_span!(
            "request",
            otel.status_code = tracing::field::Empty,
            http.route = "/v1/sessions/resolve",
            request_id = "0f1e",
            status = tracing::field::Empty,
            r#type = ?"a \"debug\" value",
            ratio = f64::NAN,
            big = u128::MAX,
            flag = false,
            signed = -7_i64,
        );
        let _request = request.enter();
        let resolve = tracing::info_span!("session.resolve", session.id = tracing::field::Empty);
        {
            let _resolve = resolve.enter();
            resolve.record("session.id", "019a-\"quoted\"\n");
            tracing::warn!(ok = true, ratio = 0.5, signed = -3_i64, text = %"a\tb", "inside");
        }
        request.record("status", 200_u64);
        request.record("status", 401_u64);
        request.record("otel.status_code", "error");
        tracing::info!(latency_us = 17_u64, "request finished");
    }

    /// The service's JSON lines are tracing-subscriber's JSON format, line
    /// for line and value for value (only the timestamp differs), so what
    /// parses its lines parses ours.
    #[test]
    fn json_lines_are_the_json_formatters_own() {
        let theirs = Captured::default();
        tracing::subscriber::with_default(
            tracing_subscriber::registry().with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_writer(theirs.clone()),
            ),
            log_a_request,
        );
        let ours = Captured::default();
        tracing::subscriber::with_default(
            tracing_subscriber::registry().with(json_lines(ours.clone())),
            log_a_request,
        );
        let (expected, written) = (theirs.lines(), ours.lines());
        assert_eq!(written.len(), 3, "{written:#?}");
        assert_eq!(written, expected);
        // Spot checks that the comparison covers what the service relies on.
        let finished = &written[2];
        assert_eq!(finished["span"]["request_id"], "0f1e");
        assert_eq!(finished["span"]["status"], 401);
        assert_eq!(finished["span"]["otel.status_code"], "error");
        assert_eq!(finished["spans"][0]["name"], "request");
        assert_eq!(written[1]["span"]["session.id"], "019a-\"quoted\"\n");
    }

    /// The JSON lines `spec` selects from a request span (the service's
    /// own target) holding a use-case span (session-core's), with a line
    /// logged inside both.
    fn log_inside_a_use_case(spec: &str) -> Vec<serde_json::Value> {
        let captured = Captured::default();
        let subscriber = tracing_subscriber::registry().with(
            json_lines(captured.clone()).with_filter(log_filter(spec).expect("a valid filter")),
        );
        tracing::subscriber::with_default(subscriber, || {
            let request = tracing::info_span!(
                target: "session_http::wrap",
                "request",
                request_id = "0f1e"
            );
            let _request = request.enter();
            let use_case = tracing::info_span!(target: "session_core::service", "session.resolve");
            let _use_case = use_case.enter();
            tracing::warn!(target: "session_core::service", "inside");
            tracing::debug!(target: "session_core::service", "below the level");
        });
        let text = String::from_utf8(
            captured
                .0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        )
        .expect("UTF-8");
        text.lines()
            .map(|line| serde_json::from_str(line).expect("a JSON line"))
            .collect()
    }

    /// The log layer takes no interest in the use-case span (so, without
    /// export, nothing does and it is never created); the line logged
    /// inside it still carries the request span (its request id), and the
    /// level still selects the lines. The same with target directives
    /// (`Targets`) and with a span directive (`EnvFilter`).
    #[test]
    fn log_lines_carry_the_request_span_and_no_use_case_span() {
        for (spec, lines_expected) in [("info", 1), ("debug,tokio=off", 2), ("info,[x]=warn", 1)] {
            let lines = log_inside_a_use_case(spec);
            assert_eq!(lines.len(), lines_expected, "{spec}: {lines:#?}");
            let inside = &lines[0];
            assert_eq!(inside["message"], "inside");
            assert_eq!(inside["span"]["request_id"], "0f1e", "{spec}");
            let spans = inside["spans"].as_array().expect("a span list");
            assert_eq!(spans.len(), 1, "{spec}: {inside}");
            assert_eq!(spans[0]["name"], "request");
        }
        // Below the request span's level neither span is created, as before.
        let lines = log_inside_a_use_case("warn");
        assert_eq!(lines.len(), 1, "{lines:#?}");
        assert!(lines[0].get("spans").is_none(), "{lines:#?}");
        let lines = log_inside_a_use_case("off");
        assert!(lines.is_empty(), "{lines:#?}");
        let lines = log_inside_a_use_case("error,session_core=debug");
        assert_eq!(lines.len(), 2, "directives still apply: {lines:#?}");
    }

    /// A filter that is neither a level nor valid directives is refused.
    #[test]
    fn an_invalid_log_filter_is_refused() {
        let err = log_filter::<tracing_subscriber::Registry>("info,=[").err();
        assert!(err.is_some());
    }
}
