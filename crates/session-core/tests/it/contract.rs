//! The contract suites against the in-memory adapters.

mod memory_store {
    session_core::store_contract_tests!(async { session_core::memory::MemoryStore::new() });
}

mod memory_cache {
    session_core::cache_contract_tests!(session_core::MemoryCache::new);
}

mod compact_cache {
    session_core::cache_contract_tests!(session_core::CompactCache::new);
}

mod compact_cache_with_records {
    session_core::cache_contract_tests!(|| {
        session_core::CompactCache::new().with_records(std::sync::Arc::new(
            session_core::testkit::FifoRecords::new(1_000),
        ))
    });
}

mod memory_feed {
    session_core::change_log_contract_tests!(async { session_core::memory::MemoryStore::new() });
}

mod memory_events {
    session_core::event_log_contract_tests!(async { session_core::memory::MemoryStore::new() });
}
