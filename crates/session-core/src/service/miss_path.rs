//! The miss path, with a change log only: a consistent read from the cache.
//!
//! A token not in the cache may be a session another process has just
//! created, so a miss is not final at once. It asks the follower for a read
//! of the change log that *starts after the miss arrived*, waits until that
//! read and every page after it are applied, and looks in the cache again:
//! found means active, absent means invalid, exactly, whatever the login
//! rate. A read applied meanwhile that revokes the token ends the wait at
//! once: revoked is final, so no later read could change the answer.
//! Misses never read the store themselves: all that wait at once share
//! one log read, and the reads they start are at least
//! [`MISS_READ_SPACING`] apart, so a flood of random tokens costs the
//! database a bounded number of cheap queries, never one per token.
//! (Kubernetes serves its watch cache the same way: KEP-2340, "consistent
//! reads from cache".)

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, watch};

use super::{Error, Inner, lock};
use crate::port::store::StoreError;
use crate::session::SessionIdentity;
use crate::status::ResolveOutcome;
use crate::token::TokenHash;

/// The least time between the starts of two log reads that misses start:
/// at most 200 a second per instance, however many misses arrive. Reads
/// started by a wake-up or the poll interval neither wait for this nor
/// delay a miss's read, and serve the misses waiting then too.
pub(super) const MISS_READ_SPACING: Duration = Duration::from_millis(5);

/// The follower's catch-ups, numbered as they start, so a miss can wait for
/// one that started after it arrived.
pub(super) struct CatchUps {
    /// The number of the last catch-up that started.
    started: AtomicU64,
    /// The number of the last catch-up that reached the end of the log.
    finished: watch::Sender<u64>,
    /// Misses waiting for a catch-up.
    wanted: Notify,
}

impl Default for CatchUps {
    fn default() -> Self {
        Self {
            started: AtomicU64::new(0),
            finished: watch::Sender::new(0),
            wanted: Notify::new(),
        }
    }
}

impl CatchUps {
    /// Numbers a catch-up about to read the log; call before its first read.
    pub(super) fn start(&self) -> u64 {
        self.started.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Records that catch-up `number` reached the end of the log.
    pub(super) fn finish(&self, number: u64) {
        self.finished.send_if_modified(|finished| {
            let newer = number > *finished;
            if newer {
                *finished = number;
            }
            newer
        });
    }

    /// Resolves when a miss asks for a read.
    pub(super) async fn wanted(&self) {
        self.wanted.notified().await;
    }

    /// Waits until a catch-up that started after this call has finished, or
    /// until `revoked()` holds after any catch-up, at most `limit`.
    async fn after_now(&self, limit: Duration, revoked: impl Fn() -> bool) -> Waited {
        let mut finished = self.finished.subscribe();
        // Any catch-up numbered past the current count starts after now, so
        // its first read's snapshot follows whatever committed before the miss.
        let target = self.started.load(Ordering::SeqCst) + 1;
        self.wanted.notify_one();
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if *finished.borrow_and_update() >= target {
                return Waited::CaughtUp;
            }
            if !matches!(
                tokio::time::timeout_at(deadline, finished.changed()).await,
                Ok(Ok(()))
            ) {
                return Waited::TimedOut;
            }
            // Looked at after each catch-up: the caller looked before the wait.
            if revoked() {
                return Waited::Revoked;
            }
        }
    }
}

/// How a miss's wait for the change log ended.
enum Waited {
    /// A catch-up that started after the miss arrived has finished.
    CaughtUp,
    /// An earlier catch-up applied the token's revocation: final, since a
    /// revoked session never becomes active again, so no later read can
    /// change the answer.
    Revoked,
    /// The log could not be read in time.
    TimedOut,
}

/// A miss that could not be decided in time: the log could not be read.
#[derive(Debug, thiserror::Error)]
#[error("the change log could not be read within {0:?} to decide a cache miss")]
struct NotCaughtUp(Duration);

impl Inner {
    /// The miss path: answered at once when the hash was revoked recently
    /// or found absent by an earlier miss; otherwise after the cache has
    /// caught up with the change log as of now, or a read has revoked the
    /// hash meanwhile, within the staleness bound. Returns the outcome with
    /// the answer, for the caller to count.
    pub(super) async fn consistent_miss(
        self: &Arc<Self>,
        hash: TokenHash,
    ) -> (Result<SessionIdentity, Error>, ResolveOutcome) {
        let now = self.clock.monotonic();
        // Each lock is taken alone.
        if self.was_revoked(&hash, now) || lock(&self.absent).contains(&hash, now) {
            return (Err(Error::InvalidToken), ResolveOutcome::Negative);
        }
        self.stats.miss_waits.fetch_add(1, Ordering::Relaxed);
        let limit = self.pacing.max_staleness;
        let revoked = || self.was_revoked(&hash, self.clock.monotonic());
        match self.catch_ups.after_now(limit, revoked).await {
            Waited::CaughtUp => {}
            Waited::Revoked => return (Err(Error::InvalidToken), ResolveOutcome::CaughtUpInactive),
            Waited::TimedOut => {
                let err = StoreError::Unavailable(Box::new(NotCaughtUp(limit)));
                return (Err(Error::Store(err)), ResolveOutcome::StoreUnavailable);
            }
        }
        match self.cache.get(&hash) {
            Some(identity) => (Ok(identity), ResolveOutcome::CaughtUpActive),
            None => {
                // Absent once everything committed before the miss is
                // applied: its session, if it ever existed, is revoked, and
                // a 256-bit token nobody was given is never issued later.
                lock(&self.absent).insert(hash, now);
                (Err(Error::InvalidToken), ResolveOutcome::CaughtUpInactive)
            }
        }
    }
}
