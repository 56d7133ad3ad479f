//! Store call metrics: a decorator around the store ports that times every
//! call and counts its failures, and the store's connection pool, read at
//! each scrape. The adapters stay unaware of metrics.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use session_core::{
    AccountId, AccountPage, ActivePage, ChangeLog, ListScope, LogPosition, LogRead, PageRequest,
    RevokeOutcome, SeenAt, Session, SessionId, SessionStore, StoreError, TokenHash, WakeUps,
};
use time::OffsetDateTime;

/// A store port method, as the `operation` label names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operation {
    Insert,
    FindActiveByHash,
    Get,
    Revoke,
    RevokeAllForAccount,
    ListForAccount,
    ActivePage,
    HealthCheck,
    RecordLastSeen,
    LastSeen,
    LogHead,
    LogRead,
    LogWakeUps,
    LogPrune,
}

impl Operation {
    const ALL: [Self; 14] = [
        Self::Insert,
        Self::FindActiveByHash,
        Self::Get,
        Self::Revoke,
        Self::RevokeAllForAccount,
        Self::ListForAccount,
        Self::ActivePage,
        Self::HealthCheck,
        Self::RecordLastSeen,
        Self::LastSeen,
        Self::LogHead,
        Self::LogRead,
        Self::LogWakeUps,
        Self::LogPrune,
    ];

    /// The port method's name (`log_` for the change log's).
    const fn label(self) -> &'static str {
        match self {
            Self::Insert => "insert",
            Self::FindActiveByHash => "find_active_by_hash",
            Self::Get => "get",
            Self::Revoke => "revoke",
            Self::RevokeAllForAccount => "revoke_all_for_account",
            Self::ListForAccount => "list_for_account",
            Self::ActivePage => "active_page",
            Self::RecordLastSeen => "record_last_seen",
            Self::LastSeen => "last_seen",
            Self::HealthCheck => "health_check",
            Self::LogHead => "log_head",
            Self::LogRead => "log_read",
            Self::LogWakeUps => "log_wake_ups",
            Self::LogPrune => "log_prune",
        }
    }
}

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
    /// Which group: `postgres`, `sqlite_readers` or `sqlite_writer`.
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
/// its pools. Cheap to clone; clones share the counts.
#[derive(Clone)]
pub struct StoreMetrics {
    durations: DurationFamily,
    /// One pre-resolved histogram per [`Operation`], so a call does no
    /// label lookup.
    by_operation: Arc<[Histogram; Operation::ALL.len()]>,
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
        let by_operation = Arc::new(Operation::ALL.map(|operation| {
            durations
                .get_or_create(&OperationLabels {
                    operation: operation.label(),
                })
                .clone()
        }));
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

    async fn measure<T>(
        &self,
        operation: Operation,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let started = Instant::now();
        let result = call.await;
        self.by_operation[operation as usize].observe(started.elapsed().as_secs_f64());
        if let Err(err) = &result {
            self.errors
                .get_or_create(&ErrorLabels {
                    operation: operation.label(),
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

/// A port wrapped by [`StoreMetrics`].
struct Measured<P: ?Sized> {
    inner: Arc<P>,
    metrics: StoreMetrics,
}

#[async_trait]
impl SessionStore for Measured<dyn SessionStore> {
    async fn insert(&self, session: &Session) -> Result<(), StoreError> {
        let call = self.inner.insert(session);
        self.metrics.measure(Operation::Insert, call).await
    }

    async fn find_active_by_hash(&self, hash: &TokenHash) -> Result<Option<Session>, StoreError> {
        let call = self.inner.find_active_by_hash(hash);
        self.metrics
            .measure(Operation::FindActiveByHash, call)
            .await
    }

    async fn get(&self, id: SessionId) -> Result<Option<Session>, StoreError> {
        let call = self.inner.get(id);
        self.metrics.measure(Operation::Get, call).await
    }

    async fn revoke(&self, id: SessionId, at: OffsetDateTime) -> Result<RevokeOutcome, StoreError> {
        let call = self.inner.revoke(id, at);
        self.metrics.measure(Operation::Revoke, call).await
    }

    async fn revoke_all_for_account(
        &self,
        account: AccountId,
        except: Option<SessionId>,
        at: OffsetDateTime,
    ) -> Result<Vec<TokenHash>, StoreError> {
        let call = self.inner.revoke_all_for_account(account, except, at);
        self.metrics
            .measure(Operation::RevokeAllForAccount, call)
            .await
    }

    async fn list_for_account(
        &self,
        account: AccountId,
        scope: ListScope,
        page: PageRequest,
    ) -> Result<AccountPage, StoreError> {
        let call = self.inner.list_for_account(account, scope, page);
        self.metrics.measure(Operation::ListForAccount, call).await
    }

    async fn active_page(
        &self,
        after: Option<SessionId>,
        limit: u32,
    ) -> Result<ActivePage, StoreError> {
        let call = self.inner.active_page(after, limit);
        self.metrics.measure(Operation::ActivePage, call).await
    }

    async fn health_check(&self) -> Result<(), StoreError> {
        let call = self.inner.health_check();
        self.metrics.measure(Operation::HealthCheck, call).await
    }

    async fn record_last_seen(&self, seen: &[SeenAt]) -> Result<(), StoreError> {
        let call = self.inner.record_last_seen(seen);
        self.metrics.measure(Operation::RecordLastSeen, call).await
    }

    async fn last_seen(&self, ids: &[SessionId]) -> Result<Vec<SeenAt>, StoreError> {
        let call = self.inner.last_seen(ids);
        self.metrics.measure(Operation::LastSeen, call).await
    }
}

#[async_trait]
impl ChangeLog for Measured<dyn ChangeLog> {
    async fn head(&self) -> Result<LogPosition, StoreError> {
        let call = self.inner.head();
        self.metrics.measure(Operation::LogHead, call).await
    }

    async fn read(&self, after: LogPosition, limit: u32) -> Result<LogRead, StoreError> {
        let call = self.inner.read(after, limit);
        self.metrics.measure(Operation::LogRead, call).await
    }

    async fn wake_ups(&self) -> Result<Box<dyn WakeUps>, StoreError> {
        let call = self.inner.wake_ups();
        self.metrics.measure(Operation::LogWakeUps, call).await
    }

    async fn prune(&self) -> Result<u64, StoreError> {
        let call = self.inner.prune();
        self.metrics.measure(Operation::LogPrune, call).await
    }
}
