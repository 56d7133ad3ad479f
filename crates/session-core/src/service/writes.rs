//! The order of cache writes: the cache changes only after the store
//! committed the change, a revocation applied while an insert is in flight
//! wins over the insert, and a warm neither drops a change made while it
//! loaded nor brings back a revoked session.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard};
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tracing::Instrument as _;

use super::{Error, Inner, WarmReport, lock};
use crate::port::cache::{CacheMode, PreparedContents};
use crate::port::change_log::Change;
use crate::port::store::{
    ActivePage, IdentityPage, InvalidRow, SessionStore, StoreError, send_keyset_pages,
};
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
            Change::NotBefore(mark) => {
                self.apply_not_before(mark);
            }
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
    /// The store's pages stream into the contents the cache starts for a
    /// warm ([`SessionCache::refresh`]: apart from the live ones, or the live
    /// ones refreshed in place): a task reads the next pages (and decodes
    /// their rows) while this one inserts the page before, and no page is
    /// held once inserted, so a warm holds the new contents (none, in place)
    /// and at most [`PAGES_AHEAD`] pages more, never every session read.
    ///
    /// Writes go on meanwhile: every cache change made while the warm runs
    /// is journaled. What was journaled during the load is replayed onto the
    /// new contents without the `writes` lock; only the last few journaled
    /// changes are replayed, and the contents installed, under it, so
    /// creates and revokes wait for a swap, never for a build, and no reader
    /// sees contents missing a change the cache had already made.
    ///
    /// [`SessionCache::refresh`]: crate::port::cache::SessionCache::refresh
    pub(super) async fn warm(&self) -> Result<WarmReport, Error> {
        let _one_at_a_time = self.warming.lock().await;
        let started = Instant::now();
        // The mark first: the warm makes the service ready, and no answer
        // may come before the mark the store holds is applied.
        let stored = self.store.not_before().await?;
        if let Some(rejected) = stored.rejected {
            self.reject(vec![rejected]);
        }
        self.reconcile_not_before(stored.mark).await;
        // Journal before the first read: anything committed later is replayed.
        self.writes().journal = Some(Vec::new());
        let mut contents = self.cache.refresh();
        let loaded = self.load_active(contents.as_mut(), started).await;
        let during_load = {
            let mut writes = self.writes();
            match &loaded {
                Ok(_) => writes.journal.as_mut().map(std::mem::take),
                Err(_) => writes.journal.take(),
            }
            .unwrap_or_default()
        };
        let pages = loaded?;
        replay(contents.as_mut(), during_load);

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

    /// Reads every active session into `contents`, page by page, and
    /// returns how many pages it read. The reads run on a task of their own,
    /// at most [`PAGES_AHEAD`] pages ahead of the inserts, and end with this
    /// future: dropped (the warm cancelled), it stops them.
    async fn load_active(
        &self,
        contents: &mut dyn PreparedContents,
        started: Instant,
    ) -> Result<usize, Error> {
        let mut reader = JoinSet::new();
        let store = Arc::clone(&self.store);
        let page_size = self.warm_page_size;
        // In the warm's span, so each page's store call is the warm's child.
        let span = tracing::Span::current();
        match self.cache.mode() {
            CacheMode::Full => {
                let (sender, receiver) = tokio::sync::mpsc::channel(PAGES_AHEAD);
                reader.spawn(read_active_pages(store, page_size, sender).instrument(span));
                self.insert_pages(receiver, &mut reader, contents, started)
                    .await
            }
            CacheMode::Compact => {
                let (sender, receiver) = tokio::sync::mpsc::channel(PAGES_AHEAD);
                reader.spawn(
                    async move { store.active_identities(page_size, sender).await }
                        .instrument(span),
                );
                self.insert_pages(receiver, &mut reader, contents, started)
                    .await
            }
        }
    }

    /// Inserts the pages `receiver` brings into `contents` until `reader`,
    /// which sends them, is done; returns how many pages it inserted.
    async fn insert_pages<P: WarmPage>(
        &self,
        mut receiver: tokio::sync::mpsc::Receiver<Result<P, StoreError>>,
        reader: &mut JoinSet<()>,
        contents: &mut dyn PreparedContents,
        started: Instant,
    ) -> Result<usize, Error> {
        const PROGRESS_EVERY: Duration = Duration::from_secs(1);
        let mut loaded = 0;
        let mut pages = 0;
        let mut last_report = started;
        while let Some(page) = receiver.recv().await {
            pages += 1;
            let (rows, rejected) = page?.insert_into(contents);
            loaded += rows;
            self.reject(rejected);
            if last_report.elapsed() >= PROGRESS_EVERY {
                last_report = Instant::now();
                tracing::info!(
                    loaded,
                    elapsed_ms = started.elapsed().as_millis(),
                    "warming session cache"
                );
            }
        }
        // Every page sent: the reader is done, or it panicked. Pass a panic
        // on, as a read on this task would have.
        if let Some(Err(failed)) = reader.join_next().await
            && failed.is_panic()
        {
            std::panic::resume_unwind(failed.into_panic());
        }
        Ok(pages)
    }
}

/// Pages a warm's reader may have read before the inserts took them: one
/// being inserted, one waiting, one being read, so the store and the cache
/// work at once and a warm holds at most a few pages beyond the contents.
const PAGES_AHEAD: usize = 1;

/// A page a warm reads: whole sessions for a [`CacheMode::Full`] cache,
/// only their identities for a [`CacheMode::Compact`] one, which keeps no
/// more (a narrower row: less for the store to send and to decode).
trait WarmPage: Send + 'static {
    /// Inserts the page's sessions; returns how many, and the rows rejected.
    fn insert_into(self, contents: &mut dyn PreparedContents) -> (usize, Vec<InvalidRow>);
}

impl WarmPage for ActivePage {
    fn insert_into(self, contents: &mut dyn PreparedContents) -> (usize, Vec<InvalidRow>) {
        let rows = self.sessions.len();
        for session in self.sessions {
            contents.insert(Arc::new(session));
        }
        (rows, self.rejected)
    }
}

impl WarmPage for IdentityPage {
    fn insert_into(self, contents: &mut dyn PreparedContents) -> (usize, Vec<InvalidRow>) {
        let rows = self.identities.len();
        for identity in self.identities {
            contents.insert_identity(identity);
        }
        (rows, self.rejected)
    }
}

/// Reads active sessions from the start, page after page, into `pages`,
/// until the last page or the first error (sent too), or until the
/// receiver is gone.
async fn read_active_pages(
    store: Arc<dyn SessionStore>,
    page_size: u32,
    pages: tokio::sync::mpsc::Sender<Result<ActivePage, StoreError>>,
) {
    send_keyset_pages(
        |after| store.active_page(after, page_size),
        |page| page.resume_after,
        pages,
    )
    .await;
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

/// Applies the changes journaled while a warm loaded to the contents it
/// loaded: a removal drops the hash whatever came before it; an insertion
/// adds the session unless a removal of it follows.
fn replay(contents: &mut dyn PreparedContents, journal: Vec<CacheOp>) {
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
    for session in inserted {
        if !removed.contains(&session.token_hash) {
            contents.insert(session);
        }
    }
    for hash in &removed {
        contents.remove(hash);
    }
}
