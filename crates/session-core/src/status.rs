//! What the service reports about itself, for operators and monitoring code:
//! [`ServiceStatus`], read by
//! [`SessionService::status`](crate::SessionService::status) at every metrics
//! scrape and readiness probe, and the counters it holds.
//!
//! Reading it costs a few atomic loads and short lock holds, no I/O: the
//! store's health check, the one part of readiness that needs a round trip,
//! is [`SessionService::check_store`](crate::SessionService::check_store).

use crate::port::cache::CacheMode;
pub use crate::service::{Round, RoundEnd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A snapshot of the service's state and counters, cheap to read. Only the
/// service makes one, so fields can be added without breaking readers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServiceStatus {
    /// Whether a warm has completed, so resolves are authoritative.
    pub cache_warm: bool,
    /// Active sessions in the cache.
    pub cached_sessions: usize,
    /// What the cache holds beyond each session's identity.
    pub cache_mode: CacheMode,
    /// The bytes the cache occupies
    /// ([`SessionCache::bytes`](crate::port::cache::SessionCache::bytes)),
    /// when it can tell.
    pub cache_bytes: Option<usize>,
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
    /// With a change log, whether the follower listens for wake-ups now, so
    /// others' writes reach the cache at once; `false` while it only polls
    /// (wake-ups off, lost, or not delivered where the store is reached),
    /// and without a change log.
    pub wake_ups_listening: bool,
    /// Idle revocation's counters; `None` with it off.
    pub idle_revocation: Option<JobStats>,
    /// Retention's counters; `None` with it off.
    pub retention: Option<JobStats>,
    /// The "not before" mark in force in this process, if any.
    pub not_before: Option<time::OffsetDateTime>,
    /// The "not before" sweep's rounds: rounds that found nothing to
    /// revoke count too.
    pub not_before_sweep: JobStats,
}

/// The "not before" mark as the fleet holds it
/// ([`SessionService::read_not_before`](crate::SessionService::read_not_before)):
/// the mark in force, who raised it, and how far the sweep that revokes the
/// sessions it marks has gone.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NotBeforeState {
    /// The mark in force: the later of the store's and this process's;
    /// `None` when no mark was ever raised.
    pub mark: Option<time::OffsetDateTime>,
    /// The name of the API key that raised the store's mark to its value,
    /// if one did.
    pub raised_by: Option<crate::Revoker>,
    /// The mark up to which every session it marks has been revoked in the
    /// store; `None` while no sweep has completed.
    pub swept_through: Option<time::OffsetDateTime>,
}

impl NotBeforeState {
    /// Whether every session the mark marks has been revoked in the store
    /// (true with no mark).
    #[must_use]
    pub fn swept(&self) -> bool {
        self.mark
            .is_none_or(|mark| self.swept_through.is_some_and(|swept| swept >= mark))
    }
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
    /// Reads of the change log, whatever asked for them (a wake-up, a miss,
    /// the poll interval), each one query of at most a page of entries.
    /// Misses share reads and ask for at most 200 a second.
    pub reads: u64,
    /// Cache misses that waited for the cache to catch up with the change
    /// log before they were answered (a consistent read from the cache).
    pub miss_waits: u64,
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

/// Counters of a maintenance job (idle revocation, retention) since the
/// service was built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JobStats {
    /// Sessions the job changed (revoked, deleted or erased), each counted
    /// once, by the one process whose statement changed it.
    pub sessions: u64,
    /// Rounds run to their end (every batch done).
    pub rounds: u64,
    /// Rounds that stopped because another process was running the job.
    pub busy_rounds: u64,
    /// Rounds that stopped at a failed batch (retried at the next round).
    pub failed_rounds: u64,
    /// When the last round ended, however it ended, by the service's clock.
    pub last_round_end: Option<time::OffsetDateTime>,
    /// How long the last round took.
    pub last_round: std::time::Duration,
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
    /// Not in the cache at first; found there once the cache had applied the
    /// change log up to a read that started after the resolve did: an
    /// active session another process created.
    CaughtUpActive,
    /// Not in the cache, even once it had applied the change log up to a
    /// read that started after the resolve did, or revoked by a read applied
    /// while the resolve waited for one: invalid, exactly.
    CaughtUpInactive,
    /// Not in the cache and answered invalid at once: the cache is complete
    /// (no change log), or the hash was revoked recently or found absent
    /// by an earlier miss.
    Negative,
    /// Not a well-formed token (prefix, length, alphabet or checksum):
    /// invalid before any lookup.
    Malformed,
    /// The cache has not finished its first warm: [`Error::NotReady`](crate::Error::NotReady).
    NotReady,
    /// Not in the cache, and the change log could not be read in time to
    /// decide: [`Error::Store`](crate::Error::Store) unavailable; retry later.
    StoreUnavailable,
}

impl ResolveOutcome {
    /// Every outcome, in a fixed order.
    pub const ALL: [Self; 7] = [
        Self::Hit,
        Self::CaughtUpActive,
        Self::CaughtUpInactive,
        Self::Negative,
        Self::Malformed,
        Self::NotReady,
        Self::StoreUnavailable,
    ];

    /// A stable snake_case name, for metric labels.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::CaughtUpActive => "caught_up_active",
            Self::CaughtUpInactive => "caught_up_inactive",
            Self::Negative => "negative",
            Self::Malformed => "malformed",
            Self::NotReady => "not_ready",
            Self::StoreUnavailable => "store_unavailable",
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
