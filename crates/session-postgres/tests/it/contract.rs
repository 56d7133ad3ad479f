//! The session-core store and change-log contracts, against PostgreSQL.

use async_trait::async_trait;
use session_core::{
    AccountId, ActivePage, ChangeLog, ListScope, LogPosition, LogRead, RevokeOutcome, Session,
    SessionId, SessionStore, StoreError, TokenHash, WakeUps,
};
use session_postgres::PgSessionStore;
use session_test_postgres::TestDatabase;
use time::OffsetDateTime;

/// The store with the database it uses, so the database is dropped with it.
struct StoreOnTestDatabase {
    store: PgSessionStore,
    _database: TestDatabase,
}

#[async_trait]
impl SessionStore for StoreOnTestDatabase {
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

#[async_trait]
impl ChangeLog for StoreOnTestDatabase {
    async fn head(&self) -> Result<LogPosition, StoreError> {
        self.store.head().await
    }

    async fn read(&self, after: LogPosition, limit: u32) -> Result<LogRead, StoreError> {
        self.store.read(after, limit).await
    }

    async fn wake_ups(&self) -> Result<Box<dyn WakeUps>, StoreError> {
        self.store.wake_ups().await
    }

    async fn prune(&self) -> Result<u64, StoreError> {
        self.store.prune().await
    }
}

async fn store_on_test_database() -> StoreOnTestDatabase {
    let (database, store) = crate::support::fresh_store().await;
    StoreOnTestDatabase {
        store,
        _database: database,
    }
}

mod store {
    session_core::store_contract_tests!(super::store_on_test_database());
}

mod feed {
    session_core::feed_contract_tests!(super::store_on_test_database());
}
