//! The use cases: create, resolve, get, revoke, revoke all, list, warm, status.
//!
//! Three state machines serve them, each in its own module: [`writes`], the
//! order of cache writes after store commits (and the warm's journal);
//! [`change_log`], following a shared store's change log; [`miss_path`], a
//! consistent read from the cache for a token not in it. [`background`]
//! runs the change log's follower and the last-seen flush under one owner.
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
//! 3. `absent` (hashes a miss found absent).
//!
//! `caught_up_at`, `last_warm`, the last-seen flush state
//! (taken by flushes only, never by a resolve) and the maintenance jobs'
//! counters are leaves: taken alone.

mod background;
mod change_log;
mod maintenance;
mod miss_path;
mod writes;

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use tracing::Instrument as _;

use crate::config::{IdleRevocation, LastSeenSettings, Retention, SessionLimit};
use crate::last_seen::{self, LastSeenMarks};
use crate::port::cache::{CacheMode, SessionCache};
use crate::port::change_log::ChangeLog;
use crate::port::clock::{Clock, SystemClock, to_micros};
use crate::port::store::{LimitedInsert, RevokeOutcome, SeenAt, SessionStore, StoreError};
use crate::recent::RecentHashes;
use crate::session::{
    AccountId, ClientMetadata, RevocationReason, Revoker, Session, SessionId, SessionIdentity,
};
use crate::status::{ChangeLogStats, ResolveCounters, ResolveOutcome, ServiceStatus, WarmReport};
use crate::token::TokenHash;
use crate::token::session_token::SessionToken;
use crate::{AccountPage, ListScope, PageRequest};

pub use background::BackgroundTasks;
pub use maintenance::{Round, RoundEnd};

/// Token hashes remembered as absent after a miss, so a token sent again
/// (a logged-out tab that keeps its cookie) costs no further wait: about
/// 3 MiB at most.
const ABSENT_CAPACITY: usize = 65_536;

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
    /// The account holds the most active sessions it may (see
    /// [`SessionServiceBuilder::session_limit`]) and the policy refuses
    /// new ones: nothing was changed. Not retryable until one is revoked.
    #[error("the account holds the most sessions it may")]
    SessionLimitReached,
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

/// Runs the session use cases over a store and a cache.
///
/// Cheap to clone; clones share state. Writes commit to the store first and
/// only then change the cache, and they run to completion even if the caller's
/// future is dropped, so a committed revocation always reaches the cache.
///
/// Build it with [`builder`](Self::builder), then call [`start`](Self::start)
/// once and keep the [`BackgroundTasks`] it returns for as long as the
/// service serves: they warm the cache and keep it complete.
#[derive(Clone)]
pub struct SessionService {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SessionService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionService")
            .field("cache_warm", &self.inner.is_warm())
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
    change_log: Option<Arc<dyn ChangeLog>>,
    on_hint: Option<change_log::OnHint>,
    pacing: change_log::Pacing,
    last_seen: Option<LastSeenSettings>,
    limit: Option<SessionLimit>,
    not_before: Option<time::OffsetDateTime>,
    idle_revocation: Option<IdleRevocation>,
    retention: Option<Retention>,
}

impl SessionServiceBuilder {
    /// Starts with a "not before" mark (none by default): every session
    /// whose id was minted before `at` resolves as invalid, whatever the
    /// store and the cache hold. See [`SessionService::raise_not_before`].
    pub fn not_before(mut self, at: time::OffsetDateTime) -> Self {
        self.not_before = Some(at);
        self
    }

    /// Caps each account's active sessions (off by default): every
    /// [`create`](SessionService::create) goes through
    /// [`SessionStore::insert_within_limit`], which evicts the least
    /// recently seen sessions or refuses, as `limit.policy` says. Last-seen
    /// times count as the store has them: marks not yet flushed (see
    /// [`last_seen`](Self::last_seen)) do not. Every process writing to one
    /// store should be given the same limit: one without it inserts
    /// without counting.
    pub fn session_limit(mut self, limit: SessionLimit) -> Self {
        self.limit = Some(limit);
        self
    }

    /// Turns on idle revocation (off by default): the [`BackgroundTasks`]
    /// run [`SessionService::revoke_idle`] every
    /// [`IdleRevocation::interval`], the first round at start.
    pub fn idle_revocation(mut self, idle: IdleRevocation) -> Self {
        self.idle_revocation = Some(idle);
        self
    }

    /// Turns on retention of revoked sessions (off by default): the
    /// [`BackgroundTasks`] run [`SessionService::retain_revoked`] every
    /// [`Retention::interval`], the first round at start.
    pub fn retention(mut self, retention: Retention) -> Self {
        self.retention = Some(retention);
        self
    }

    /// Turns on last-seen activity (off by default): each resolve marks its
    /// session seen in the current minute, in memory, and the
    /// [`BackgroundTasks`] write the marks to the store in batches. See
    /// [`SessionService::last_seen`].
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
    /// store: the [`BackgroundTasks`] follow the change log to keep the cache
    /// current, and a cache miss waits until the cache has caught up with
    /// the log as of the miss (see [`SessionService::resolve`]).
    pub fn change_log(mut self, log: Arc<dyn ChangeLog>) -> Self {
        self.change_log = Some(log);
        self
    }

    /// With a change log, also calls `hint` on each of its wake-ups (a
    /// write may have committed: look again) and each time the follower
    /// starts listening (wake-ups sent meanwhile were lost): so another
    /// reader of the same store, such as an events feed, learns of writes
    /// through the follower's one listening connection instead of opening
    /// its own. Called on the follower's task, so it must return at once.
    pub fn on_change_log_hint(mut self, hint: impl Fn() + Send + Sync + 'static) -> Self {
        self.on_hint = Some(Arc::new(hint));
        self
    }

    /// With a change log, the most the cache may lag behind it while the
    /// service reports ready (default 2 s): every change committed longer ago
    /// than this has been applied. Also the longest a cache miss waits for
    /// the cache to catch up before it is answered "unavailable".
    pub fn max_staleness(mut self, bound: Duration) -> Self {
        self.pacing.max_staleness = bound;
        self
    }

    /// With a change log, how often it is read when no wake-up arrives
    /// (default 500 ms; at least 1 ms).
    pub fn poll_interval(mut self, every: Duration) -> Self {
        self.pacing.poll_interval = every.max(Duration::from_millis(1));
        self
    }

    /// Builds the service. The cache is not warm until a warm completes: the
    /// [`BackgroundTasks`] of [`SessionService::start`] run the first one.
    pub fn build(self) -> SessionService {
        let shared = self.change_log.is_some();
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
                change_log: self.change_log,
                on_hint: self.on_hint,
                pacing: self.pacing,
                caught_up_at: Mutex::new(None),
                catch_ups: miss_path::CatchUps::default(),
                absent: Mutex::new(RecentHashes::new(ABSENT_CAPACITY, None)),
                stats: Stats::default(),
                resolves: ResolveCounters::default(),
                last_warm: Mutex::new(None),
                last_seen,
                limit: self.limit,
                not_before: AtomicI64::new(self.not_before.map_or(NO_MARK, micros_since_epoch)),
                idle_revocation: self.idle_revocation,
                retention: self.retention,
                idle_stats: maintenance::JobCounters::default(),
                retention_stats: maintenance::JobCounters::default(),
                not_before_stats: maintenance::JobCounters::default(),
                sweep_wanted: tokio::sync::Notify::new(),
                write_back_failed_at: Mutex::new(None),
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
    change_log: Option<Arc<dyn ChangeLog>>,
    /// Told of each change-log hint too (see
    /// [`SessionServiceBuilder::on_change_log_hint`]).
    on_hint: Option<change_log::OnHint>,
    pacing: change_log::Pacing,
    /// When the last read that reached the end of the change log started.
    caught_up_at: Mutex<Option<Instant>>,
    /// The follower's reads, as misses wait for them.
    catch_ups: miss_path::CatchUps,
    /// Token hashes a miss found absent once the cache had caught up.
    absent: Mutex<RecentHashes>,
    stats: Stats,
    /// Every resolve, by outcome.
    resolves: ResolveCounters,
    last_warm: Mutex<Option<WarmReport>>,
    /// With last-seen activity on: the marks, and how often they are flushed.
    last_seen: Option<(LastSeenMarks, Duration)>,
    /// With a per-account limit: the limit every create is stored within.
    limit: Option<SessionLimit>,
    /// The "not before" mark, in microseconds since the Unix epoch:
    /// sessions minted earlier resolve as invalid. [`NO_MARK`] when none.
    /// Only ever raised.
    not_before: AtomicI64,
    /// Idle revocation's settings, when the background tasks run it.
    idle_revocation: Option<IdleRevocation>,
    /// Retention's settings, when the background tasks run it.
    retention: Option<Retention>,
    idle_stats: maintenance::JobCounters,
    retention_stats: maintenance::JobCounters,
    /// The "not before" sweep's counters.
    not_before_stats: maintenance::JobCounters,
    /// Wakes the "not before" sweep after a raise.
    sweep_wanted: tokio::sync::Notify,
    /// When writing this process's mark back to the store last failed, so
    /// a store that refuses it is asked again only after a pause.
    write_back_failed_at: Mutex<Option<Instant>>,
}

/// No "not before" mark.
const NO_MARK: i64 = i64::MIN;

/// How long after a failed write back of the mark the next is tried.
const WRITE_BACK_RETRY: Duration = Duration::from_secs(5);

/// The instant `micros` microseconds after the Unix epoch, if `time` holds it.
fn from_micros(micros: i64) -> Option<time::OffsetDateTime> {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1_000).ok()
}

/// `at` in microseconds since the Unix epoch, saturating.
fn micros_since_epoch(at: time::OffsetDateTime) -> i64 {
    i64::try_from(at.unix_timestamp_nanos() / 1_000).unwrap_or(i64::MAX)
}

#[derive(Default)]
struct Stats {
    changes_applied: AtomicU64,
    read_failures: AtomicU64,
    full_loads: AtomicU64,
    rows_skipped: AtomicU64,
    wake_ups: AtomicU64,
    reads: AtomicU64,
    miss_waits: AtomicU64,
    /// Whether the follower listens for wake-ups now.
    listening: std::sync::atomic::AtomicBool,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Inner {
    /// Whether session `id` was minted before the "not before" mark: one
    /// atomic load when there is none.
    #[inline]
    fn is_before_the_mark(&self, id: SessionId) -> bool {
        let mark = self.not_before.load(Ordering::Acquire);
        mark != NO_MARK
            && id
                .minted_at()
                .is_none_or(|minted| micros_since_epoch(minted) < mark)
    }

    /// Raises this process's mark to `at` (never lowers it); returns the
    /// mark in force.
    fn apply_not_before(&self, at: time::OffsetDateTime) -> time::OffsetDateTime {
        let wanted = micros_since_epoch(at);
        let applied = self
            .not_before
            .fetch_max(wanted, Ordering::AcqRel)
            .max(wanted);
        from_micros(applied).unwrap_or(at)
    }

    /// This process's mark, if any.
    fn own_mark(&self) -> Option<time::OffsetDateTime> {
        let mark = self.not_before.load(Ordering::Acquire);
        (mark != NO_MARK).then(|| from_micros(mark)).flatten()
    }

    /// Takes in the store's mark, `stored`, as a warm or a change-log read
    /// found it: a later one than this process's is applied; an earlier one
    /// (none, or a restored copy's) is raised to this process's, so the
    /// store learns again what every instance that ran knew. A failed write
    /// back is logged and tried again at a later read, at most every
    /// [`WRITE_BACK_RETRY`]: this process applies its mark meanwhile.
    async fn reconcile_not_before(&self, stored: Option<time::OffsetDateTime>) {
        if let Some(stored) = stored {
            self.apply_not_before(stored);
        }
        let Some(own) = self.own_mark() else {
            return;
        };
        if stored.is_some_and(|stored| stored >= own) {
            return;
        }
        if lock(&self.write_back_failed_at)
            .is_some_and(|failed| failed.elapsed() < WRITE_BACK_RETRY)
        {
            return;
        }
        match self.store.raise_not_before(own, None).await {
            Ok(in_force) => {
                self.apply_not_before(in_force);
                *lock(&self.write_back_failed_at) = None;
                tracing::warn!(
                    not_before = %own,
                    "the store held an earlier not-before mark than this instance \
                     (restored from an older copy?); wrote this instance's back"
                );
            }
            Err(err) => {
                *lock(&self.write_back_failed_at) = Some(Instant::now());
                tracing::warn!(error = %err, "could not write the not-before mark back to the store");
            }
        }
    }

    /// Whether a warm has completed, so resolves are authoritative.
    fn is_warm(&self) -> bool {
        self.warm.load(Ordering::Acquire)
    }
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
            change_log: None,
            on_hint: None,
            pacing: change_log::Pacing::default(),
            last_seen: None,
            limit: None,
            not_before: None,
            idle_revocation: None,
            retention: None,
        }
    }

    /// Raises the "not before" mark to `at`, recording no revoker. See
    /// [`raise_not_before_as`](Self::raise_not_before_as).
    ///
    /// # Errors
    ///
    /// As [`raise_not_before_as`](Self::raise_not_before_as).
    pub async fn raise_not_before(
        &self,
        at: time::OffsetDateTime,
    ) -> Result<time::OffsetDateTime, Error> {
        self.raise_not_before_as(at, None).await
    }

    /// Raises the "not before" mark to `at` (to the microsecond), store
    /// first, then this process: from then on, every session whose id was
    /// minted before the mark (its UUIDv7 timestamp, to the millisecond;
    /// an id of another version counts as minted before any mark) resolves
    /// as [`Error::InvalidToken`], at once and with no store read, whatever
    /// the cache or a restored store holds. Other processes on the store
    /// learn the mark from the change log, as they learn a revocation. A
    /// mark never moves back: a lower `at` than the one in force changes
    /// nothing. Returns the mark in force.
    ///
    /// The marked rows stay active in the store until the background sweep
    /// ([`sweep_not_before`](Self::sweep_not_before)) revokes them with
    /// reason [`RevocationReason::ADMIN`] and `by` as revoker; this call
    /// asks it to start now.
    ///
    /// # Errors
    ///
    /// [`Error::Store`] if the store did not commit: the mark in force
    /// here is unchanged.
    #[tracing::instrument(name = "session.raise_not_before", skip_all)]
    pub async fn raise_not_before_as(
        &self,
        at: time::OffsetDateTime,
        by: Option<Revoker>,
    ) -> Result<time::OffsetDateTime, Error> {
        let at = to_micros(at);
        let in_force = self
            .run_to_completion(move |inner| async move {
                let stored = inner.store.raise_not_before(at, by).await?;
                Ok(inner.apply_not_before(stored))
            })
            .await?;
        self.inner.sweep_wanted.notify_one();
        tracing::info!(not_before = %in_force, "raised the not-before mark");
        Ok(in_force)
    }

    /// The "not before" mark as the store holds it, with this process's
    /// own when that is later (a restored store not yet written back), and
    /// how far its sweep has gone. One store read; changes nothing.
    ///
    /// # Errors
    ///
    /// [`Error::Store`] if the store could not be read.
    pub async fn read_not_before(&self) -> Result<crate::status::NotBeforeState, Error> {
        let stored = self.inner.store.not_before().await?;
        let mark = match (stored.mark, self.inner.own_mark()) {
            (Some(stored), Some(own)) => Some(stored.max(own)),
            (stored, own) => stored.or(own),
        };
        Ok(crate::status::NotBeforeState {
            mark,
            raised_by: stored.raised_by,
            swept_through: stored.swept_through,
        })
    }

    /// The "not before" mark in force in this process, if any.
    #[must_use]
    pub fn not_before(&self) -> Option<time::OffsetDateTime> {
        self.inner.own_mark()
    }

    /// Issues a new session for `account_id`.
    ///
    /// With a [`session_limit`](SessionServiceBuilder::session_limit), the
    /// sessions evicted to make room are dropped from this process's cache
    /// once the store has committed; other processes learn of them from the
    /// change log, as of any revocation.
    ///
    /// # Errors
    ///
    /// [`Error::SessionLimitReached`] when the limit's policy refuses;
    /// [`Error::Store`] if the store did not commit. Either way the store
    /// and the cache are unchanged.
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
            revocation: None,
            metadata,
        };
        tracing::Span::current().record("session.id", tracing::field::display(session.id));
        let session = self
            .run_to_completion(|inner| async move {
                let pending = inner.begin_insert(session.token_hash);
                let evicted = match inner.limit {
                    None => {
                        inner.store.insert(&session).await?;
                        Vec::new()
                    }
                    Some(limit) => match inner.store.insert_within_limit(&session, limit).await? {
                        LimitedInsert::Inserted { evicted } => evicted,
                        LimitedInsert::Refused => return Err(Error::SessionLimitReached),
                    },
                };
                inner.apply_removals(&evicted);
                if !evicted.is_empty() {
                    tracing::info!(
                        evicted = evicted.len(),
                        "revoked the least recently seen sessions of an account at its limit"
                    );
                }
                let session = Arc::new(session);
                pending.finish(&session);
                Ok(session)
            })
            .await?;
        Ok(NewSession { token, session })
    }

    /// The identity of the active session a token belongs to: parse, hash,
    /// cache lookup. The same answer, at the same cost, in either
    /// [`CacheMode`]: the cache's index alone decides. The whole record is
    /// one call away: [`session`](Self::session).
    ///
    /// Without a change log a miss is final and the store is never touched.
    /// With one, a miss may be a session another process just created: it
    /// waits until the cache has applied the change log up to a read that
    /// started after the miss arrived (misses that wait at once share that
    /// read), then looks again, so the answer is exact. A miss on a hash
    /// revoked recently, or found absent before, is answered at once.
    ///
    /// # Errors
    ///
    /// [`Error::NotReady`] before the first warm completes, whatever the token;
    /// [`Error::InvalidToken`] for a malformed, unknown or revoked token alike;
    /// [`Error::Store`] (unavailable) for a miss the cache could not catch up
    /// to decide within the staleness bound (the log cannot be read).
    ///
    /// Every call that returns is counted under one [`ResolveOutcome`]
    /// (see [`ServiceStatus::resolves`]), at the cost of one relaxed atomic
    /// increment.
    pub async fn resolve(&self, token: &str) -> Result<SessionIdentity, Error> {
        // Never the token, nor its hash: the span learns the session only once found.
        let span = tracing::info_span!("session.resolve", session.id = tracing::field::Empty);
        // The resolve path is a few hundred nanoseconds: without a subscriber
        // that wants the span, it runs without the instrumenting wrapper.
        if span.is_disabled() {
            return self.resolve_untraced(token).await;
        }
        let found = self.resolve_untraced(token).instrument(span.clone()).await;
        if let Ok(identity) = &found {
            span.record("session.id", tracing::field::display(identity.id));
        }
        found
    }

    /// Each way out counts its [`ResolveOutcome`] once, where it is known. A
    /// caller that stops waiting during a miss is not counted: it was given
    /// no answer.
    async fn resolve_untraced(&self, token: &str) -> Result<SessionIdentity, Error> {
        let counters = &self.inner.resolves;
        if !self.inner.is_warm() {
            counters.count(ResolveOutcome::NotReady);
            return Err(Error::NotReady);
        }
        let Ok(hash) = TokenHash::of_token_text(token) else {
            counters.count(ResolveOutcome::Malformed);
            return Err(Error::InvalidToken);
        };
        if let Some(identity) = self.inner.cache.get(&hash) {
            if self.inner.is_before_the_mark(identity.id) {
                counters.count(ResolveOutcome::Negative);
                return Err(Error::InvalidToken);
            }
            counters.count(ResolveOutcome::Hit);
            self.mark_seen(identity.id);
            return Ok(identity);
        }
        if self.inner.change_log.is_none() {
            // The cache holds every active session: a miss is final.
            counters.count(ResolveOutcome::Negative);
            return Err(Error::InvalidToken);
        }
        let (found, outcome) = self.inner.consistent_miss(hash).await;
        if found
            .as_ref()
            .is_ok_and(|identity| self.inner.is_before_the_mark(identity.id))
        {
            counters.count(ResolveOutcome::CaughtUpInactive);
            return Err(Error::InvalidToken);
        }
        counters.count(outcome);
        let identity = found?;
        self.mark_seen(identity.id);
        Ok(identity)
    }

    /// The whole record of a resolved session: its creation time and client
    /// metadata beside its identity.
    ///
    /// With a [`CacheMode::Full`] cache, always from memory. With a
    /// [`CacheMode::Compact`] one, from its bounded record cache when that
    /// holds the record, else from the store (one read by token hash, after
    /// which the record cache may keep it). Either way the cache's index
    /// first confirms the session is still active, so a session revoked
    /// since `identity` was resolved answers [`Error::InvalidToken`], with
    /// no store read.
    ///
    /// # Errors
    ///
    /// [`Error::NotReady`] before the first warm completes;
    /// [`Error::InvalidToken`] when `identity` is no longer (or never was)
    /// an active session; [`Error::Store`] when the record had to be read
    /// and the store failed (compact mode only).
    pub async fn session(&self, identity: &SessionIdentity) -> Result<Arc<Session>, Error> {
        let inner = &self.inner;
        if !inner.is_warm() {
            return Err(Error::NotReady);
        }
        let hash = &identity.token_hash;
        if let Some(session) = inner.cache.record(hash) {
            return if session.id == identity.id {
                Ok(session)
            } else {
                Err(Error::InvalidToken)
            };
        }
        if inner.cache.get(hash).map(|cached| cached.id) != Some(identity.id) {
            return Err(Error::InvalidToken);
        }
        match inner.store.find_active_by_hash(hash).await? {
            Some(session) if session.id == identity.id => {
                let session = Arc::new(session);
                inner.cache.keep_record(Arc::clone(&session));
                Ok(session)
            }
            // Revoked since the index was read.
            _ => Err(Error::InvalidToken),
        }
    }

    /// Now, by the service's clock (the system's unless the builder was
    /// given another): what a caller compares a mark it is asked to raise
    /// against.
    #[must_use]
    pub fn now(&self) -> time::OffsetDateTime {
        self.inner.clock.now()
    }

    /// What the cache holds beyond each session's identity, which decides
    /// whether [`session`](Self::session) can read the store.
    #[must_use]
    pub fn cache_mode(&self) -> CacheMode {
        self.inner.cache.mode()
    }

    /// With last-seen activity on, marks session `id` seen this minute: no
    /// lock, no await, no allocation once it is marked this minute.
    #[inline]
    fn mark_seen(&self, id: SessionId) {
        if let Some((marks, _)) = &self.inner.last_seen {
            marks.mark(id);
        }
    }

    /// Writes the last-seen marks made since the last flush to the store now,
    /// one [`SessionStore::record_last_seen`] call per batch of at most
    /// [`LAST_SEEN_MAX_BATCH`](crate::port::store::LAST_SEEN_MAX_BATCH)
    /// sessions, and moves the current minute to the clock's. Returns how
    /// many sessions' times were written. A no-op with last-seen activity
    /// off. The [`BackgroundTasks`] flush every flush interval and once at
    /// [`shutdown`](BackgroundTasks::shutdown); call this to flush at a
    /// moment of your choosing (tests do).
    ///
    /// # Errors
    ///
    /// [`Error::Store`] if a store call failed: its batch is kept for the
    /// next flush (bounded by the queue's capacity; the excess is dropped
    /// and counted in
    /// [`LastSeenStats::dropped`](crate::status::LastSeenStats::dropped)).
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

    /// A session by id, active or revoked.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] or [`Error::Store`].
    #[tracing::instrument(name = "session.get", skip_all, fields(session.id = %id))]
    pub async fn get(&self, id: SessionId) -> Result<Session, Error> {
        self.inner.store.get(id).await?.ok_or(Error::NotFound)
    }

    /// Revokes one session for `reason`, recording no revoker. Idempotent:
    /// a session revoked before keeps its first time and reason. See
    /// [`revoke_as`](Self::revoke_as).
    ///
    /// # Errors
    ///
    /// As [`revoke_as`](Self::revoke_as).
    pub async fn revoke(
        &self,
        id: SessionId,
        reason: RevocationReason,
    ) -> Result<Revocation, Error> {
        self.revoke_as(id, reason, None).await
    }

    /// Revokes one session for `reason`, recording `by` (the API key that
    /// asked, if one did) as its revoker. Idempotent: a session revoked
    /// before keeps its first time, reason and revoker.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] if no session has this id; [`Error::Store`] if the
    /// store did not commit, in which case the cache is unchanged.
    #[tracing::instrument(
        name = "session.revoke",
        skip_all,
        fields(session.id = %id, session.revocation_reason = %reason)
    )]
    pub async fn revoke_as(
        &self,
        id: SessionId,
        reason: RevocationReason,
        by: Option<Revoker>,
    ) -> Result<Revocation, Error> {
        self.run_to_completion(move |inner| async move {
            let at = to_micros(inner.clock.now());
            match inner.store.revoke(id, at, reason, by).await? {
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

    /// Revokes every active session of an account for `reason`, except
    /// `except` if given ("log out everywhere else"), recording no revoker.
    /// See [`revoke_all_as`](Self::revoke_all_as).
    ///
    /// # Errors
    ///
    /// As [`revoke_all_as`](Self::revoke_all_as).
    pub async fn revoke_all(
        &self,
        account: AccountId,
        except: Option<SessionId>,
        reason: RevocationReason,
    ) -> Result<usize, Error> {
        self.revoke_all_as(account, except, reason, None).await
    }

    /// Revokes every active session of an account for `reason`, except
    /// `except` if given, recording `by` (the API key that asked, if one
    /// did) as their revoker. Returns how many were revoked; sessions
    /// revoked before keep their time, reason and revoker.
    ///
    /// # Errors
    ///
    /// [`Error::Store`] if the store did not commit; the cache is unchanged.
    #[tracing::instrument(
        name = "session.revoke_all",
        skip_all,
        fields(account.id = %account, session.revocation_reason = %reason)
    )]
    pub async fn revoke_all_as(
        &self,
        account: AccountId,
        except: Option<SessionId>,
        reason: RevocationReason,
        by: Option<Revoker>,
    ) -> Result<usize, Error> {
        self.run_to_completion(move |inner| async move {
            let at = to_micros(inner.clock.now());
            let hashes = inner
                .store
                .revoke_all_for_account(account, except, at, reason, by)
                .await?;
            inner.apply_removals(&hashes);
            Ok(hashes.len())
        })
        .await
    }

    /// One page of an account's sessions, newest first, from the store
    /// (see [`SessionStore::list_for_account`]). Stored rows the domain
    /// rejects are left out, counted in [`ChangeLogStats::rows_skipped`] and logged
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

    /// A snapshot of the service's state and counters, for metrics and
    /// readiness: a few atomic loads and short lock holds, no I/O, so it can
    /// be read at every scrape and probe. Readiness also needs
    /// [`check_store`](Self::check_store).
    #[must_use]
    pub fn status(&self) -> ServiceStatus {
        let inner = &self.inner;
        let stats = &inner.stats;
        ServiceStatus {
            cache_warm: inner.is_warm(),
            cached_sessions: inner.cache.len(),
            cache_mode: inner.cache.mode(),
            cache_bytes: inner.cache.bytes(),
            last_warm: *lock(&inner.last_warm),
            change_log: inner.change_log.as_ref().map(|_| inner.change_log_lag()),
            change_log_stats: ChangeLogStats {
                changes_applied: stats.changes_applied.load(Ordering::Relaxed),
                read_failures: stats.read_failures.load(Ordering::Relaxed),
                full_loads: stats.full_loads.load(Ordering::Relaxed),
                rows_skipped: stats.rows_skipped.load(Ordering::Relaxed),
                wake_ups: stats.wake_ups.load(Ordering::Relaxed),
                reads: stats.reads.load(Ordering::Relaxed),
                miss_waits: stats.miss_waits.load(Ordering::Relaxed),
            },
            resolves: inner.resolves.read(),
            last_seen: inner.last_seen.as_ref().map(|(marks, _)| marks.stats()),
            wake_ups_listening: stats.listening.load(Ordering::Relaxed),
            idle_revocation: inner.idle_revocation.map(|_| inner.idle_stats.read()),
            retention: inner.retention.map(|_| inner.retention_stats.read()),
            not_before: inner.own_mark(),
            not_before_sweep: inner.not_before_stats.read(),
        }
    }

    /// Runs the store's health check: the part of readiness that costs a
    /// round trip, so [`status`](Self::status) leaves it out. The service is
    /// ready when this succeeds and [`ServiceStatus::cache_ready`] holds.
    ///
    /// # Errors
    ///
    /// The [`StoreError`] of a store that does not answer.
    pub async fn check_store(&self) -> Result<(), StoreError> {
        self.inner.store.health_check().await
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
