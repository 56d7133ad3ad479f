//! Prometheus metrics: request durations (see `request_metrics.rs`),
//! resolves by outcome, forward auth, cache size, warm duration, the change
//! log, store calls (`store_metrics.rs`) and pools, and whatever the caller
//! registers besides (`session-app`: its connections and its log and span
//! export). Labels come from fixed sets, never from input. README's
//! "Metrics" lists them all.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use session_core::SessionService;
use session_core::status::{JobStats, ResolveCounts};

use crate::request_metrics::{self, RequestDurations};
use crate::store_metrics::StoreMetrics;

/// Every metric the service exports, in its own registry.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    /// The metrics named by OpenTelemetry's conventions, without the
    /// `session_` prefix.
    conventional: Registry,
    request_durations: std::sync::Arc<RequestDurations>,
    /// One pre-resolved counter per [`ForwardAuthOutcome`], so an answer
    /// costs no label lookup.
    forward_auths: [Counter; ForwardAuthOutcome::ALL.len()],
}

impl Metrics {
    /// Creates and registers every metric; the service's own state (cache
    /// size, warm, resolves, change log, miss path) and the store's pools
    /// are read at each scrape. `store` holds the store calls' metrics,
    /// counted by the decorator it wrapped the store in; each of `register`
    /// adds the caller's own metrics to the registry, after the service's.
    pub(crate) fn new(
        service: SessionService,
        store: &StoreMetrics,
        register: Vec<crate::state::Register>,
    ) -> Self {
        let mut registry = Registry::with_prefix("session");
        registry.register(
            "store_call_duration_seconds",
            "Duration of store calls by operation (the store port's method; log_* for the \
             change log's), failed ones included",
            store.durations(),
        );
        registry.register(
            "store_errors",
            "Failed store calls by operation and kind: unavailable (answered 503, retry) or \
             failed (500)",
            store.errors(),
        );
        let forward_auths = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "forward_auths",
            "Forward-auth answers by outcome: active (200), missing or invalid (401), \
             not_ready or unavailable (503), failed (500)",
            forward_auths.clone(),
        );
        registry.register_collector(Box::new(ServiceCollector(service)));
        let mut conventional = Registry::default();
        let request_durations = std::sync::Arc::new(RequestDurations::new(crate::ROUTES));
        conventional.register(
            request_metrics::NAME,
            request_metrics::HELP,
            request_metrics::Shared(std::sync::Arc::clone(&request_durations)),
        );
        registry.register_collector(Box::new(PoolCollector(store.clone())));
        for register in register {
            register(&mut registry);
        }
        let forward_auths = ForwardAuthOutcome::ALL.map(|outcome| {
            forward_auths
                .get_or_create(&OutcomeLabels {
                    outcome: outcome.label(),
                })
                .clone()
        });
        Self {
            registry,
            conventional,
            request_durations,
            forward_auths,
        }
    }

    /// Counts a forward-auth answer.
    pub(crate) fn forward_auth(&self, outcome: ForwardAuthOutcome) {
        self.forward_auths[outcome as usize].inc();
    }

    /// Request durations by method, route and status.
    pub(crate) fn request_durations(&self) -> &RequestDurations {
        &self.request_durations
    }

    /// The metrics in the OpenMetrics text format.
    pub(crate) fn render(&self) -> String {
        use prometheus_client::encoding::text::{encode_eof, encode_registry};
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = encode_registry(&mut text, &self.registry)
            .and_then(|()| encode_registry(&mut text, &self.conventional))
            .and_then(|()| encode_eof(&mut text));
        text
    }
}

/// A forward-auth answer, as `session_forward_auths_total` labels it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ForwardAuthOutcome {
    /// 200: an active session.
    Active,
    /// 401: no token was presented.
    Missing,
    /// 401: a malformed, unknown or revoked token, or two different ones;
    /// 400: an identity header spelt with `_` for `-`.
    Invalid,
    /// 503: the cache is not warm yet.
    NotReady,
    /// 503: a miss could not be decided: the change log could not be read in time.
    Unavailable,
    /// 500: an error retrying will not fix.
    Failed,
}

impl ForwardAuthOutcome {
    const ALL: [Self; 6] = [
        Self::Active,
        Self::Missing,
        Self::Invalid,
        Self::NotReady,
        Self::Unavailable,
        Self::Failed,
    ];

    const fn label(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Missing => "missing",
            Self::Invalid => "invalid",
            Self::NotReady => "not_ready",
            Self::Unavailable => "unavailable",
            Self::Failed => "failed",
        }
    }
}

/// Reads the service's own state at each scrape, so the numbers are never stale.
#[derive(Debug)]
struct ServiceCollector(SessionService);

impl Collector for ServiceCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        // One snapshot, so the families of a scrape agree with each other.
        let status = self.0.status();
        let cached = i64::try_from(status.cached_sessions).unwrap_or(i64::MAX);
        gauge(
            &mut encoder,
            "cache_sessions",
            "Active sessions in the cache",
            cached,
        )?;
        if let Some(bytes) = status.cache_bytes {
            gauge(
                &mut encoder,
                "cache_bytes",
                "Bytes the cache occupies as allocated: its tables and the records it holds \
                 (in compact mode the index and the bounded record cache)",
                i64::try_from(bytes).unwrap_or(i64::MAX),
            )?;
        }
        let warm = i64::from(status.cache_warm);
        gauge(
            &mut encoder,
            "cache_warm",
            "1 once the cache has completed a warm",
            warm,
        )?;
        if let Some(report) = status.last_warm {
            let seconds = ConstGauge::new(report.elapsed.as_secs_f64());
            let metric = encoder.encode_descriptor(
                "cache_warm_duration_seconds",
                "How long the last completed warm took",
                None,
                seconds.metric_type(),
            )?;
            seconds.encode(metric)?;
        }
        if let Some(lag) = status.change_log {
            // Before the first complete read the lag is unknown: reported as
            // +Inf, which any alert on a bound fires on.
            let seconds = ConstGauge::new(lag.lag.map_or(f64::INFINITY, |lag| lag.as_secs_f64()));
            let metric = encoder.encode_descriptor(
                "change_log_lag_seconds",
                "Time since the start of the last read that reached the end of the change log: \
                 every change committed before it is applied",
                None,
                seconds.metric_type(),
            )?;
            seconds.encode(metric)?;
            let bound = ConstGauge::new(lag.bound.as_secs_f64());
            let metric = encoder.encode_descriptor(
                "change_log_max_staleness_seconds",
                "The lag past which this instance reports not ready",
                None,
                bound.metric_type(),
            )?;
            bound.encode(metric)?;
        }
        resolves(&mut encoder, &status.resolves)?;
        let stats = status.change_log_stats;
        for (name, help, value) in [
            (
                "change_log_changes",
                "Changes from the change log applied to the cache",
                stats.changes_applied,
            ),
            (
                "change_log_read_failures",
                "Reads of the change log that failed and were retried from the same position",
                stats.read_failures,
            ),
            (
                "cache_full_loads",
                "Loads of every active session: the first warm, and reloads after the \
                 change log expired past this instance's position or was truncated",
                stats.full_loads,
            ),
            (
                "store_rows_skipped",
                "Stored sessions skipped because the domain rejects them, each time a warm, a \
                 change-log read or a list meets one (logged by session id)",
                stats.rows_skipped,
            ),
            (
                "change_log_wake_ups",
                "Notifications that woke the change-log reader (each costs at most one read)",
                stats.wake_ups,
            ),
            (
                "change_log_reads",
                "Reads of the change log (one query of at most a page each), whatever asked: a \
                 wake-up, the poll interval, or cache misses, which share reads and ask for at \
                 most 200 a second",
                stats.reads,
            ),
            (
                "miss_waits",
                "Cache misses that waited for the cache to catch up with the change log \
                 before they were answered",
                stats.miss_waits,
            ),
        ] {
            let counter = ConstCounter::new(value);
            let metric = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
            counter.encode(metric)?;
        }
        if let Some(seen) = status.last_seen {
            for (name, help, value) in [
                (
                    "last_seen_marks_flushed",
                    "Last-seen times written to the store",
                    seen.flushed,
                ),
                (
                    "last_seen_marks_dropped",
                    "Last-seen marks lost: queue full, or kept too long \
                  while the store failed",
                    seen.dropped,
                ),
            ] {
                let counter = ConstCounter::new(value);
                let metric = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
                counter.encode(metric)?;
            }
        }
        if let Some(stats) = status.idle_revocation {
            job(
                &mut encoder,
                &stats,
                [
                    "idle_revoked",
                    "Sessions idle revocation revoked, by this instance",
                ],
                "idle",
                "idle revocation",
            )?;
        }
        if let Some(stats) = status.retention {
            job(
                &mut encoder,
                &stats,
                [
                    "retention_sessions",
                    "Revoked sessions retention deleted or erased, by this instance",
                ],
                "retention",
                "retention",
            )?;
        }
        job(
            &mut encoder,
            &status.not_before_sweep,
            [
                "not_before_revoked",
                "Sessions the not-before sweep revoked with reason admin, by this instance",
            ],
            "not_before",
            "the not-before sweep",
        )?;
        if let Some(mark) = status.not_before {
            let at = ConstGauge::new(mark.unix_timestamp_nanos() as f64 / 1e9);
            let metric = encoder.encode_descriptor(
                "not_before_mark_timestamp_seconds",
                "The not-before mark this instance applies, in seconds since 1970: sessions \
                 created before it are refused",
                None,
                at.metric_type(),
            )?;
            at.encode(metric)?;
        }
        Ok(())
    }
}

/// Every resolve, by the outcome session-core decided for it.
fn resolves(
    encoder: &mut DescriptorEncoder<'_>,
    counts: &ResolveCounts,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(
        "resolves",
        "Token resolves (the resolve route, forward auth) by outcome: hit (in the cache), \
         caught_up_active or caught_up_inactive (not cached; found, or not, once the cache \
         caught up with the change log), negative (not cached, and the cache is complete or \
         the token was revoked recently), malformed (refused before any lookup), not_ready \
         (503), store_unavailable (503: the change log could not be read in time to decide)",
        None,
        prometheus_client::metrics::MetricType::Counter,
    )?;
    for (outcome, count) in counts.iter() {
        let labels = OutcomeLabels {
            outcome: outcome.as_str(),
        };
        ConstCounter::new(count).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// The store's connection pools, read at each scrape.
#[derive(Debug)]
struct PoolCollector(StoreMetrics);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    pool: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolStateLabels {
    pool: &'static str,
    state: &'static str,
}

impl Collector for PoolCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let pools = self.0.pools();
        if pools.is_empty() {
            return Ok(());
        }
        let gauge_type = prometheus_client::metrics::MetricType::Gauge;
        let value = |n: usize| ConstGauge::new(i64::try_from(n).unwrap_or(i64::MAX));
        let mut family = encoder.encode_descriptor(
            "store_pool_connections",
            "Store connections open now, by pool and state: in_use (held by a store call) or \
             idle",
            None,
            gauge_type,
        )?;
        for pool in &pools {
            for (state, n) in [
                ("in_use", pool.in_use),
                ("idle", pool.open.saturating_sub(pool.in_use)),
            ] {
                let labels = PoolStateLabels {
                    pool: pool.pool,
                    state,
                };
                value(n).encode(family.encode_family(&labels)?)?;
            }
        }
        for (name, help, read) in [
            (
                "store_pool_waiting",
                "Store calls waiting for a connection now, by pool",
                (|pool| pool.waiting) as fn(&crate::store_metrics::PoolUse) -> usize,
            ),
            (
                "store_pool_max_connections",
                "The most connections each pool opens",
                |pool| pool.max,
            ),
        ] {
            let mut family = encoder.encode_descriptor(name, help, None, gauge_type)?;
            for pool in &pools {
                let labels = PoolLabels { pool: pool.pool };
                value(read(pool)).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

fn gauge(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: i64,
) -> Result<(), std::fmt::Error> {
    let gauge = ConstGauge::new(value);
    let metric = encoder.encode_descriptor(name, help, None, gauge.metric_type())?;
    gauge.encode(metric)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

/// A maintenance job's families: the sessions it changed, its rounds by
/// how they ended, and its last round's end and duration.
fn job(
    encoder: &mut DescriptorEncoder<'_>,
    stats: &JobStats,
    [sessions, sessions_help]: [&str; 2],
    prefix: &str,
    job: &str,
) -> Result<(), std::fmt::Error> {
    let rounds = [
        (
            format!("{prefix}_rounds"),
            format!("Rounds of {job} this instance ran to their end"),
            stats.rounds,
        ),
        (
            format!("{prefix}_rounds_busy"),
            format!("Rounds of {job} this instance stopped because another instance ran it"),
            stats.busy_rounds,
        ),
        (
            format!("{prefix}_rounds_failed"),
            format!("Rounds of {job} stopped by a failed batch, retried at the next round"),
            stats.failed_rounds,
        ),
    ];
    let counter = ConstCounter::new(stats.sessions);
    let metric = encoder.encode_descriptor(sessions, sessions_help, None, counter.metric_type())?;
    counter.encode(metric)?;
    for (name, help, value) in rounds {
        let counter = ConstCounter::new(value);
        let metric = encoder.encode_descriptor(&name, &help, None, counter.metric_type())?;
        counter.encode(metric)?;
    }
    if let Some(ended) = stats.last_round_end {
        let at = ConstGauge::new(ended.unix_timestamp_nanos() as f64 / 1e9);
        let (name, help) = (
            format!("{prefix}_last_round_timestamp_seconds"),
            format!("When the last round of {job} ended, in seconds since 1970"),
        );
        let metric = encoder.encode_descriptor(&name, &help, None, at.metric_type())?;
        at.encode(metric)?;
        let took = ConstGauge::new(stats.last_round.as_secs_f64());
        let (name, help) = (
            format!("{prefix}_last_round_duration_seconds"),
            format!("How long the last round of {job} took"),
        );
        let metric = encoder.encode_descriptor(&name, &help, None, took.metric_type())?;
        took.encode(metric)?;
    }
    Ok(())
}
