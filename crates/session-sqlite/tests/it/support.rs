//! A store in a temporary directory that lives exactly as long as the store.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use session_core::{
    AccountId, ActivePage, ListScope, RevokeOutcome, Session, SessionId, SessionStore, StoreError,
    TokenHash,
};
use session_sqlite::{SqliteOptions, SqliteSessionStore};
use tempfile::TempDir;
use time::OffsetDateTime;

/// A fresh directory and the database path inside it (not yet created).
pub(crate) fn temp_db() -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("sessions.db");
    (dir, path)
}

/// A [`SqliteSessionStore`] on a file in its own temporary directory, removed
/// after the store is closed.
pub(crate) struct TempStore {
    // Declared first: fields drop in order, so the store closes its
    // connections before the directory is removed.
    pub(crate) store: SqliteSessionStore,
    _dir: TempDir,
}

impl TempStore {
    /// Opens a store on a new file with default options.
    pub(crate) async fn new() -> Self {
        Self::with(SqliteOptions::default()).await
    }

    /// Opens a store on a new file with `options`.
    pub(crate) async fn with(options: SqliteOptions) -> Self {
        let (dir, path) = temp_db();
        let store = SqliteSessionStore::open_with(&path, options)
            .await
            .expect("opening a new file");
        Self { store, _dir: dir }
    }

    /// The database file.
    pub(crate) fn path(&self) -> &Path {
        self.store.path()
    }
}

#[async_trait]
impl SessionStore for TempStore {
    async fn insert(&self, session: &Session) -> Result<(), StoreError> {
        self.store.insert(session).await
    }

    async fn find_active_by_hash(&self, hash: &TokenHash) -> Result<Option<Session>, StoreError> {
        self.store.find_active_by_hash(hash).await
    }

    async fn get(&self, id: SessionId) -> Result<Option<Session>, StoreError> {
        self.store.get(id).await
    }

    async fn revoke(&self, id: SessionId, at: OffsetDateTime) -> Result<RevokeOutcome, StoreError> {
        self.store.revoke(id, at).await
    }

    async fn revoke_all_for_account(
        &self,
        account: AccountId,
        except: Option<SessionId>,
        at: OffsetDateTime,
    ) -> Result<Vec<TokenHash>, StoreError> {
        self.store.revoke_all_for_account(account, except, at).await
    }

    async fn list_for_account(
        &self,
        account: AccountId,
        scope: ListScope,
        page: session_core::PageRequest,
    ) -> Result<session_core::AccountPage, StoreError> {
        self.store.list_for_account(account, scope, page).await
    }

    async fn active_page(
        &self,
        after: Option<SessionId>,
        limit: u32,
    ) -> Result<ActivePage, StoreError> {
        self.store.active_page(after, limit).await
    }

    async fn health_check(&self) -> Result<(), StoreError> {
        self.store.health_check().await
    }

    async fn record_last_seen(&self, seen: &[session_core::SeenAt]) -> Result<(), StoreError> {
        self.store.record_last_seen(seen).await
    }

    async fn last_seen(&self, ids: &[SessionId]) -> Result<Vec<session_core::SeenAt>, StoreError> {
        self.store.last_seen(ids).await
    }
}
