//! Store call metrics: a decorator around the store ports that times every
//! call and counts its failures, and the store's connection pool, read at
//! each scrape. The adapters stay unaware of metrics.
//!
//! It has no HTTP in it, but it lives here, beside the other families of
//! `/metrics`: it wraps any `dyn SessionStore` (it depends on no store
//! crate), its `kind` label follows the status `ApiError` answers for a
//! store error, and a host mounting the API measures its own store with
//! it the way session-app does.

use std::sync::Arc;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use session_core::port::change_log::{ChangeLog, ChangeLogDecorator, ChangeLogOperation};
use session_core::port::store::{SessionStore, StoreDecorator, StoreError, StoreOperation};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct OperationLabels {
    operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ErrorLabels {
    operation: &'static str,
    kind: &'static str,
}

type DurationFamily = Family<OperationLabels, Histogram, fn() -> Histogram>;

/// How one group of store connections is used at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolUse {
    /// Which group, as the `pool` label (session-app's are `postgres`,
    /// `sqlite_readers` and `sqlite_writer`).
    pub pool: &'static str,
    /// The most connections it holds.
    pub max: usize,
    /// Connections open now.
    pub open: usize,
    /// Connections a store call is using now.
    pub in_use: usize,
    /// Store calls waiting for a connection now.
    pub waiting: usize,
}

/// Reads the store's connection pools at a scrape.
pub type PoolReader = Arc<dyn Fn() -> Vec<PoolUse> + Send + Sync>;

/// The store's metrics: call durations and failures by port method, and
/// its pools, served on `/metrics` as `session_store_*`. Wrap the store
/// (and its change log) with [`store`](Self::store) and
/// [`change_log`](Self::change_log) before building the service, then hand
/// the same metrics to [`ApiStateBuilder::store_metrics`](crate::ApiStateBuilder::store_metrics).
/// Cheap to clone; clones share the counts.
#[derive(Clone)]
pub struct StoreMetrics {
    durations: DurationFamily,
    /// One pre-resolved histogram per port method, so a call does no label
    /// lookup.
    by_operation: Arc<ByOperation>,
    errors: Family<ErrorLabels, Counter>,
    pools: Option<PoolReader>,
}

impl std::fmt::Debug for StoreMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreMetrics")
            .field("pools", &self.pools.is_some())
            .finish_non_exhaustive()
    }
}

impl Default for StoreMetrics {
    fn default() -> Self {
        Self::new(None)
    }
}

impl StoreMetrics {
    /// Metrics for a store whose pools `pools` reads (none: no pool metrics).
    #[must_use]
    pub fn new(pools: Option<PoolReader>) -> Self {
        // 10 µs (a SQLite read from the page cache) to about 5 s (past the
        // default checkout timeout).
        let durations: DurationFamily =
            Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.000_01, 2.0, 20)));
        let histogram = |operation| {
            durations
                .get_or_create(&OperationLabels { operation })
                .clone()
        };
        let by_operation = Arc::new(ByOperation {
            store: StoreOperation::ALL.map(|operation| histogram(operation.as_str())),
            log: ChangeLogOperation::ALL.map(|operation| histogram(operation.as_str())),
        });
        Self {
            durations,
            by_operation,
            errors: Family::default(),
            pools,
        }
    }

    /// `store`, with every call timed and its failures counted here.
    #[must_use]
    pub fn store(&self, store: Arc<dyn SessionStore>) -> Arc<dyn SessionStore> {
        Arc::new(Measured {
            inner: store,
            metrics: self.clone(),
        })
    }

    /// `log`, with every call timed and its failures counted here.
    #[must_use]
    pub fn change_log(&self, log: Arc<dyn ChangeLog>) -> Arc<dyn ChangeLog> {
        Arc::new(Measured {
            inner: log,
            metrics: self.clone(),
        })
    }

    pub(crate) fn durations(&self) -> DurationFamily {
        self.durations.clone()
    }

    pub(crate) fn errors(&self) -> Family<ErrorLabels, Counter> {
        self.errors.clone()
    }

    pub(crate) fn pools(&self) -> Vec<PoolUse> {
        self.pools.as_ref().map(|read| read()).unwrap_or_default()
    }

    /// Times `call` into `histogram` and counts its failure under `operation`.
    async fn measure<T>(
        &self,
        histogram: &Histogram,
        operation: &'static str,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let started = Instant::now();
        let result = call.await;
        histogram.observe(started.elapsed().as_secs_f64());
        if let Err(err) = &result {
            self.errors
                .get_or_create(&ErrorLabels {
                    operation,
                    kind: error_kind(err),
                })
                .inc();
        }
        result
    }
}

/// The `kind` label of a store error, by what the client is told after it
/// (see `ApiError`'s conversion): `unavailable` (503, retry) for what a
/// retry may fix, `failed` (500) for anything else.
const fn error_kind(err: &StoreError) -> &'static str {
    if err.is_retryable() {
        "unavailable"
    } else {
        "failed"
    }
}

/// The duration histogram of each port method, at the method's index in
/// its operation's `ALL`.
struct ByOperation {
    store: [Histogram; StoreOperation::ALL.len()],
    log: [Histogram; ChangeLogOperation::ALL.len()],
}

/// A port wrapped by [`StoreMetrics`]: every call is measured, labelled
/// with its operation's name.
struct Measured<P: ?Sized> {
    inner: Arc<P>,
    metrics: StoreMetrics,
}

impl StoreDecorator for Measured<dyn SessionStore> {
    fn inner_store(&self) -> &dyn SessionStore {
        &*self.inner
    }

    async fn around<T: Send>(
        &self,
        operation: StoreOperation,
        call: impl Future<Output = Result<T, StoreError>> + Send,
    ) -> Result<T, StoreError> {
        let histogram = &self.metrics.by_operation.store[operation as usize];
        self.metrics
            .measure(histogram, operation.as_str(), call)
            .await
    }
}

impl ChangeLogDecorator for Measured<dyn ChangeLog> {
    fn inner_log(&self) -> &dyn ChangeLog {
        &*self.inner
    }

    async fn around<T: Send>(
        &self,
        operation: ChangeLogOperation,
        call: impl Future<Output = Result<T, StoreError>> + Send,
    ) -> Result<T, StoreError> {
        let histogram = &self.metrics.by_operation.log[operation as usize];
        self.metrics
            .measure(histogram, operation.as_str(), call)
            .await
    }
}
