//! What the service reports about itself, for operators and monitoring code:
//! [`ServiceStatus`], read by
//! [`SessionService::status`](crate::SessionService::status) at every metrics
//! scrape and readiness probe, and the counters it holds.
//!
//! Reading it costs a few atomic loads and short lock holds, no I/O: the
//! store's health check, the one part of readiness that needs a round trip,
//! is [`SessionService::check_store`](crate::SessionService::check_store).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::port::store::StoreError;

/// A snapshot of the service's state and counters, cheap to read. Only the
/// service makes one, so fields can be added without breaking readers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServiceStatus {
    /// Whether a warm has completed, so resolves are authoritative.
    pub cache_warm: bool,
    /// Active sessions in the cache.
    pub cached_sessions: usize,
    /// The last completed warm, if any.
    pub last_warm: Option<WarmReport>,
    /// With a change log, how far the cache is behind it; `None` without one.
    pub change_log: Option<ChangeLogLag>,
    /// Counters of the change log and of the miss path it brings.
    pub change_log_stats: ChangeLogStats,
    /// How many resolves ended in each [`ResolveOutcome`] since the service was
    /// built: every call of
    /// [`SessionService::resolve`](crate::SessionService::resolve), whoever made
    /// it.
    pub resolves: ResolveCounts,
    /// Counters of last-seen activity; `None` with it off.
    pub last_seen: Option<LastSeenStats>,
}

impl ServiceStatus {
    /// The cache's part of readiness: warm, and with a change log, within its
    /// staleness bound. The service is ready to answer resolves authoritatively
    /// and accept writes when this holds and the store answers its health check
    /// ([`SessionService::check_store`](crate::SessionService::check_store)).
    #[must_use]
    pub fn cache_ready(&self) -> bool {
        self.cache_warm && self.change_log.is_none_or(|lag| lag.within_bound())
    }
}

/// What a completed warm loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WarmReport {
    /// Active sessions in the cache once the warm completed.
    pub sessions: usize,
    /// Pages read from the store.
    pub pages: usize,
    /// How long the warm took.
    pub elapsed: Duration,
}

/// How far a cache that follows a change log is behind it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangeLogLag {
    /// Time since the start of the last read that reached the end of the
    /// change log: every change committed before that instant is applied.
    /// `None` until the first such read.
    pub lag: Option<Duration>,
    /// The most lag at which the service reports ready (its staleness bound).
    pub bound: Duration,
}

impl ChangeLogLag {
    /// Whether every change committed more than [`bound`](Self::bound) ago is applied.
    #[must_use]
    pub fn within_bound(&self) -> bool {
        self.lag.is_some_and(|lag| lag <= self.bound)
    }
}

/// Counters of the change log and of the miss path it brings, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChangeLogStats {
    /// Changes from the change log applied to the cache.
    pub changes_applied: u64,
    /// Reads of the change log that failed; they were retried from the same
    /// position.
    pub read_failures: u64,
    /// Completed loads of every active session: the first warm, and each
    /// reload after the change log expired past the position read from or
    /// asked for one.
    pub full_loads: u64,
    /// Stored rows skipped because the domain rejects them, each time a
    /// warm, a change-log read or a list meets one (a row can be met by each).
    pub rows_skipped: u64,
    /// Wake-up hints received (each costs at most one change-log read).
    pub wake_ups: u64,
    /// Store reads caused by cache misses.
    pub miss_reads: u64,
    /// Misses answered [`Error::Busy`](crate::Error::Busy) without a read
    /// because the rate limit was reached.
    pub miss_reads_rejected: u64,
    /// Misses answered "invalid" without a read: from the negative cache, or
    /// the hash was revoked recently (a tombstone).
    pub negative_hits: u64,
}

/// Counters of last-seen activity, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LastSeenStats {
    /// Marks written to the store by successful flushes (after merging marks
    /// of the same session).
    pub flushed: u64,
    /// Marks lost: the queue was full, or a batch kept after failed flushes
    /// outgrew the queue's capacity.
    pub dropped: u64,
    /// Flushes whose store call failed; their batch is kept for the next.
    pub flush_failures: u64,
}

/// How a resolve ended, as the caller sees it: each outcome maps to one
/// answer (200, 401 or 503/500 over HTTP).
///
/// [`SessionService::resolve`](crate::SessionService::resolve) counts every
/// call under exactly one of these, where the outcome is known, and
/// [`ServiceStatus::resolves`] holds the counts (for metrics). Counting is one
/// relaxed atomic increment: no lock, no allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ResolveOutcome {
    /// Found in the cache: an active session.
    Hit,
    /// Not in the cache, read from the store (with a change log), and found
    /// active there: an active session.
    MissReadActive,
    /// Not in the cache, read from the store, and not active there (unknown,
    /// revoked, or revoked while the read was in flight): invalid.
    MissReadInactive,
    /// Not in the cache and answered invalid without a store read: the cache
    /// is complete (no change log), or the hash is known not to be active
    /// (the store did not have it, or it was revoked recently).
    Negative,
    /// Not a well-formed token (prefix, length, alphabet or checksum):
    /// invalid before any lookup.
    Malformed,
    /// Not in the cache, and the miss-read budget
    /// ([`MissPolicy`](crate::config::MissPolicy)) was spent:
    /// [`Error::Busy`](crate::Error::Busy), not checked.
    RateLimited,
    /// The cache has not finished its first warm: [`Error::NotReady`](crate::Error::NotReady).
    NotReady,
    /// The miss read failed with [`StoreError::Unavailable`]: retry later.
    StoreUnavailable,
    /// The miss read failed for a reason retrying will not fix.
    StoreFailed,
}

impl ResolveOutcome {
    /// Every outcome, in a fixed order.
    pub const ALL: [Self; 9] = [
        Self::Hit,
        Self::MissReadActive,
        Self::MissReadInactive,
        Self::Negative,
        Self::Malformed,
        Self::RateLimited,
        Self::NotReady,
        Self::StoreUnavailable,
        Self::StoreFailed,
    ];

    /// A stable snake_case name, for metric labels.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::MissReadActive => "miss_read_active",
            Self::MissReadInactive => "miss_read_inactive",
            Self::Negative => "negative",
            Self::Malformed => "malformed",
            Self::RateLimited => "rate_limited",
            Self::NotReady => "not_ready",
            Self::StoreUnavailable => "store_unavailable",
            Self::StoreFailed => "store_failed",
        }
    }

    /// The outcome of a failed store call, by its kind.
    pub(crate) const fn of_store_error(err: &StoreError) -> Self {
        if err.is_retryable() {
            Self::StoreUnavailable
        } else {
            Self::StoreFailed
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

/// How many resolves ended in each [`ResolveOutcome`] since the service was built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResolveCounts([u64; ResolveOutcome::ALL.len()]);

impl ResolveCounts {
    /// The count of `outcome`.
    #[must_use]
    pub const fn get(&self, outcome: ResolveOutcome) -> u64 {
        self.0[outcome.index()]
    }

    /// Every outcome with its count, in [`ResolveOutcome::ALL`]'s order.
    pub fn iter(&self) -> impl Iterator<Item = (ResolveOutcome, u64)> + '_ {
        ResolveOutcome::ALL
            .iter()
            .map(|outcome| (*outcome, self.get(*outcome)))
    }
}

/// The live counters behind [`ResolveCounts`].
#[derive(Debug, Default)]
pub(crate) struct ResolveCounters([AtomicU64; ResolveOutcome::ALL.len()]);

impl ResolveCounters {
    pub(crate) fn count(&self, outcome: ResolveOutcome) {
        self.0[outcome.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn read(&self) -> ResolveCounts {
        ResolveCounts(std::array::from_fn(|i| self.0[i].load(Ordering::Relaxed)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_outcome_has_its_own_slot_and_name() {
        let counters = ResolveCounters::default();
        for (n, outcome) in ResolveOutcome::ALL.iter().enumerate() {
            for _ in 0..=n {
                counters.count(*outcome);
            }
        }
        let counts = counters.read();
        for (n, (outcome, count)) in counts.iter().enumerate() {
            assert_eq!(outcome, ResolveOutcome::ALL[n]);
            assert_eq!(count, n as u64 + 1, "{outcome:?}");
        }
        let names: std::collections::HashSet<_> =
            ResolveOutcome::ALL.iter().map(|o| o.as_str()).collect();
        assert_eq!(names.len(), ResolveOutcome::ALL.len());
    }
}
