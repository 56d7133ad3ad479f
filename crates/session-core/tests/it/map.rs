//! The service's suites over the full-mode cache, `MemoryCache`.

use std::sync::Arc;

use session_core::MemoryCache;
use session_core::port::cache::SessionCache;

/// A fresh cache of this mode.
fn cache() -> Arc<dyn SessionCache> {
    Arc::new(MemoryCache::new())
}

#[path = "change_log.rs"]
mod change_log;
#[path = "service.rs"]
mod service;

/// What the full mode holds per session is one `Arc<Session>` (the record
/// and two counts) and a table slot. jemalloc, session-app's allocator,
/// serves 129 to 160 bytes from its 160-byte class and 161 to 192 from the
/// 192-byte one, glibc in steps of 16 with 8 bytes of its own: a record
/// past 160 bytes costs 32 more per session in the one and 16 in the
/// other. Revocation details live behind a pointer for this (none of the
/// sessions a cache holds is revoked).
#[test]
fn a_cached_record_fits_a_160_byte_allocation() {
    let record = size_of::<session_core::Session>() + 2 * size_of::<usize>();
    assert!(record <= 160, "an Arc<Session> takes {record} bytes");
}
