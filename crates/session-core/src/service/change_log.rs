//! Following a shared store's change log: load everything once, then read
//! the log from a cursor, early when a wake-up hints that it grew and at a
//! fixed interval otherwise.
//!
//! The cursor survives every failure of the store: a read that fails is
//! retried from the same position, so a lost connection costs no reload.
//! Only a log that no longer covers the cursor (pruned past it, or emptied)
//! or asks for it ([`Change::Reload`]) makes the follower load everything
//! again. Wake-ups are hints and nothing more: the follower never applies
//! anything they carry, so a forged one costs at most one extra read.
//!
//! Staleness is measured, not assumed: a read that reaches the end of the
//! log proves every change committed before it started is applied, so the
//! time since the start of the last such read bounds what the cache may
//! still be missing. Readiness fails while it exceeds the bound.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::Notify;

use super::{Error, Inner, SessionService, lock};
use crate::port::change_log::{Change, ChangeLog, LogPosition, LogRead};
use crate::status::ChangeLogLag;

/// How the follower paces itself.
#[derive(Debug, Clone, Copy)]
pub(super) struct Pacing {
    pub(super) max_staleness: Duration,
    pub(super) poll_interval: Duration,
}

impl Default for Pacing {
    fn default() -> Self {
        Self {
            max_staleness: Duration::from_secs(2),
            poll_interval: Duration::from_millis(500),
        }
    }
}

/// Entries read per query.
const PAGE: u32 = 1_000;
/// The first wait after a failed read or a lost wake-up source.
const FIRST_RETRY: Duration = Duration::from_millis(250);
/// The longest wait between reads that fail: a read is one cheap query, and
/// a long wait would only delay catching up once the database is back.
const LAST_RETRY: Duration = Duration::from_secs(1);
/// The longest wait between attempts to warm without a change log, and
/// between attempts to listen for wake-ups (polling goes on meanwhile).
const LAST_SLOW_RETRY: Duration = Duration::from_secs(30);
/// The least time between the starts of two reads woken by hints: under a
/// stream of writes every commit wakes every reader, and one read a little
/// later finds them all. Each read is a query on the shared database: at
/// 5 ms apart, two followers cost writers a quarter of their throughput at
/// 16 writers (docs/BENCHMARKS.md).
const MIN_READ_GAP: Duration = Duration::from_millis(20);
/// How often this instance asks the log to drop entries past its retention.
const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// Where the follower is in the change log.
struct Cursor {
    /// Every entry up to here is applied, and none can appear there later.
    settled: LogPosition,
    /// Entries after `settled` already applied: committed, but read while an
    /// earlier position was still open, so they will be read again.
    applied_beyond: BTreeSet<LogPosition>,
}

impl SessionService {
    /// Keeps the cache complete, for as long as the returned future runs
    /// ([`BackgroundTasks`](super::BackgroundTasks) runs it).
    ///
    /// Without a change log it warms once, retrying failures with backoff,
    /// and returns. With one it loads every active session, then follows the
    /// change log from the position it loaded at, for ever: see the module
    /// docs for the rules.
    pub(super) async fn keep_cache_complete(&self) {
        let Some(log) = self.inner.change_log.clone() else {
            let mut retry = FIRST_RETRY;
            while let Err(err) = self.warm().await {
                tracing::error!(error = %err, retry_in = ?retry, "warming the session cache failed");
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(LAST_SLOW_RETRY);
            }
            return;
        };
        let hint = Notify::new();
        tokio::select! {
            never = listen(&self.inner, log.as_ref(), &hint) => match never {},
            never = self.follow(log.as_ref(), &hint) => match never {},
        }
    }

    async fn follow(&self, log: &dyn ChangeLog, hint: &Notify) -> Infallible {
        let mut cursor: Option<Cursor> = None;
        let mut retry = FIRST_RETRY;
        let mut pruned_at = self.inner.clock.monotonic();
        loop {
            let read_at = tokio::time::Instant::now();
            let step = match cursor.as_mut() {
                None => match self.load_everything(log).await {
                    // Read the log at once: the load itself took time.
                    Ok(loaded) => {
                        cursor = Some(loaded);
                        retry = FIRST_RETRY;
                        continue;
                    }
                    Err(err) => Err(err),
                },
                Some(at) => match self.catch_up(log, at).await {
                    Ok(true) => Ok(()),
                    Ok(false) => {
                        tracing::warn!(
                            "the change log no longer covers this instance's position; \
                             loading every session again"
                        );
                        cursor = None;
                        continue;
                    }
                    Err(err) => Err(err),
                },
            };
            match step {
                Ok(()) => retry = FIRST_RETRY,
                Err(err) => {
                    self.inner
                        .stats
                        .read_failures
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %err, retry_in = ?retry, "reading the change log failed; retrying from the same position");
                    tokio::time::sleep(retry).await;
                    retry = (retry * 2).min(LAST_RETRY);
                    continue;
                }
            }
            if self.inner.clock.monotonic().duration_since(pruned_at) >= PRUNE_EVERY {
                pruned_at = self.inner.clock.monotonic();
                match log.prune().await {
                    Ok(0) => {}
                    Ok(pruned) => tracing::info!(pruned, "pruned the change log"),
                    Err(err) => tracing::warn!(error = %err, "pruning the change log failed"),
                }
            }
            tokio::select! {
                () = hint.notified() => {
                    tokio::time::sleep_until(read_at + MIN_READ_GAP).await;
                }
                () = tokio::time::sleep(self.inner.pacing.poll_interval) => {}
            }
        }
    }

    /// Loads every active session and returns the position to follow from.
    async fn load_everything(&self, log: &dyn ChangeLog) -> Result<Cursor, Error> {
        // Before the warm's first read: whatever it misses is after this.
        let head = log.head().await?;
        self.warm().await?;
        Ok(Cursor {
            settled: head,
            applied_beyond: BTreeSet::new(),
        })
    }

    /// Reads the change log from the cursor to its end and applies what it
    /// finds. `Ok(false)` when the change log no longer covers the cursor.
    #[tracing::instrument(name = "session.change_log.poll", skip_all)]
    async fn catch_up(&self, log: &dyn ChangeLog, cursor: &mut Cursor) -> Result<bool, Error> {
        let inner = &self.inner;
        let started = inner.clock.monotonic();
        let mut from = cursor.settled;
        loop {
            let page = match log.read(from, PAGE).await? {
                LogRead::Page(page) => page,
                LogRead::Expired => return Ok(false),
            };
            let fresh = |position: &LogPosition, cursor: &Cursor| {
                *position > cursor.settled && !cursor.applied_beyond.contains(position)
            };
            let mut rejected = Vec::new();
            for (position, row) in page.rejected {
                if fresh(&position, cursor) {
                    cursor.applied_beyond.insert(position);
                    rejected.push(row);
                }
            }
            inner.reject(rejected);
            for entry in page.entries {
                if !fresh(&entry.position, cursor) {
                    continue;
                }
                if entry.change == Change::Reload {
                    tracing::warn!("the store asked every cache to load everything again");
                    self.warm().await?;
                } else {
                    inner.apply_change(entry.change);
                }
                cursor.applied_beyond.insert(entry.position);
            }
            // A page read from past an open position says nothing of what
            // may still appear before it.
            if from == cursor.settled {
                cursor.settled = page.settled.max(cursor.settled);
                cursor.applied_beyond = cursor.applied_beyond.split_off(&cursor.settled);
                cursor.applied_beyond.remove(&cursor.settled);
            }
            if !page.more || page.read_to <= from {
                break;
            }
            from = page.read_to;
        }
        *lock(&inner.caught_up_at) = Some(started);
        Ok(true)
    }
}

/// Turns the log's wake-ups into `hint`, listening again when the source is
/// lost. Polling goes on meanwhile, so a lost source only slows propagation.
async fn listen(inner: &Arc<Inner>, log: &dyn ChangeLog, hint: &Notify) -> Infallible {
    let mut retry = FIRST_RETRY;
    loop {
        match log.wake_ups().await {
            Ok(mut wake_ups) => {
                retry = FIRST_RETRY;
                // Hints sent while not listening were lost: read once now.
                hint.notify_one();
                let err = loop {
                    match wake_ups.next().await {
                        Ok(()) => {
                            inner.stats.wake_ups.fetch_add(1, Ordering::Relaxed);
                            hint.notify_one();
                        }
                        Err(err) => break err,
                    }
                };
                tracing::warn!(error = %err, "lost the change log's wake-ups; polling meanwhile");
            }
            Err(err) => {
                tracing::warn!(error = %err, retry_in = ?retry, "cannot listen for the change log's wake-ups; polling meanwhile");
            }
        }
        tokio::time::sleep(retry).await;
        retry = (retry * 2).min(LAST_SLOW_RETRY);
    }
}

impl Inner {
    pub(super) fn change_log_lag(&self) -> ChangeLogLag {
        let caught_up_at = *lock(&self.caught_up_at);
        ChangeLogLag {
            lag: caught_up_at.map(|at| self.clock.monotonic().saturating_duration_since(at)),
            bound: self.pacing.max_staleness,
        }
    }
}
