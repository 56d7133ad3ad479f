//! What each resolve answered, counted where it is decided.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::store::StoreError;

/// How a resolve ended, as the caller sees it: each outcome maps to one
/// answer (200, 401 or 503/500 over HTTP).
///
/// [`SessionService::resolve`](super::SessionService::resolve) counts every
/// call under exactly one of these, where the outcome is known, and
/// [`SessionService::resolve_counts`](super::SessionService::resolve_counts)
/// reads the counts (for metrics). Counting is one relaxed atomic increment:
/// no lock, no allocation.
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
    /// Not in the cache, and the miss-read budget ([`MissPolicy`](crate::MissPolicy))
    /// was spent: [`Error::Busy`](super::Error::Busy), not checked.
    RateLimited,
    /// The cache has not finished its first warm: [`Error::NotReady`](super::Error::NotReady).
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
    pub(super) const fn of_store_error(err: &StoreError) -> Self {
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
pub(super) struct ResolveCounters([AtomicU64; ResolveOutcome::ALL.len()]);

impl ResolveCounters {
    pub(super) fn count(&self, outcome: ResolveOutcome) {
        self.0[outcome.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn read(&self) -> ResolveCounts {
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
