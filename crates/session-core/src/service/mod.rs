//! The use cases: create, resolve, get, revoke, revoke all, list, warm, readiness.
//!
//! Three state machines serve them, each in its own module: [`writes`], the
//! order of cache writes after store commits (and the warm's journal);
//! [`follow`], following a shared store's change log; [`miss_path`], the
//! rate-limited store read for a token not in the cache.
//!
//! # Locks
//!
//! All are `std` mutexes held for a few map operations, never across an
//! await, except `warming`, which an async warm holds throughout. When
//! several are held, they are taken in this order and no other:
//!
//! 1. `warming` (one warm at a time);
//! 2. `writes` (pending inserts, the warm's journal, tombstones; a cache
//!    change that must be ordered against others happens under it);
//! 3. `negative` (hashes the store did not know).
//!
//! `miss_reads`, `caught_up_at`, `last_warm` and the last-seen flush state
//! (taken by flushes only, never by a resolve) are leaves: taken alone.

mod follow;
mod miss_path;
mod outcome;
mod writes;

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use tracing::Instrument as _;

use crate::cache::SessionCache;
use crate::clock::{Clock, SystemClock, to_micros};
use crate::feed::ChangeLog;
use crate::last_seen::{self, LastSeenMarks, LastSeenSettings, LastSeenStats};
use crate::miss::{MissPolicy, RecentHashes, TokenBucket};
use crate::session::{AccountId, ClientMetadata, Session, SessionId};
use crate::store::{
    AccountPage, ListScope, PageRequest, RevokeOutcome, SeenAt, SessionStore, StoreError,
};
use crate::token::{SessionToken, TokenHash};

use outcome::ResolveCounters;
pub use outcome::{ResolveCounts, ResolveOutcome};

/// Why a use case failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The token is malformed, unknown or revoked. Deliberately one error for
    /// all three, so callers cannot probe which tokens exist.
    #[error("invalid session token")]
    InvalidToken,
    /// The cache has not finished its first warm, so a miss would not mean
    /// "no such session". Retry shortly; do not log the user out.
    #[error("session cache is not warm yet")]
    NotReady,
    /// With a change log, a token missing from the cache could not be
    /// checked against the store now: misses have spent their store-read
    /// budget ([`MissPolicy`]). The token may be valid (a session another
    /// process just created). Retry shortly; do not log the user out.
    #[error("too many cache misses to check against the store now")]
    Busy,
    /// No session has this id.
    #[error("session not found")]
    NotFound,
    /// The store failed; nothing was changed, in the store or the cache.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Error {
    /// Whether this is the store being unavailable, so the caller may retry.
    #[must_use]
    pub const fn is_store_unavailable(&self) -> bool {
        matches!(self, Self::Store(StoreError::Unavailable(_)))
    }
}

/// A session just created, with its token: the one time the raw token exists.
#[derive(Debug)]
pub struct NewSession {
    /// The token to hand to the client once.
    pub token: SessionToken,
    /// The stored session.
    pub session: Arc<Session>,
}

/// What revoking one existing session did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revocation {
    /// It was active and is revoked now.
    Revoked,
    /// It had been revoked before.
    AlreadyRevoked,
}

/// What a completed warm loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WarmReport {
    /// Active sessions in the cache once the warm completed.
    pub sessions: usize,
    /// Pages read from the store.
    pub pages: usize,
    /// How long the warm took.
    pub elapsed: Duration,
}

/// The service's readiness, check by check.
#[derive(Debug)]
pub struct Readiness {
    /// Whether the cache has completed a warm.
    pub cache_warm: bool,
    /// The store's health check.
    pub store: Result<(), StoreError>,
    /// With a change log, how far behind it the cache is; `None` without one.
    pub change_log: Option<LogLag>,
}

impl Readiness {
    /// Ready to answer resolves authoritatively and accept writes.
    #[must_use]
    pub fn is_ready(&self) -> bool {
        self.cache_warm
            && self.store.is_ok()
            && self.change_log.is_none_or(|lag| lag.within_bound())
    }
}

/// How far a cache that follows a change log is behind it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogLag {
    /// Time since the start of the last read that reached the end of the
    /// log: every change committed before that instant is applied. `None`
    /// until the first such read.
    pub lag: Option<Duration>,
    /// The most lag at which the service reports ready (its staleness bound).
    pub bound: Duration,
}

impl LogLag {
    /// Whether every change committed more than [`bound`](Self::bound) ago is applied.
    #[must_use]
    pub fn within_bound(&self) -> bool {
        self.lag.is_some_and(|lag| lag <= self.bound)
    }
}

/// Counters of the change log and the miss path, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncStats {
    /// Changes from the log applied to the cache.
    pub changes_applied: u64,
    /// Reads of the change log that failed; the follower retried from its cursor.
    pub resyncs: u64,
    /// Completed loads of every active session: the first warm, and each
    /// reload after the log expired past the cursor or asked for one.
    pub full_loads: u64,
    /// Stored rows skipped because the domain rejects them, each time a
    /// warm, a log read or a list meets one (a row can be met by each).
    pub rows_skipped: u64,
    /// Wake-up hints received (each costs at most one log read).
    pub wake_ups: u64,
    /// Store reads caused by cache misses.
    pub miss_reads: u64,
    /// Misses answered [`Error::Busy`] without a read because the rate
    /// limit was reached.
    pub miss_reads_rejected: u64,
    /// Misses answered "invalid" without a read: from the negative cache, or
    /// the hash was revoked recently (a tombstone).
    pub negative_hits: u64,
}

/// Runs the session use cases over a store and a cache.
///
/// Cheap to clone; clones share state. Writes commit to the store first and
/// only then change the cache, and they run to completion even if the caller's
/// future is dropped, so a committed revocation always reaches the cache.
#[derive(Clone)]
pub struct SessionService {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SessionService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionService")
            .field("cache_warm", &self.is_warm())
            .field("cached_sessions", &self.inner.cache.len())
            .finish_non_exhaustive()
    }
}

/// Builds a [`SessionService`].
#[must_use]
pub struct SessionServiceBuilder {
    store: Arc<dyn SessionStore>,
    cache: Arc<dyn SessionCache>,
    clock: Arc<dyn Clock>,
    warm_page_size: u32,
    feed: Option<Arc<dyn ChangeLog>>,
    follow: follow::Settings,
    miss_policy: MissPolicy,
    last_seen: Option<LastSeenSettings>,
}

impl SessionServiceBuilder {
    /// Turns on last-seen activity (off by default): each resolve marks its
    /// session seen in the current minute, in memory, and
    /// [`SessionService::keep_last_seen`] writes the marks to the store in
    /// batches. See [`SessionService::last_seen`].
    pub fn last_seen(mut self, settings: LastSeenSettings) -> Self {
        self.last_seen = Some(settings);
        self
    }

    /// Uses `clock` for `created_at` and `revoked_at` (default: the system clock).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Rows per store query while warming (default 5,000; at least 1).
    pub fn warm_page_size(mut self, rows: u32) -> Self {
        self.warm_page_size = rows.max(1);
        self
    }

    /// Follows `log` to learn of writes other processes commit to a shared
    /// store. Cache misses then read the store once (see [`MissPolicy`]), and
    /// [`SessionService::keep_in_sync`] must run for the cache to stay current.
    pub fn change_log(mut self, log: Arc<dyn ChangeLog>) -> Self {
        self.feed = Some(log);
        self
    }

    /// With a change log, the most the cache may lag behind it while the
    /// service reports ready (default 2 s): every change committed longer ago
    /// than this has been applied.
    pub fn max_staleness(mut self, bound: Duration) -> Self {
        self.follow.max_staleness = bound;
        self
    }

    /// With a change log, how often it is read when no wake-up arrives
    /// (default 500 ms; at least 1 ms).
    pub fn poll_interval(mut self, every: Duration) -> Self {
        self.follow.poll_interval = every.max(Duration::from_millis(1));
        self
    }

    /// How misses are handled when there is a change feed.
    pub fn miss_policy(mut self, policy: MissPolicy) -> Self {
        self.miss_policy = policy;
        self
    }

    /// Builds the service. The cache is not warm until [`SessionService::warm`] completes.
    pub fn build(self) -> SessionService {
        let shared = self.feed.is_some();
        let last_seen = self.last_seen.map(|settings| {
            (
                LastSeenMarks::new(settings, self.clock.now()),
                settings.flush_interval,
            )
        });
        SessionService {
            inner: Arc::new(Inner {
                store: self.store,
                cache: self.cache,
                clock: self.clock,
                warm_page_size: self.warm_page_size,
                warm: AtomicBool::new(false),
                writes: Mutex::new(writes::CacheWrites::new(shared)),
                warming: tokio::sync::Mutex::new(()),
                feed: self.feed,
                follow: self.follow,
                caught_up_at: Mutex::new(None),
                negative: Mutex::new(RecentHashes::new(self.miss_policy.negative_entries, None)),
                miss_reads: Mutex::new(TokenBucket::new(
                    self.miss_policy.reads_per_second,
                    self.miss_policy.burst,
                )),
                stats: Stats::default(),
                resolves: ResolveCounters::default(),
                last_warm: Mutex::new(None),
                last_seen,
            }),
        }
    }
}

struct Inner {
    store: Arc<dyn SessionStore>,
    cache: Arc<dyn SessionCache>,
    clock: Arc<dyn Clock>,
    warm_page_size: u32,
    warm: AtomicBool,
    writes: Mutex<writes::CacheWrites>,
    /// One warm at a time.
    warming: tokio::sync::Mutex<()>,
    feed: Option<Arc<dyn ChangeLog>>,
    follow: follow::Settings,
    /// When the last read that reached the end of the change log started.
    caught_up_at: Mutex<Option<Instant>>,
    /// Token hashes the store did not know as active.
    negative: Mutex<RecentHashes>,
    /// Limits store reads caused by misses.
    miss_reads: Mutex<TokenBucket>,
    stats: Stats,
    /// Every resolve, by outcome.
    resolves: ResolveCounters,
    last_warm: Mutex<Option<WarmReport>>,
    /// With last-seen activity on: the marks, and how often they are flushed.
    last_seen: Option<(LastSeenMarks, Duration)>,
}

#[derive(Default)]
struct Stats {
    changes_applied: AtomicU64,
    resyncs: AtomicU64,
    full_loads: AtomicU64,
    rows_skipped: AtomicU64,
    wake_ups: AtomicU64,
    miss_reads: AtomicU64,
    miss_reads_rejected: AtomicU64,
    negative_hits: AtomicU64,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl SessionService {
    /// Starts building a service over `store` and `cache`.
    pub fn builder(
        store: Arc<dyn SessionStore>,
        cache: Arc<dyn SessionCache>,
    ) -> SessionServiceBuilder {
        SessionServiceBuilder {
            store,
            cache,
            clock: Arc::new(SystemClock),
            warm_page_size: 5_000,
            feed: None,
            follow: follow::Settings::default(),
            miss_policy: MissPolicy::default(),
            last_seen: None,
        }
    }

    /// Issues a new session for `account_id`.
    ///
    /// # Errors
    ///
    /// [`Error::Store`] if the store did not commit; the cache is unchanged.
    #[tracing::instrument(name = "session.create", skip_all,
        fields(session.id = tracing::field::Empty, account.id = %account_id))]
    pub async fn create(
        &self,
        account_id: AccountId,
        metadata: ClientMetadata,
    ) -> Result<NewSession, Error> {
        let token = SessionToken::generate();
        let session = Session {
            id: SessionId::new(),
            account_id,
            token_hash: token.hash(),
            created_at: to_micros(self.inner.clock.now()),
            revoked_at: None,
            metadata,
        };
        tracing::Span::current().record("session.id", tracing::field::display(session.id));
        let session = self
            .run_to_completion(|inner| async move {
                let pending = inner.begin_insert(session.token_hash);
                inner.store.insert(&session).await?;
                let session = Arc::new(session);
                pending.finish(&session);
                Ok(session)
            })
            .await?;
        Ok(NewSession { token, session })
    }

    /// The active session a token belongs to: parse, hash, cache lookup.
    ///
    /// Without a change feed a miss is final and the store is never touched.
    /// With one, a miss may be a session another process just created, so it
    /// costs at most one store read, within the [`MissPolicy`] rate limit;
    /// hashes the store did not know are remembered and not read again.
    ///
    /// # Errors
    ///
    /// [`Error::NotReady`] before the first warm completes, whatever the token;
    /// [`Error::InvalidToken`] for a malformed, unknown or revoked token alike
    /// (unknown: not in the cache, and with a change log, not in the store or
    /// already known not to be); [`Error::Busy`] for a miss past the rate
    /// limit, which has not been checked; [`Error::Store`] if a miss-path
    /// read failed.
    ///
    /// Every call that returns is counted under one [`ResolveOutcome`]
    /// (see [`resolve_counts`](Self::resolve_counts)), at the cost of one
    /// relaxed atomic increment.
    pub async fn resolve(&self, token: &str) -> Result<Arc<Session>, Error> {
        // Never the token, nor its hash: the span learns the session only once found.
        let span = tracing::info_span!("session.resolve", session.id = tracing::field::Empty);
        // The resolve path is a few hundred nanoseconds: without a subscriber
        // that wants the span, it runs without the instrumenting wrapper.
        if span.is_disabled() {
            return self.resolve_untraced(token).await;
        }
        let found = self.resolve_untraced(token).instrument(span.clone()).await;
        if let Ok(session) = &found {
            span.record("session.id", tracing::field::display(session.id));
        }
        found
    }

    /// Each way out counts its [`ResolveOutcome`] once, where it is known. A
    /// caller that stops waiting during a miss read is not counted: it was
    /// given no answer.
    async fn resolve_untraced(&self, token: &str) -> Result<Arc<Session>, Error> {
        let counters = &self.inner.resolves;
        if !self.is_warm() {
            counters.count(ResolveOutcome::NotReady);
            return Err(Error::NotReady);
        }
        let Ok(hash) = TokenHash::of_token_text(token) else {
            counters.count(ResolveOutcome::Malformed);
            return Err(Error::InvalidToken);
        };
        if let Some(session) = self.inner.cache.get(&hash) {
            counters.count(ResolveOutcome::Hit);
            self.mark_seen(&session);
            return Ok(session);
        }
        if self.inner.feed.is_none() {
            // The cache holds every active session: a miss is final.
            counters.count(ResolveOutcome::Negative);
            return Err(Error::InvalidToken);
        }
        let (found, outcome) = self.inner.read_through(hash).await;
        counters.count(outcome);
        let session = found?;
        self.mark_seen(&session);
        Ok(session)
    }

    /// With last-seen activity on, marks `session` seen this minute: no
    /// lock, no await, no allocation once it is marked this minute.
    #[inline]
    fn mark_seen(&self, session: &Session) {
        if let Some((marks, _)) = &self.inner.last_seen {
            marks.mark(session.id);
        }
    }

    /// Writes the last-seen marks made since the last flush to the store,
    /// one [`SessionStore::record_last_seen`] call per batch of at most
    /// [`LAST_SEEN_MAX_BATCH`](crate::LAST_SEEN_MAX_BATCH) sessions, and
    /// moves the current minute to the clock's. Returns how many sessions'
    /// times were written. A no-op with last-seen activity off.
    ///
    /// # Errors
    ///
    /// [`Error::Store`] if a store call failed: its batch is kept for the
    /// next flush (bounded by the queue's capacity; the excess is dropped
    /// and counted in [`LastSeenStats::dropped`]).
    pub async fn flush_last_seen(&self) -> Result<usize, Error> {
        let Some((marks, _)) = &self.inner.last_seen else {
            return Ok(0);
        };
        marks.set_now(self.inner.clock.now());
        let mut written = 0;
        loop {
            let batch = marks.take_batch();
            if batch.is_empty() {
                return Ok(written);
            }
            let seen = last_seen::to_seen(&batch);
            if let Err(err) = self.inner.store.record_last_seen(&seen).await {
                marks.keep(batch);
                return Err(err.into());
            }
            marks.flushed(seen.len());
            written += seen.len();
        }
    }

    /// With last-seen activity on, runs for ever: moves the current minute
    /// to the clock's every second and flushes the marks every flush
    /// interval (a failed flush is logged at `warn` and retried at the
    /// next). Returns at once with it off. Call
    /// [`flush_last_seen`](Self::flush_last_seen) once more at shutdown.
    pub async fn keep_last_seen(&self) {
        let Some((marks, flush_interval)) = &self.inner.last_seen else {
            return;
        };
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_flush = tokio::time::Instant::now();
        loop {
            tick.tick().await;
            marks.set_now(self.inner.clock.now());
            if last_flush.elapsed() < *flush_interval {
                continue;
            }
            last_flush = tokio::time::Instant::now();
            if let Err(err) = self.flush_last_seen().await {
                tracing::warn!(error = %err, "could not record when sessions were last seen; retrying at the next flush");
            }
        }
    }

    /// When each of `ids` was last seen (resolved), to the minute, as the
    /// store has recorded it; sessions never seen are absent. Empty, with
    /// no store call, when last-seen activity is off.
    ///
    /// # Errors
    ///
    /// [`Error::Store`].
    pub async fn last_seen(&self, ids: &[SessionId]) -> Result<Vec<SeenAt>, Error> {
        if self.inner.last_seen.is_none() || ids.is_empty() {
            return Ok(Vec::new());
        }
        Ok(self.inner.store.last_seen(ids).await?)
    }

    /// Counters of last-seen activity; `None` with it off.
    #[must_use]
    pub fn last_seen_stats(&self) -> Option<LastSeenStats> {
        self.inner
            .last_seen
            .as_ref()
            .map(|(marks, _)| marks.stats())
    }

    /// A session by id, active or revoked.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] or [`Error::Store`].
    #[tracing::instrument(name = "session.get", skip_all, fields(session.id = %id))]
    pub async fn get(&self, id: SessionId) -> Result<Session, Error> {
        self.inner.store.get(id).await?.ok_or(Error::NotFound)
    }

    /// Revokes one session. Idempotent.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] if no session has this id; [`Error::Store`] if the
    /// store did not commit, in which case the cache is unchanged.
    #[tracing::instrument(name = "session.revoke", skip_all, fields(session.id = %id))]
    pub async fn revoke(&self, id: SessionId) -> Result<Revocation, Error> {
        self.run_to_completion(move |inner| async move {
            let at = to_micros(inner.clock.now());
            match inner.store.revoke(id, at).await? {
                RevokeOutcome::Revoked { token_hash } => {
                    inner.apply_removals(&[token_hash]);
                    Ok(Revocation::Revoked)
                }
                // The cache should not hold it; if it somehow does (a
                // change this instance missed), the store is the truth.
                RevokeOutcome::AlreadyRevoked { token_hash } => {
                    inner.apply_removals(&[token_hash]);
                    Ok(Revocation::AlreadyRevoked)
                }
                RevokeOutcome::NotFound => Err(Error::NotFound),
            }
        })
        .await
    }

    /// Revokes every active session of an account, except `except` if given
    /// ("log out everywhere else"). Returns how many were revoked.
    ///
    /// # Errors
    ///
    /// [`Error::Store`] if the store did not commit; the cache is unchanged.
    #[tracing::instrument(name = "session.revoke_all", skip_all, fields(account.id = %account))]
    pub async fn revoke_all(
        &self,
        account: AccountId,
        except: Option<SessionId>,
    ) -> Result<usize, Error> {
        self.run_to_completion(move |inner| async move {
            let at = to_micros(inner.clock.now());
            let hashes = inner
                .store
                .revoke_all_for_account(account, except, at)
                .await?;
            inner.apply_removals(&hashes);
            Ok(hashes.len())
        })
        .await
    }

    /// One page of an account's sessions, newest first, from the store
    /// (see [`SessionStore::list_for_account`]). Stored rows the domain
    /// rejects are left out, counted in [`SyncStats::rows_skipped`] and logged
    /// by row, as the warm does: one bad row does not hide the account's
    /// other sessions, and its token cannot be resolved anyway. The
    /// returned page's `rejected` is therefore always empty.
    ///
    /// # Errors
    ///
    /// [`Error::Store`].
    #[tracing::instrument(name = "session.list", skip_all, fields(account.id = %account))]
    pub async fn list(
        &self,
        account: AccountId,
        scope: ListScope,
        page: PageRequest,
    ) -> Result<AccountPage, Error> {
        let mut page = self
            .inner
            .store
            .list_for_account(account, scope, page)
            .await?;
        self.inner.reject(std::mem::take(&mut page.rejected));
        Ok(page)
    }

    /// Loads every active session from the store, page by page, and replaces
    /// the cache contents with them; the first success makes the service warm.
    ///
    /// Writes that commit while the warm reads are replayed onto its result
    /// before it is installed. During a re-warm, resolves keep answering from
    /// the previous contents.
    ///
    /// # Errors
    ///
    /// [`Error::Store`] if a page could not be read; the cache is unchanged.
    #[tracing::instrument(name = "session.warm", skip_all)]
    pub async fn warm(&self) -> Result<WarmReport, Error> {
        self.run_to_completion(|inner| async move { inner.warm().await })
            .await
    }

    /// With a change log, how far the cache is behind it; `None` without one.
    #[must_use]
    pub fn change_log_lag(&self) -> Option<LogLag> {
        self.inner.feed.as_ref().map(|_| self.inner.log_lag())
    }

    /// Whether a warm has completed, so resolves are authoritative.
    #[must_use]
    pub fn is_warm(&self) -> bool {
        self.inner.warm.load(Ordering::Acquire)
    }

    /// Checks the cache, the store, and the change feed if there is one.
    pub async fn readiness(&self) -> Readiness {
        Readiness {
            cache_warm: self.is_warm(),
            store: self.inner.store.health_check().await,
            change_log: self.change_log_lag(),
        }
    }

    /// The last completed warm, if any.
    #[must_use]
    pub fn last_warm(&self) -> Option<WarmReport> {
        *lock(&self.inner.last_warm)
    }

    /// Counters of the change feed and the miss path.
    #[must_use]
    pub fn sync_stats(&self) -> SyncStats {
        let stats = &self.inner.stats;
        SyncStats {
            changes_applied: stats.changes_applied.load(Ordering::Relaxed),
            resyncs: stats.resyncs.load(Ordering::Relaxed),
            full_loads: stats.full_loads.load(Ordering::Relaxed),
            rows_skipped: stats.rows_skipped.load(Ordering::Relaxed),
            wake_ups: stats.wake_ups.load(Ordering::Relaxed),
            miss_reads: stats.miss_reads.load(Ordering::Relaxed),
            miss_reads_rejected: stats.miss_reads_rejected.load(Ordering::Relaxed),
            negative_hits: stats.negative_hits.load(Ordering::Relaxed),
        }
    }

    /// How many resolves ended in each [`ResolveOutcome`] since the service
    /// was built: every call of [`resolve`](Self::resolve), whoever made it.
    #[must_use]
    pub fn resolve_counts(&self) -> ResolveCounts {
        self.inner.resolves.read()
    }

    /// How many active sessions the cache holds.
    #[must_use]
    pub fn cached_sessions(&self) -> usize {
        self.inner.cache.len()
    }

    /// Runs a state change on its own task, so that once the store has
    /// committed, the cache is updated even if the caller stops waiting.
    async fn run_to_completion<T, F, Fut>(&self, change: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(Arc<Inner>) -> Fut,
        Fut: Future<Output = Result<T, Error>> + Send + 'static,
    {
        // In the caller's span, so the store call stays a child of the use case.
        let change = change(Arc::clone(&self.inner)).in_current_span();
        match tokio::spawn(change).await {
            Ok(result) => result,
            Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
            Err(_) => Err(Error::Store(StoreError::Unavailable(
                "the runtime is shutting down".into(),
            ))),
        }
    }
}
