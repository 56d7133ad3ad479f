//! The use cases: create, resolve, get, revoke, revoke all, list, warm, readiness.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::cache::SessionCache;
use crate::clock::{Clock, SystemClock, to_micros};
use crate::session::{AccountId, ClientMetadata, Session, SessionId};
use crate::store::{ListScope, RevokeOutcome, SessionStore, StoreError};
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
}

impl Readiness {
    /// Ready to answer resolves authoritatively and accept writes.
    #[must_use]
    pub const fn is_ready(&self) -> bool {
        self.cache_warm && self.store.is_ok()
    }
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

    /// Builds the service. The cache is not warm until [`SessionService::warm`] completes.
    pub fn build(self) -> SessionService {
        SessionService {
            inner: Arc::new(Inner {
                store: self.store,
                cache: self.cache,
                clock: self.clock,
                warm_page_size: self.warm_page_size,
                warm: AtomicBool::new(false),
                writes: Mutex::new(CacheWrites::default()),
                warming: tokio::sync::Mutex::new(()),
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
                pending.finish(Arc::clone(&session));
                Ok(session)
            })
            .await?;
        Ok(NewSession { token, session })
    }

    /// The active session a token belongs to: parse, hash, cache lookup. Never
    /// touches the store.
    ///
    /// # Errors
    ///
    /// [`Error::NotReady`] before the first warm completes, whatever the token;
    /// [`Error::InvalidToken`] for a malformed, unknown or revoked token alike.
    pub async fn resolve(&self, token: &str) -> Result<Arc<Session>, Error> {
        if !self.is_warm() {
            return Err(Error::NotReady);
        }
        let hash = TokenHash::of_token_text(token).map_err(|_| Error::InvalidToken)?;
        self.inner.cache.get(&hash).ok_or(Error::InvalidToken)
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
                RevokeOutcome::AlreadyRevoked => Ok(Revocation::AlreadyRevoked),
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

    /// Whether a warm has completed, so resolves are authoritative.
    #[must_use]
    pub fn is_warm(&self) -> bool {
        self.inner.warm.load(Ordering::Acquire)
    }

    /// Checks the cache and the store.
    pub async fn readiness(&self) -> Readiness {
        Readiness {
            cache_warm: self.is_warm(),
            store: self.inner.store.health_check().await,
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
        self.writes.lock().unwrap_or_else(PoisonError::into_inner)
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
        let mut writes = self.writes();
        self.cache.remove_many(hashes);
        for hash in hashes {
            if let Some(pending) = writes.pending.get_mut(hash) {
                pending.revoked = true;
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
        let report = WarmReport {
            sessions: self.cache.len(),
            pages,
            elapsed: started.elapsed(),
        };
        drop(writes);
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
            let full = page.len() >= self.warm_page_size as usize;
            after = page.last().map(|session| session.id);
            sessions.extend(page.into_iter().map(Arc::new));
            if !full {
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
    /// Inserts the committed session, unless a revocation of it was applied
    /// while its write was in flight.
    fn finish(mut self, session: Arc<Session>) {
        let mut writes = self.inner.writes();
        if !release(&mut writes, self.hash) {
            self.inner.cache.insert(Arc::clone(&session));
            if let Some(journal) = writes.journal.as_mut() {
                journal.push(CacheOp::Insert(session));
            }
        }
        self.done = true;
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
