//! The order of cache writes: the cache changes only after the store
//! committed the change, a revocation applied while an insert is in flight
//! wins over the insert, and a warm neither drops a change made while it
//! loaded nor brings back a revoked session.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard};
use std::time::{Duration, Instant};

use super::{Error, Inner, WarmReport, lock};
use crate::port::change_log::Change;
use crate::port::store::InvalidRow;
use crate::recent::RecentHashes;
use crate::session::Session;
use crate::token::{TokenHash, TokenHashState};

/// Bookkeeping that orders cache changes after the store commits that cause them.
#[derive(Default)]
pub(super) struct CacheWrites {
    /// Token hashes committed (or being committed) to the store whose cache
    /// insert has not happened yet, and whether a revocation of them was
    /// applied meanwhile. A create racing a revoke-all of its account must not
    /// put the revoked session back into the cache.
    pending: HashMap<TokenHash, PendingInsert, TokenHashState>,
    /// While a warm is loading, every cache change, replayed onto what the warm
    /// read so it neither resurrects a revoked session nor drops a new one.
    journal: Option<Vec<CacheOp>>,
    /// With a change log: recently revoked hashes, so a creation change read
    /// before a revocation this process applied first (its own) cannot put
    /// the session back, and a miss on one is answered at once.
    tombstones: Option<RecentHashes>,
}

/// How long and how many revoked token hashes are remembered, so a change
/// that arrives late cannot put a revoked session back.
const TOMBSTONE_TTL: Duration = Duration::from_secs(600);
const TOMBSTONE_CAPACITY: usize = 100_000;

impl CacheWrites {
    /// Bookkeeping for a service; `shared` (with a change log) also keeps tombstones.
    pub(super) fn new(shared: bool) -> Self {
        Self {
            tombstones: shared.then(|| RecentHashes::new(TOMBSTONE_CAPACITY, Some(TOMBSTONE_TTL))),
            ..Self::default()
        }
    }
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

impl Inner {
    fn writes(&self) -> MutexGuard<'_, CacheWrites> {
        lock(&self.writes)
    }

    pub(super) fn apply_change(&self, change: Change) {
        match change {
            // A session stored already revoked is not one to cache.
            Change::Created(session) if !session.is_active() => {}
            Change::Created(session) => {
                let session = Arc::new(session);
                let mut writes = self.writes();
                if !writes.is_revoked(&session.token_hash, self.clock.monotonic()) {
                    lock(&self.absent).remove(&session.token_hash);
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
    pub(super) fn reject(&self, rejected: Vec<InvalidRow>) {
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

    /// Whether this hash was revoked recently, so a miss on it is final
    /// without waiting (tombstones are kept only with a change log).
    pub(super) fn was_revoked(&self, hash: &TokenHash, now: Instant) -> bool {
        self.writes().is_revoked(hash, now)
    }

    pub(super) fn begin_insert(self: &Arc<Self>, hash: TokenHash) -> PendingGuard {
        self.writes().pending.entry(hash).or_default().waiters += 1;
        PendingGuard {
            inner: Arc::clone(self),
            hash,
            done: false,
        }
    }

    /// Before a full reload with a change log: creates in flight must not
    /// insert their session when they finish. The reload's cursor starts at
    /// a head taken after this, so a create that committed before it (and
    /// perhaps was revoked since, by an entry the follower will now never
    /// read) is in the load exactly if it is still active, and one that
    /// commits later is in the log after the head.
    pub(super) fn supersede_pending_inserts(&self) {
        for pending in self.writes().pending.values_mut() {
            pending.revoked = true;
        }
    }

    /// Drops revoked sessions from the cache, after the store committed the revocation.
    pub(super) fn apply_removals(&self, hashes: &[TokenHash]) {
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

    /// Loads every active session and installs them as the cache's contents.
    ///
    /// Writes go on meanwhile: every cache change made while the warm runs
    /// is journaled. What was journaled during the load is replayed onto the
    /// loaded sessions, and the new contents are built, without the `writes`
    /// lock; only the last few journaled changes are replayed, and the
    /// contents installed, under it, so creates and revokes wait for a swap,
    /// never for a build, and no reader sees contents missing a change the
    /// cache had already made.
    pub(super) async fn warm(&self) -> Result<WarmReport, Error> {
        let _one_at_a_time = self.warming.lock().await;
        let started = Instant::now();
        // Journal before the first read: anything committed later is replayed.
        self.writes().journal = Some(Vec::new());
        let loaded = self.load_active(started).await;
        let during_load = {
            let mut writes = self.writes();
            match &loaded {
                Ok(_) => writes.journal.as_mut().map(std::mem::take),
                Err(_) => writes.journal.take(),
            }
            .unwrap_or_default()
        };
        let (mut sessions, pages) = loaded?;
        replay(&mut sessions, during_load);
        let mut contents = self.cache.prepare(sessions);

        let mut writes = self.writes();
        for op in writes.journal.take().unwrap_or_default() {
            match op {
                CacheOp::Insert(session) => contents.insert(session),
                CacheOp::Remove(hash) => contents.remove(&hash),
            }
        }
        self.cache.install(contents);
        self.warm.store(true, Ordering::Release);
        self.stats.full_loads.fetch_add(1, Ordering::Relaxed);
        drop(writes);
        let report = WarmReport {
            sessions: self.cache.len(),
            pages,
            elapsed: started.elapsed(),
        };
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
pub(super) struct PendingGuard {
    inner: Arc<Inner>,
    hash: TokenHash,
    done: bool,
}

impl PendingGuard {
    /// Inserts the session the store returned, unless a revocation of it was
    /// applied meanwhile; tells whether it did.
    pub(super) fn finish(mut self, session: &Arc<Session>) -> bool {
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
    /// Whether this hash was revoked recently (only tracked with a change log).
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

/// Applies journaled cache changes, in order, to loaded sessions: a removal
/// drops the hash whatever came before it; an insertion adds the session
/// unless a removal of it follows.
fn replay(sessions: &mut Vec<Arc<Session>>, journal: Vec<CacheOp>) {
    if journal.is_empty() {
        return;
    }
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
}
