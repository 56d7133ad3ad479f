//! What [`SessionServiceBuilder`](crate::SessionServiceBuilder) takes beyond
//! durations and sizes: the miss policy of a service with a change log, and
//! last-seen activity. Operators tune these; the defaults suit a host.

use std::time::Duration;

/// How a service with a change log treats a cache miss: it may be a session
/// another process created whose change has not arrived yet, so a miss reads
/// the store once, within a rate limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MissPolicy {
    /// Store reads per second that misses may cause, on average.
    pub reads_per_second: f64,
    /// Reads allowed at once above that average.
    pub burst: u32,
    /// How many token hashes the store did not know are remembered, so a
    /// repeated unknown or revoked token costs no further read. Safe: a
    /// 256-bit token never becomes valid later.
    pub negative_entries: usize,
}

impl Default for MissPolicy {
    fn default() -> Self {
        Self {
            reads_per_second: 100.0,
            burst: 100,
            negative_entries: 65_536,
        }
    }
}

/// How last-seen activity is kept, when it is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastSeenSettings {
    /// Marks waiting for the next flush at most; beyond it, marks are
    /// dropped and counted (default 65,536: about 1.5 MiB).
    pub queue_capacity: usize,
    /// How often the [`BackgroundTasks`](crate::BackgroundTasks) write the
    /// queued marks (default 10 s). The current minute is refreshed every
    /// second regardless.
    pub flush_interval: Duration,
}

impl Default for LastSeenSettings {
    fn default() -> Self {
        Self {
            queue_capacity: 65_536,
            flush_interval: Duration::from_secs(10),
        }
    }
}
