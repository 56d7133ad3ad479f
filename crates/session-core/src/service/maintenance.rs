//! The maintenance jobs: idle revocation, retention of revoked sessions,
//! and the "not before" sweep, which revokes the sessions a raised mark
//! marks, with reason `admin`.
//!
//! A round walks the sessions in id order, one store statement per batch,
//! until a batch comes back short. Idle revocation goes through the normal
//! revocation path: the store commits the batch, then the batch's hashes
//! leave this instance's cache (on its own task, as every write, so a
//! committed batch always reaches the cache), and the change log carries
//! them to other instances. A failed batch changed nothing, leaves the
//! cache as it was, and ends the round; the next round starts over.
//!
//! With a store several processes share, each batch runs only in the
//! process that holds the job's lock for that statement
//! ([`Exclusive::Busy`] otherwise): a round that finds the job busy stops,
//! and counts nothing.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use time::OffsetDateTime;

use super::{Error, Inner, SessionService, lock};
use crate::config::{IdleRevocation, Retention};
use crate::port::clock::to_micros;
use crate::port::store::{Exclusive, RevokedSession};
use crate::session::{RevocationReason, SessionId};
use crate::status::JobStats;

/// Sessions the "not before" sweep revokes per statement.
const NOT_BEFORE_BATCH: u32 = 1_000;

/// A revocation batch the store committed, applied to this instance's
/// cache: the revoked hashes leave it, and the batch answers their ids.
fn apply_revoked(
    inner: &Inner,
    batch: Exclusive<Vec<RevokedSession>>,
) -> Exclusive<Vec<SessionId>> {
    match batch {
        Exclusive::Done(revoked) => {
            let hashes: Vec<_> = revoked.iter().map(|s| s.token_hash).collect();
            inner.apply_removals(&hashes);
            Exclusive::Done(revoked.iter().map(|s| s.id).collect())
        }
        Exclusive::Busy => Exclusive::Busy,
    }
}

/// What one round of a maintenance job did.
#[derive(Debug)]
pub struct Round {
    /// Sessions changed by each batch, in order (a dry run: found).
    pub batches: Vec<usize>,
    /// How the round ended.
    pub end: RoundEnd,
}

impl Round {
    /// Sessions changed (or found, in a dry run) in all.
    #[must_use]
    pub fn total(&self) -> usize {
        self.batches.iter().sum()
    }
}

/// How a maintenance round ended.
#[derive(Debug)]
pub enum RoundEnd {
    /// Every batch was done: the last came back short.
    Complete,
    /// Another process runs the job now; this one stopped, leaving it the work.
    Busy,
    /// A batch failed and changed nothing; the batches before it stand.
    Failed(Error),
}

/// A job's counters, behind the service's status.
#[derive(Debug, Default)]
pub(super) struct JobCounters(Mutex<JobStats>);

impl JobCounters {
    pub(super) fn read(&self) -> JobStats {
        *lock(&self.0)
    }

    fn count(&self, round: &Round, ended: OffsetDateTime, took: Duration) {
        let mut stats = lock(&self.0);
        stats.sessions += round.total() as u64;
        match round.end {
            RoundEnd::Complete => stats.rounds += 1,
            RoundEnd::Busy => stats.busy_rounds += 1,
            RoundEnd::Failed(_) => stats.failed_rounds += 1,
        }
        stats.last_round_end = Some(ended);
        stats.last_round = took;
    }
}

/// Runs batches until one is short, busy or failed. `batch` gets where to
/// start and answers the ids it took (in order) or busy.
async fn walk<F, Fut>(limit: u32, mut batch: F) -> Round
where
    F: FnMut(Option<SessionId>) -> Fut,
    Fut: Future<Output = Result<Exclusive<Vec<SessionId>>, Error>>,
{
    let mut round = Round {
        batches: Vec::new(),
        end: RoundEnd::Complete,
    };
    let mut after = None;
    loop {
        match batch(after).await {
            Ok(Exclusive::Done(ids)) => {
                round.batches.push(ids.len());
                if ids.len() < limit as usize {
                    return round;
                }
                after = ids.last().copied();
            }
            Ok(Exclusive::Busy) => {
                round.end = RoundEnd::Busy;
                return round;
            }
            Err(err) => {
                round.end = RoundEnd::Failed(err);
                return round;
            }
        }
    }
}

impl SessionService {
    /// One round of idle revocation now (by the service's clock): revokes,
    /// for reason `idle`, every active session last seen before
    /// [`IdleRevocation::cutoff`] (never seen: created before it), in
    /// batches, store first, then this instance's cache. With
    /// `dry_run`, revokes nothing and answers what each batch would take.
    ///
    /// This instance's own pending last-seen marks are written first, so
    /// its own resolves count however recent.
    ///
    /// The [`BackgroundTasks`](super::BackgroundTasks) run a round every
    /// [`IdleRevocation::interval`] when the builder was given one; the
    /// CLI's `revoke-idle` runs one.
    pub async fn revoke_idle(&self, idle: &IdleRevocation, dry_run: bool) -> Round {
        let started = Instant::now();
        let round = match self.flush_last_seen().await {
            Ok(_) => self.revoke_idle_batches(idle, dry_run).await,
            // Without this instance's own marks, its recent resolves would look idle.
            Err(err) => Round {
                batches: Vec::new(),
                end: RoundEnd::Failed(err),
            },
        };
        if !dry_run {
            self.inner
                .idle_stats
                .count(&round, self.inner.clock.now(), started.elapsed());
        }
        round
    }

    /// The batches of [`revoke_idle`](Self::revoke_idle), once the marks are written.
    async fn revoke_idle_batches(&self, idle: &IdleRevocation, dry_run: bool) -> Round {
        let now = to_micros(self.inner.clock.now());
        let cutoff = idle.cutoff(now);
        let limit = idle.batch.max(1);
        walk(limit, |after| async move {
            if dry_run {
                return Ok(Exclusive::Done(
                    self.inner.store.idle_sessions(cutoff, after, limit).await?,
                ));
            }
            self.run_to_completion(move |inner| async move {
                let batch = inner
                    .store
                    .revoke_idle(cutoff, after, limit, now, RevocationReason::IDLE)
                    .await?;
                Ok(apply_revoked(&inner, batch))
            })
            .await
        })
        .await
    }

    /// One round of retention now (by the service's clock): applies
    /// [`Retention::action`] to every session revoked longer than
    /// [`Retention::after`] ago, in batches. Revoked sessions are in no
    /// cache, so only the store changes.
    pub async fn retain_revoked(&self, retention: &Retention) -> Round {
        let started = Instant::now();
        let before = to_micros(self.inner.clock.now()) - retention.after;
        let limit = retention.batch.max(1);
        let action = retention.action;
        let round = walk(limit, |after| async move {
            Ok(self
                .inner
                .store
                .purge_revoked(before, after, limit, action)
                .await?)
        })
        .await;
        self.inner
            .retention_stats
            .count(&round, self.inner.clock.now(), started.elapsed());
        round
    }

    /// One round of the "not before" sweep now: if the store's mark has
    /// not been swept through ([`NotBefore::unswept`]), revokes every
    /// active session it marks, in batches of 1,000, for
    /// reason `admin`, by whoever raised the mark, through the normal
    /// revocation path (store first, then this instance's cache; the
    /// change log carries each batch to the others), and once a batch comes
    /// back short records the mark as swept, so the next rounds do nothing
    /// until it is raised again. A failed or busy round records nothing:
    /// the next round starts over, and finds only what is still active.
    ///
    /// The [`BackgroundTasks`](super::BackgroundTasks) run a round at
    /// start, after each [`raise_not_before`](Self::raise_not_before), and
    /// every minute.
    ///
    /// [`NotBefore::unswept`]: crate::port::store::NotBefore::unswept
    pub async fn sweep_not_before(&self) -> Round {
        let started = Instant::now();
        let round = self.sweep_not_before_batches().await;
        self.inner
            .not_before_stats
            .count(&round, self.inner.clock.now(), started.elapsed());
        round
    }

    async fn sweep_not_before_batches(&self) -> Round {
        let stored = match self.inner.store.not_before().await {
            Ok(stored) => stored,
            Err(err) => {
                return Round {
                    batches: Vec::new(),
                    end: RoundEnd::Failed(err.into()),
                };
            }
        };
        let Some(mark) = stored.unswept() else {
            return Round {
                batches: Vec::new(),
                end: RoundEnd::Complete,
            };
        };
        let by = stored.raised_by;
        let now = to_micros(self.inner.clock.now());
        let mut round = walk(NOT_BEFORE_BATCH, |after| {
            let by = by.clone();
            self.run_to_completion(move |inner| async move {
                let batch = inner
                    .store
                    .revoke_marked(
                        mark,
                        after,
                        NOT_BEFORE_BATCH,
                        now,
                        RevocationReason::ADMIN,
                        by,
                    )
                    .await?;
                Ok(apply_revoked(&inner, batch))
            })
        })
        .await;
        if matches!(round.end, RoundEnd::Complete)
            && let Err(err) = self.inner.store.record_not_before_swept(mark).await
        {
            round.end = RoundEnd::Failed(err.into());
        }
        round
    }
}
