//! The session-core store and change-log contracts, against PostgreSQL.

use session_core::port::change_log::{ChangeLog, ChangeLogDecorator};
use session_core::port::store::{SessionStore, StoreDecorator};
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
