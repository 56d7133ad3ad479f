//! The cache contract every `SessionCache` adapter passes.

mod moka_cache {
    session_core::cache_contract_tests!(session_cache_moka::MokaSessionCache::new);
}

/// session-core's compact index with this crate's record cache, as
/// `session-app --cache compact` builds it; a small bound, so records are
/// evicted while the cases run.
mod compact_with_moka_records {
    session_core::cache_contract_tests!(|| {
        session_core::CompactCache::new().with_records(std::sync::Arc::new(
            session_cache_moka::MokaRecordCache::new(256 << 10),
        ))
    });
}
