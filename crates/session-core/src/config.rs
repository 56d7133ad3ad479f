//! What [`SessionServiceBuilder`](crate::SessionServiceBuilder) takes beyond
//! durations and sizes: last-seen activity. Operators tune these; the defaults suit a host.

use std::time::Duration;

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
