//! [`CountingStore`]: a store that forwards every call and counts the
//! last-seen writes, so tests see how marks were batched.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::port::store::{SeenAt, SessionStore, StoreDecorator, StoreError};
use crate::session::SessionId;

/// Forwards every call to the store it wraps, and records each
/// [`record_last_seen`](SessionStore::record_last_seen) batch.
#[derive(Debug)]
pub struct CountingStore<S> {
    inner: Arc<S>,
    batches: Mutex<Vec<Vec<SeenAt>>>,
    last_seen_reads: AtomicUsize,
}

impl<S> CountingStore<S> {
    /// Wraps `inner`.
    pub fn new(inner: Arc<S>) -> Self {
        Self {
            inner,
            batches: Mutex::new(Vec::new()),
            last_seen_reads: AtomicUsize::new(0),
        }
    }

    /// Every batch passed to `record_last_seen`, in call order, including
    /// those the wrapped store failed.
    pub fn last_seen_batches(&self) -> Vec<Vec<SeenAt>> {
        self.batches
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Calls of `last_seen` (the read).
    pub fn last_seen_reads(&self) -> usize {
        self.last_seen_reads.load(Ordering::SeqCst)
    }
}

impl<S: SessionStore> StoreDecorator for CountingStore<S> {
    fn inner_store(&self) -> &dyn SessionStore {
        &*self.inner
    }

    async fn record_last_seen(&self, seen: &[SeenAt]) -> Result<(), StoreError> {
        self.batches
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(seen.to_vec());
        self.inner.record_last_seen(seen).await
    }

    async fn last_seen(&self, ids: &[SessionId]) -> Result<Vec<SeenAt>, StoreError> {
        self.last_seen_reads.fetch_add(1, Ordering::SeqCst);
        self.inner.last_seen(ids).await
    }
}
