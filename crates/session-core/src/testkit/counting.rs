//! [`CountingStore`]: a store that forwards every call and counts the
//! last-seen writes, so tests see how marks were batched.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::session::{AccountId, Session, SessionId};
use crate::store::{
    AccountPage, ActivePage, ListScope, PageRequest, RevokeOutcome, SeenAt, SessionStore,
    StoreError,
};
use crate::token::TokenHash;

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

#[async_trait]
impl<S: SessionStore> SessionStore for CountingStore<S> {
    async fn insert(&self, session: &Session) -> Result<(), StoreError> {
        self.inner.insert(session).await
    }

    async fn find_active_by_hash(&self, hash: &TokenHash) -> Result<Option<Session>, StoreError> {
        self.inner.find_active_by_hash(hash).await
    }

    async fn get(&self, id: SessionId) -> Result<Option<Session>, StoreError> {
        self.inner.get(id).await
    }

    async fn revoke(&self, id: SessionId, at: OffsetDateTime) -> Result<RevokeOutcome, StoreError> {
        self.inner.revoke(id, at).await
    }

    async fn revoke_all_for_account(
        &self,
        account: AccountId,
        except: Option<SessionId>,
        at: OffsetDateTime,
    ) -> Result<Vec<TokenHash>, StoreError> {
        self.inner.revoke_all_for_account(account, except, at).await
    }

    async fn list_for_account(
        &self,
        account: AccountId,
        scope: ListScope,
        page: PageRequest,
    ) -> Result<AccountPage, StoreError> {
        self.inner.list_for_account(account, scope, page).await
    }

    async fn active_page(
        &self,
        after: Option<SessionId>,
        limit: u32,
    ) -> Result<ActivePage, StoreError> {
        self.inner.active_page(after, limit).await
    }

    async fn health_check(&self) -> Result<(), StoreError> {
        self.inner.health_check().await
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
