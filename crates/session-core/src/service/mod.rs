//! The use cases: create, resolve, get, revoke, revoke all, list, warm, readiness.
//!
//! Following a shared store's change log is in [`follow`].

mod follow;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::cache::SessionCache;
use crate::clock::{Clock, SystemClock, to_micros};
use crate::feed::{Change, ChangeLog};
use crate::miss::{MissPolicy, RecentHashes, TokenBucket};
use crate::session::{AccountId, ClientMetadata, Session, SessionId};
use crate::store::{InvalidRow, ListScope, RevokeOutcome, SessionStore, StoreError};
use crate::token::{SessionToken, TokenHash, TokenHashState};

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
    /// warm or a log read meets one (a row can be met by both).
    pub rows_skipped: u64,
    /// Wake-up hints received (each costs at most one log read).
    pub wake_ups: u64,
    /// Store reads caused by cache misses.
    pub miss_reads: u64,
    /// Misses answered "invalid" without a read because the rate limit was reached.
    pub miss_reads_rejected: u64,
    /// Misses answered from the negative cache, without a read.
    pub negative_hits: u64,
}

/// How long and how many revoked token hashes are remembered, so a change
/// that arrives late cannot put a revoked session back.
const TOMBSTONE_TTL: Duration = Duration::from_secs(600);
const TOMBSTONE_CAPACITY: usize = 100_000;

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
}

impl SessionServiceBuilder {
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
        SessionService {
            inner: Arc::new(Inner {
                store: self.store,
                cache: self.cache,
                clock: self.clock,
                warm_page_size: self.warm_page_size,
                warm: AtomicBool::new(false),
                writes: Mutex::new(CacheWrites {
                    tombstones: shared
                        .then(|| RecentHashes::new(TOMBSTONE_CAPACITY, Some(TOMBSTONE_TTL))),
                    ..CacheWrites::default()
                }),
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
                last_warm: Mutex::new(None),
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
    writes: Mutex<CacheWrites>,
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
    last_warm: Mutex<Option<WarmReport>>,
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

/// Bookkeeping that orders cache changes after the store commits that cause them.
#[derive(Default)]
struct CacheWrites {
    /// Token hashes committed (or being committed) to the store whose cache
    /// insert has not happened yet, and whether a revocation of them was
    /// applied meanwhile. A create racing a revoke-all of its account must not
    /// put the revoked session back into the cache.
    pending: HashMap<TokenHash, PendingInsert, TokenHashState>,
    /// While a warm is loading, every cache change, replayed onto what the warm
    /// read so it neither resurrects a revoked session nor drops a new one.
    journal: Option<Vec<CacheOp>>,
    /// With a change feed: recently revoked hashes, so a creation change that
    /// arrives after the revocation was applied (this process's own, or a
    /// miss-path read that lost a race) cannot put the session back.
    tombstones: Option<RecentHashes>,
}

#[derive(Default)]
struct PendingInsert {
    waiters: u32,
    revoked: bool,
}

enum CacheOp {
    Insert(Arc<Session>),
    Remove(TokenHash),
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
        }
    }

    /// Issues a new session for `account_id`.
    ///
    /// # Errors
    ///
    /// [`Error::Store`] if the store did not commit; the cache is unchanged.
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
    /// (and for a miss past the rate limit); [`Error::Store`] if a miss-path
    /// read failed.
    pub async fn resolve(&self, token: &str) -> Result<Arc<Session>, Error> {
        if !self.is_warm() {
            return Err(Error::NotReady);
        }
        let hash = TokenHash::of_token_text(token).map_err(|_| Error::InvalidToken)?;
        if let Some(session) = self.inner.cache.get(&hash) {
            return Ok(session);
        }
        if self.inner.feed.is_none() {
            return Err(Error::InvalidToken);
        }
        self.inner.read_through(hash).await
    }

    /// A session by id, active or revoked.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] or [`Error::Store`].
    pub async fn get(&self, id: SessionId) -> Result<Session, Error> {
        self.inner.store.get(id).await?.ok_or(Error::NotFound)
    }

    /// Revokes one session. Idempotent.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] if no session has this id; [`Error::Store`] if the
    /// store did not commit, in which case the cache is unchanged.
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

    /// An account's sessions, newest first.
    ///
    /// # Errors
    ///
    /// [`Error::Store`].
    pub async fn list(&self, account: AccountId, scope: ListScope) -> Result<Vec<Session>, Error> {
        Ok(self.inner.store.list_for_account(account, scope).await?)
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
        match tokio::spawn(change(Arc::clone(&self.inner))).await {
            Ok(result) => result,
            Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
            Err(_) => Err(Error::Store(StoreError::Unavailable(
                "the runtime is shutting down".into(),
            ))),
        }
    }
}

impl Inner {
    fn writes(&self) -> MutexGuard<'_, CacheWrites> {
        lock(&self.writes)
    }

    /// The miss path: one store read for a hash not in the cache, unless the
    /// store is known not to have it or the read budget is spent.
    async fn read_through(self: &Arc<Self>, hash: TokenHash) -> Result<Arc<Session>, Error> {
        let now = self.clock.monotonic();
        if lock(&self.negative).contains(&hash, now) {
            self.stats.negative_hits.fetch_add(1, Ordering::Relaxed);
            return Err(Error::InvalidToken);
        }
        if !lock(&self.miss_reads).try_take(now) {
            self.stats
                .miss_reads_rejected
                .fetch_add(1, Ordering::Relaxed);
            return Err(Error::InvalidToken);
        }
        self.stats.miss_reads.fetch_add(1, Ordering::Relaxed);
        // Pending before the read: a revocation applied while it is in flight
        // keeps its result out of the cache.
        let pending = self.begin_insert(hash);
        match self.store.find_active_by_hash(&hash).await? {
            Some(session) => {
                let session = Arc::new(session);
                if pending.finish(&session) {
                    Ok(session)
                } else {
                    Err(Error::InvalidToken)
                }
            }
            None => {
                lock(&self.negative).insert(hash, now);
                Err(Error::InvalidToken)
            }
        }
    }

    fn apply_change(&self, change: Change) {
        match change {
            // A session stored already revoked is not one to cache.
            Change::Created(session) if !session.is_active() => {}
            Change::Created(session) => {
                let session = Arc::new(session);
                let mut writes = self.writes();
                if !writes.is_revoked(&session.token_hash, self.clock.monotonic()) {
                    lock(&self.negative).remove(&session.token_hash);
                    self.cache.insert(Arc::clone(&session));
                    if let Some(journal) = writes.journal.as_mut() {
                        journal.push(CacheOp::Insert(session));
                    }
                }
            }
            Change::Revoked(hashes) => self.apply_removals(&hashes),
            // The follower reloads everything itself; nothing to apply here.
            Change::Reload => return,
        }
        self.stats.changes_applied.fetch_add(1, Ordering::Relaxed);
    }

    /// Stored rows the domain rejects: left out of the cache (their tokens
    /// cannot be resolved), counted and logged by row, never by value.
    fn reject(&self, rejected: Vec<InvalidRow>) {
        if rejected.is_empty() {
            return;
        }
        self.stats
            .rows_skipped
            .fetch_add(rejected.len() as u64, Ordering::Relaxed);
        for row in rejected {
            tracing::error!(error = %row, "skipping a stored session the domain rejects");
        }
    }

    fn begin_insert(self: &Arc<Self>, hash: TokenHash) -> PendingGuard {
        self.writes().pending.entry(hash).or_default().waiters += 1;
        PendingGuard {
            inner: Arc::clone(self),
            hash,
            done: false,
        }
    }

    /// Drops revoked sessions from the cache, after the store committed the revocation.
    fn apply_removals(&self, hashes: &[TokenHash]) {
        if hashes.is_empty() {
            return;
        }
        let now = self.clock.monotonic();
        let mut writes = self.writes();
        self.cache.remove_many(hashes);
        for hash in hashes {
            if let Some(pending) = writes.pending.get_mut(hash) {
                pending.revoked = true;
            }
            if let Some(tombstones) = writes.tombstones.as_mut() {
                tombstones.insert(*hash, now);
            }
        }
        if let Some(journal) = writes.journal.as_mut() {
            journal.extend(hashes.iter().copied().map(CacheOp::Remove));
        }
    }

    async fn warm(&self) -> Result<WarmReport, Error> {
        let _one_at_a_time = self.warming.lock().await;
        let started = Instant::now();
        // Journal before the first read: anything committed later is replayed.
        self.writes().journal = Some(Vec::new());
        let loaded = self.load_active(started).await;
        let mut writes = self.writes();
        let journal = writes.journal.take().unwrap_or_default();
        let (mut sessions, pages) = loaded?;

        let mut removed = HashSet::with_hasher(TokenHashState);
        let mut inserted = Vec::new();
        for op in journal {
            match op {
                CacheOp::Insert(session) => inserted.push(session),
                CacheOp::Remove(hash) => {
                    removed.insert(hash);
                }
            }
        }
        if !removed.is_empty() {
            sessions.retain(|session| !removed.contains(&session.token_hash));
        }
        sessions.extend(
            inserted
                .into_iter()
                .filter(|session| !removed.contains(&session.token_hash)),
        );
        self.cache.replace_all(sessions);
        self.warm.store(true, Ordering::Release);
        self.stats.full_loads.fetch_add(1, Ordering::Relaxed);
        let report = WarmReport {
            sessions: self.cache.len(),
            pages,
            elapsed: started.elapsed(),
        };
        drop(writes);
        *lock(&self.last_warm) = Some(report);
        tracing::info!(
            sessions = report.sessions,
            pages = report.pages,
            elapsed_ms = report.elapsed.as_millis(),
            "session cache warm"
        );
        Ok(report)
    }

    async fn load_active(&self, started: Instant) -> Result<(Vec<Arc<Session>>, usize), Error> {
        const PROGRESS_EVERY: Duration = Duration::from_secs(1);
        let mut sessions = Vec::new();
        let mut after = None;
        let mut pages = 0;
        let mut last_report = started;
        loop {
            let page = self.store.active_page(after, self.warm_page_size).await?;
            pages += 1;
            self.reject(page.rejected);
            sessions.extend(page.sessions.into_iter().map(Arc::new));
            after = page.resume_after;
            if after.is_none() {
                return Ok((sessions, pages));
            }
            if last_report.elapsed() >= PROGRESS_EVERY {
                last_report = Instant::now();
                tracing::info!(
                    loaded = sessions.len(),
                    elapsed_ms = started.elapsed().as_millis(),
                    "warming session cache"
                );
            }
        }
    }
}

/// A cache insert that waits for its store write. Dropped without
/// [`finish`](Self::finish) (the write failed), it leaves the cache untouched.
struct PendingGuard {
    inner: Arc<Inner>,
    hash: TokenHash,
    done: bool,
}

impl PendingGuard {
    /// Inserts the session the store returned, unless a revocation of it was
    /// applied meanwhile; tells whether it did.
    fn finish(mut self, session: &Arc<Session>) -> bool {
        let now = self.inner.clock.monotonic();
        let mut writes = self.inner.writes();
        let revoked_in_flight = release(&mut writes, self.hash);
        self.done = true;
        if revoked_in_flight || writes.is_revoked(&self.hash, now) {
            return false;
        }
        self.inner.cache.insert(Arc::clone(session));
        if let Some(journal) = writes.journal.as_mut() {
            journal.push(CacheOp::Insert(Arc::clone(session)));
        }
        true
    }
}

impl CacheWrites {
    /// Whether this hash was revoked recently (only tracked with a change feed).
    fn is_revoked(&mut self, hash: &TokenHash, now: Instant) -> bool {
        self.tombstones
            .as_mut()
            .is_some_and(|tombstones| tombstones.contains(hash, now))
    }
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        if !self.done {
            release(&mut self.inner.writes(), self.hash);
        }
    }
}

/// Releases one waiter on a pending hash and tells whether it was revoked meanwhile.
fn release(writes: &mut CacheWrites, hash: TokenHash) -> bool {
    let Some(pending) = writes.pending.get_mut(&hash) else {
        return false;
    };
    let revoked = pending.revoked;
    pending.waiters -= 1;
    if pending.waiters == 0 {
        writes.pending.remove(&hash);
    }
    revoked
}
