//! The service's suites over the compact cache, with a record cache of
//! two records, so most whole records are read from the store and the ones
//! held are evicted as the tests go.

use std::sync::Arc;

use session_core::CompactCache;
use session_core::port::cache::SessionCache;
use session_core::testkit::FifoRecords;

/// A fresh cache of this mode.
fn cache() -> Arc<dyn SessionCache> {
    Arc::new(CompactCache::new().with_records(Arc::new(FifoRecords::new(2))))
}

#[path = "change_log.rs"]
mod change_log;
#[path = "service.rs"]
mod service;
