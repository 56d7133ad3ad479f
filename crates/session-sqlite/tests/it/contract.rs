//! The session-core store contract against a SQLite file per case (not
//! `:memory:`, so every write goes through the write-ahead log and its syncs).

session_core::store_contract_tests!(crate::support::TempStore::new());

mod events {
    session_core::event_log_contract_tests!(crate::support::TempStore::new());
}
