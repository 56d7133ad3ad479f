//! The session-core store and change-log contracts, against PostgreSQL.

use session_core::port::change_log::{ChangeLog, ChangeLogDecorator};
use session_core::port::events::{EventCursor, EventLog, EventRead};
use session_core::port::store::{SessionStore, StoreDecorator, StoreError};
use session_postgres::PgSessionStore;
use session_test_postgres::TestDatabase;

/// The store with the database it uses, so the database is dropped with it.
struct StoreOnTestDatabase {
    store: PgSessionStore,
    _database: TestDatabase,
}

impl StoreDecorator for StoreOnTestDatabase {
    fn inner_store(&self) -> &dyn SessionStore {
        &self.store
    }
}

impl ChangeLogDecorator for StoreOnTestDatabase {
    fn inner_log(&self) -> &dyn ChangeLog {
        &self.store
    }
}

#[async_trait::async_trait]
impl EventLog for StoreOnTestDatabase {
    async fn head(&self) -> Result<EventCursor, StoreError> {
        EventLog::head(&self.store).await
    }

    async fn read(&self, after: EventCursor, limit: u32) -> Result<EventRead, StoreError> {
        EventLog::read(&self.store, after, limit).await
    }

    async fn sequence(&self) -> Result<EventCursor, StoreError> {
        self.store.sequence().await
    }

    async fn prune(&self, before: time::OffsetDateTime, batch: u32) -> Result<u64, StoreError> {
        EventLog::prune(&self.store, before, batch).await
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

mod change_log {
    session_core::change_log_contract_tests!(super::store_on_test_database());
}

mod events {
    session_core::event_log_contract_tests!(super::store_on_test_database());
}
