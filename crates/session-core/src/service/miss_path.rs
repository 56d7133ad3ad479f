//! The miss path, with a change log only: a token not in the cache may be a
//! session another process just created, so it costs at most one store read,
//! within a rate limit (past it, the answer is "busy", never "invalid"), and
//! hashes the store did not know are remembered.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{Error, Inner, lock};
use crate::session::Session;
use crate::status::ResolveOutcome;
use crate::token::TokenHash;

impl Inner {
    /// The miss path: one store read for a hash not in the cache, unless it
    /// is known not to be active (invalid: the store did not have it, or it
    /// was revoked recently) or the read budget is spent (busy). Returns
    /// the outcome with the answer, for the caller to count.
    pub(super) async fn read_through(
        self: &Arc<Self>,
        hash: TokenHash,
    ) -> (Result<Arc<Session>, Error>, ResolveOutcome) {
        let now = self.clock.monotonic();
        // Known not to be active: unknown to the store, or revoked recently.
        // Each lock is taken alone.
        if self.was_revoked(&hash, now) || lock(&self.negative).contains(&hash, now) {
            self.stats.negative_hits.fetch_add(1, Ordering::Relaxed);
            return (Err(Error::InvalidToken), ResolveOutcome::Negative);
        }
        if !lock(&self.miss_reads).try_take(now) {
            self.stats
                .miss_reads_rejected
                .fetch_add(1, Ordering::Relaxed);
            // Not checked, so not known to be invalid: "invalid" would make
            // the client log out a user whose session may be brand new.
            return (Err(Error::Busy), ResolveOutcome::RateLimited);
        }
        self.stats.miss_reads.fetch_add(1, Ordering::Relaxed);
        // Pending before the read: a revocation applied while it is in flight
        // keeps its result out of the cache.
        let pending = self.begin_insert(hash);
        match self.store.find_active_by_hash(&hash).await {
            Ok(Some(session)) => {
                let session = Arc::new(session);
                if pending.finish(&session) {
                    (Ok(session), ResolveOutcome::MissReadActive)
                } else {
                    // Revoked while the read was in flight.
                    (Err(Error::InvalidToken), ResolveOutcome::MissReadInactive)
                }
            }
            Ok(None) => {
                lock(&self.negative).insert(hash, now);
                (Err(Error::InvalidToken), ResolveOutcome::MissReadInactive)
            }
            Err(err) => {
                let outcome = ResolveOutcome::of_store_error(&err);
                (Err(Error::Store(err)), outcome)
            }
        }
    }
}
