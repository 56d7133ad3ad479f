//! A store that pauses at a chosen point, so tests drive races step by step.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use session_core::memory::MemoryStore;
use session_core::port::change_log::{ChangeLog, ChangeLogDecorator, LogCursor, LogRead};
use session_core::port::store::{
    ActivePage, IdentityPage, RevokeOutcome, SessionStore, StoreDecorator, StoreError,
};
use session_core::token::TokenHash;
use session_core::{Session, SessionId};
use time::OffsetDateTime;
use tokio::sync::{Notify, Semaphore};

/// Where the store pauses: after the named operation took effect, before it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Point {
    Insert,
    Revoke,
    FirstPage,
    /// A change-log read that found at least one entry.
    LogEntries,
}

/// One armed pause: the store signals `reached`, then waits for `release`.
pub(crate) struct Gate {
    point: Point,
    reached: Notify,
    release: Semaphore,
}

impl Gate {
    /// Waits until the store has paused at the gate.
    pub(crate) async fn reached(&self) {
        self.reached.notified().await;
    }

    /// Lets the paused operation return.
    pub(crate) fn release(&self) {
        self.release.add_permits(1);
    }
}

/// A [`MemoryStore`] with at most one armed [`Gate`], whose change log can
/// be cut off alone, as a follower's lost connection would be.
#[derive(Default)]
pub(crate) struct GatedStore {
    pub(crate) inner: MemoryStore,
    armed: Mutex<Option<Arc<Gate>>>,
    log_down: AtomicBool,
    /// Pages of active sessions read so far.
    pub(crate) active_pages_read: AtomicUsize,
}

impl GatedStore {
    /// While `true`, reads of the change log fail as unavailable; the
    /// sessions stay reachable.
    pub(crate) fn set_log_down(&self, down: bool) {
        self.log_down.store(down, Ordering::SeqCst);
    }

    /// Arms a gate at `point`; the next operation reaching it pauses there.
    pub(crate) fn arm(&self, point: Point) -> Arc<Gate> {
        let gate = Arc::new(Gate {
            point,
            reached: Notify::new(),
            release: Semaphore::new(0),
        });
        *self.armed.lock().unwrap() = Some(Arc::clone(&gate));
        gate
    }

    async fn pass(&self, point: Point) {
        let gate = {
            let mut armed = self.armed.lock().unwrap();
            match armed.as_ref() {
                Some(gate) if gate.point == point => armed.take(),
                _ => None,
            }
        };
        if let Some(gate) = gate {
            gate.reached.notify_one();
            gate.release.acquire().await.unwrap().forget();
        }
    }
}

impl StoreDecorator for GatedStore {
    fn inner_store(&self) -> &dyn SessionStore {
        &self.inner
    }

    async fn insert(&self, session: &Session) -> Result<(), StoreError> {
        self.inner.insert(session).await?;
        self.pass(Point::Insert).await;
        Ok(())
    }

    async fn revoke(
        &self,
        id: SessionId,
        at: OffsetDateTime,
        reason: session_core::RevocationReason,
        by: Option<session_core::Revoker>,
    ) -> Result<RevokeOutcome, StoreError> {
        let outcome = self.inner.revoke(id, at, reason, by).await?;
        self.pass(Point::Revoke).await;
        Ok(outcome)
    }

    async fn active_page(
        &self,
        after: Option<SessionId>,
        limit: u32,
    ) -> Result<ActivePage, StoreError> {
        let page = self.inner.active_page(after, limit).await?;
        self.page_read(after).await;
        Ok(page)
    }

    /// A compact cache's warm reads these pages instead: gated alike.
    async fn active_identity_page(
        &self,
        after: Option<SessionId>,
        limit: u32,
    ) -> Result<IdentityPage, StoreError> {
        let page = self.inner.active_identity_page(after, limit).await?;
        self.page_read(after).await;
        Ok(page)
    }

    /// Through this store's own pages, so each is counted and gated.
    async fn active_identities(
        &self,
        page_size: u32,
        pages: tokio::sync::mpsc::Sender<Result<IdentityPage, StoreError>>,
    ) {
        session_core::port::store::identities_in_pages(self, page_size, pages).await;
    }
}

impl GatedStore {
    /// Counts a page of active sessions read, and pauses after the first.
    async fn page_read(&self, after: Option<SessionId>) {
        self.active_pages_read.fetch_add(1, Ordering::SeqCst);
        if after.is_none() {
            self.pass(Point::FirstPage).await;
        }
    }
}

impl ChangeLogDecorator for GatedStore {
    fn inner_log(&self) -> &dyn ChangeLog {
        &self.inner
    }

    async fn read(&self, after: &LogCursor, limit: u32) -> Result<LogRead, StoreError> {
        if self.log_down.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("the change log is cut off".into()));
        }
        let read = self.inner.read(after, limit).await?;
        if matches!(&read, LogRead::Page(page) if !page.entries.is_empty()) {
            self.pass(Point::LogEntries).await;
        }
        Ok(read)
    }
}

/// A cache whose next prepared contents stop at their first insert, until
/// the test lets it go on: a warm's build, held open.
pub(crate) struct GatedCache {
    pub(crate) inner: Arc<dyn session_core::port::cache::SessionCache>,
    armed: Mutex<Option<(std::sync::mpsc::Sender<()>, std::sync::mpsc::Receiver<()>)>>,
}

impl GatedCache {
    /// Gates `inner`.
    pub(crate) fn over(inner: Arc<dyn session_core::port::cache::SessionCache>) -> Self {
        Self {
            inner,
            armed: Mutex::default(),
        }
    }

    /// Arms the gate: returns a receiver told when `prepare` stopped, and a
    /// sender that lets it return.
    pub(crate) fn arm(&self) -> (std::sync::mpsc::Receiver<()>, std::sync::mpsc::Sender<()>) {
        let (reached_tx, reached_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel();
        *self.armed.lock().unwrap() = Some((reached_tx, release_rx));
        (reached_rx, release_tx)
    }
}

impl session_core::port::cache::SessionCache for GatedCache {
    fn get(&self, hash: &TokenHash) -> Option<session_core::SessionIdentity> {
        self.inner.get(hash)
    }

    fn record(&self, hash: &TokenHash) -> Option<Arc<Session>> {
        self.inner.record(hash)
    }

    fn keep_record(&self, session: Arc<Session>) {
        self.inner.keep_record(session);
    }

    fn mode(&self) -> session_core::port::cache::CacheMode {
        self.inner.mode()
    }

    fn insert(&self, session: Arc<Session>) {
        self.inner.insert(session);
    }

    fn remove(&self, hash: &TokenHash) {
        self.inner.remove(hash);
    }

    fn remove_many(&self, hashes: &[TokenHash]) {
        self.inner.remove_many(hashes);
    }

    /// Armed, the contents stop at their first insert: the warm is building.
    fn prepare_empty(&self) -> Box<dyn session_core::port::cache::PreparedContents> {
        Box::new(GatedContents {
            inner: self.inner.prepare_empty(),
            gate: self.armed.lock().unwrap().take(),
        })
    }

    /// Armed, the contents stop at their first insert, as `prepare_empty`'s.
    fn refresh(&self) -> Box<dyn session_core::port::cache::PreparedContents> {
        Box::new(GatedContents {
            inner: self.inner.refresh(),
            gate: self.armed.lock().unwrap().take(),
        })
    }

    fn install(&self, contents: Box<dyn session_core::port::cache::PreparedContents>) {
        self.inner.install(contents);
    }

    fn len(&self) -> usize {
        self.inner.len()
    }
}

/// [`GatedCache`]'s prepared contents: the first insert waits at the gate.
struct GatedContents {
    inner: Box<dyn session_core::port::cache::PreparedContents>,
    gate: Option<(std::sync::mpsc::Sender<()>, std::sync::mpsc::Receiver<()>)>,
}

impl GatedContents {
    /// Waits at the gate, the first time.
    fn pass(&mut self) {
        if let Some((reached, release)) = self.gate.take() {
            reached.send(()).unwrap();
            release.recv().unwrap();
        }
    }
}

impl session_core::port::cache::PreparedContents for GatedContents {
    fn insert(&mut self, session: Arc<Session>) {
        self.pass();
        self.inner.insert(session);
    }

    fn insert_identity(&mut self, identity: session_core::SessionIdentity) {
        self.pass();
        self.inner.insert_identity(identity);
    }

    fn remove(&mut self, hash: &TokenHash) {
        self.inner.remove(hash);
    }

    fn into_any(self: Box<Self>) -> Box<dyn std::any::Any> {
        self.inner.into_any()
    }
}
