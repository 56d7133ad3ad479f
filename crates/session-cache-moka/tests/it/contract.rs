//! The cache contract every `SessionCache` adapter passes.

session_core::cache_contract_tests!(session_cache_moka::MokaSessionCache::new);
