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
