//! Following a shared store's change log: load everything once, then read
//! the log from a cursor: at once when a wake-up hints that it grew or a
//! miss asks (see [`miss_path`](super::miss_path)), and at a fixed interval
//! otherwise.
//!
//! The cursor survives every failure of the store: a read that fails is
//! retried from the same cursor, so a lost connection costs no reload, and a
//! read returns only entries the cursor has not been given, however long
//! any other transaction stays open. Only a log that no longer covers the
//! cursor (pruned past it, emptied, or of another epoch) or asks for it
//! ([`Change::Reload`]) makes the follower load everything again. Wake-ups
//! are hints and nothing more: the follower never applies anything they
//! carry, so a forged one costs at most one extra read.
//!
//! Reads never wait out a fixed gap: a hint that arrives while a read is in
//! flight is served by the next read, started as soon as that one ends, or
//! after a pause that grows with what that read brought ([`PAUSE_PER_ENTRY`]
//! an entry, at most [`LONGEST_PAUSE`]; none below the timer's millisecond).
//! Light traffic's reads bring an entry or two, so the next starts at once,
//! however loaded the machine; at
//! saturation a woken follower would otherwise read back to back and take
//! the writers' CPU, and with the pause its reads come less often and each
//! brings more entries. Reads misses start are spaced by the miss path
//! instead (from each other only), and polls not at all.
//!
//! Staleness is measured, not assumed: a read that reaches the end of the
//! log proves every change committed before it started is applied, so the
//! time since the start of the last such read bounds what the cache may
//! still be missing. Readiness fails while it exceeds the bound.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::Notify;

use super::miss_path::MISS_READ_SPACING;
use super::{Error, Inner, SessionService, lock};
use crate::port::change_log::{Change, ChangeLog, LogCursor, LogRead};
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

/// Told of each hint the follower's wake-ups give.
pub(super) type OnHint = Arc<dyn Fn() + Send + Sync>;

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
/// How often this instance asks the log to drop entries past its retention.
const PRUNE_EVERY: Duration = Duration::from_secs(600);
/// How long a read woken by a wake-up waits, per entry the read before it
/// applied: an entry or two (light traffic) cost a fraction of a
/// millisecond; at 4,000 entries a second and more, the pause keeps up with
/// the entries it lets gather and reaches [`LONGEST_PAUSE`].
const PAUSE_PER_ENTRY: Duration = Duration::from_micros(250);
/// The longest pause before a woken read: at saturation a follower reads
/// about 20 times a second, a revocation reaches it within about this plus
/// a read, far inside the staleness bound.
const LONGEST_PAUSE: Duration = Duration::from_millis(50);
/// tokio's timer counts whole milliseconds and rounds every deadline up to
/// the next one: a sleep of 250 µs, or until a moment just past, waits
/// about a millisecond (1.1 ms at p50, measured on a multi-threaded
/// runtime). So a pause shorter than this is no pause.
const TIMER_RESOLUTION: Duration = Duration::from_millis(1);

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
        let inner = &self.inner;
        let mut cursor: Option<LogCursor> = None;
        let mut retry = FIRST_RETRY;
        let mut pruned_at = inner.clock.monotonic();
        // When the last read that misses started began: only those are
        // spaced, so a miss right after a woken read waits for no slot.
        let mut miss_read_at: Option<tokio::time::Instant> = None;
        loop {
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
                    Ok(Some(applied)) => Ok(applied),
                    Ok(None) => {
                        tracing::warn!(
                            "the change log no longer covers this instance's cursor; \
                             loading every session again"
                        );
                        cursor = None;
                        continue;
                    }
                    Err(err) => Err(err),
                },
            };
            let applied = match step {
                Ok(applied) => applied,
                Err(err) => {
                    inner.stats.read_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %err, retry_in = ?retry, "reading the change log failed; retrying from the same cursor");
                    tokio::time::sleep(retry).await;
                    retry = (retry * 2).min(LAST_RETRY);
                    continue;
                }
            };
            retry = FIRST_RETRY;
            let pause = PAUSE_PER_ENTRY
                .saturating_mul(u32::try_from(applied).unwrap_or(u32::MAX))
                .min(LONGEST_PAUSE);
            // Light traffic's reads (up to three entries) read again at once.
            let pause = if pause < TIMER_RESOLUTION {
                Duration::ZERO
            } else {
                pause
            };
            let woken_from = tokio::time::Instant::now() + pause;
            if inner.clock.monotonic().duration_since(pruned_at) >= PRUNE_EVERY {
                pruned_at = inner.clock.monotonic();
                match log.prune().await {
                    Ok(0) => {}
                    Ok(pruned) => tracing::info!(pruned, "pruned the change log"),
                    Err(err) => tracing::warn!(error = %err, "pruning the change log failed"),
                }
            }
            // A hint that came while reading is kept by `Notify` (one
            // permit), so the next read starts as soon as the pause ends:
            // coalesced into the read in flight, never held back by a fixed
            // gap. A hint taken before another branch wins is not lost: that
            // branch's read starts after it.
            tokio::select! {
                () = async {
                    hint.notified().await;
                    wait_until(woken_from).await;
                } => {}
                () = async {
                    inner.catch_ups.wanted().await;
                    if let Some(at) = miss_read_at {
                        wait_until(at + MISS_READ_SPACING).await;
                    }
                } => miss_read_at = Some(tokio::time::Instant::now()),
                () = tokio::time::sleep(inner.pacing.poll_interval) => {}
            }
        }
    }

    /// Loads every active session and returns the cursor to follow from.
    async fn load_everything(&self, log: &dyn ChangeLog) -> Result<LogCursor, Error> {
        // Creates in flight are left to the load and the log from here on.
        self.inner.supersede_pending_inserts();
        // Before the warm's first read: whatever it misses is after this.
        let head = log.head().await?;
        self.warm().await?;
        Ok(head)
    }

    /// Reads the change log from the cursor to its end and applies what it
    /// finds; returns how many sessions its entries named. `Ok(None)` when
    /// the change log no longer covers the cursor.
    #[tracing::instrument(name = "session.change_log.poll", skip_all)]
    async fn catch_up(
        &self,
        log: &dyn ChangeLog,
        cursor: &mut LogCursor,
    ) -> Result<Option<usize>, Error> {
        let inner = &self.inner;
        let mut applied = 0;
        let started = inner.clock.monotonic();
        let number = inner.catch_ups.start();
        loop {
            inner.stats.reads.fetch_add(1, Ordering::Relaxed);
            let page = match log.read(cursor, PAGE).await? {
                LogRead::Page(page) => page,
                LogRead::Expired => return Ok(None),
            };
            inner.reject(page.rejected);
            inner.reconcile_not_before(page.not_before).await;
            for change in page.entries {
                if change == Change::Reload {
                    tracing::warn!("the store asked every cache to load everything again");
                    self.warm().await?;
                } else {
                    applied += match &change {
                        Change::Revoked(hashes) => hashes.len(),
                        _ => 1,
                    };
                    inner.apply_change(change);
                }
            }
            *cursor = page.next;
            if !page.more {
                break;
            }
        }
        *lock(&inner.caught_up_at) = Some(started);
        inner.catch_ups.finish(number);
        Ok(Some(applied))
    }
}

/// Waits until `deadline` if it is still ahead: tokio rounds a deadline up
/// to its next millisecond, so even `sleep_until` of a moment already past
/// would wait up to [`TIMER_RESOLUTION`].
async fn wait_until(deadline: tokio::time::Instant) {
    if deadline > tokio::time::Instant::now() {
        tokio::time::sleep_until(deadline).await;
    }
}

/// Turns the log's wake-ups into `hint`, listening again when the source is
/// lost. Polling goes on meanwhile, so a lost source only slows propagation.
async fn listen(inner: &Arc<Inner>, log: &dyn ChangeLog, hint: &Notify) -> Infallible {
    let mut retry = FIRST_RETRY;
    // Whether the last attempt failed: a store where wake-ups cannot work
    // (behind a transaction pooler) fails every attempt, and says so once.
    let mut failing = false;
    loop {
        match log.wake_ups().await {
            Ok(mut wake_ups) => {
                retry = FIRST_RETRY;
                failing = false;
                let delivers = wake_ups.delivers();
                inner.stats.listening.store(delivers, Ordering::Relaxed);
                if delivers {
                    tracing::info!("listening for the change log's wake-ups");
                } else {
                    tracing::info!("wake-ups are off; polling the change log");
                }
                // Hints sent while not listening were lost: read once now.
                inner.hint(hint);
                let err = loop {
                    match wake_ups.next().await {
                        Ok(()) => {
                            inner.stats.wake_ups.fetch_add(1, Ordering::Relaxed);
                            inner.hint(hint);
                        }
                        Err(err) => break err,
                    }
                };
                inner.stats.listening.store(false, Ordering::Relaxed);
                tracing::warn!(error = %err, "lost the change log's wake-ups; polling meanwhile");
            }
            Err(err) => {
                inner.stats.listening.store(false, Ordering::Relaxed);
                if failing {
                    tracing::debug!(error = %err, retry_in = ?retry, "still cannot listen for the change log's wake-ups; polling meanwhile");
                } else {
                    tracing::warn!(error = %err, retry_in = ?retry, "cannot listen for the change log's wake-ups; polling meanwhile");
                }
                failing = true;
            }
        }
        tokio::time::sleep(retry).await;
        retry = (retry * 2).min(LAST_SLOW_RETRY);
    }
}

impl Inner {
    /// Wakes the follower, and whoever else asked to learn of hints.
    fn hint(&self, follower: &Notify) {
        follower.notify_one();
        if let Some(on_hint) = &self.on_hint {
            on_hint();
        }
    }

    pub(super) fn change_log_lag(&self) -> ChangeLogLag {
        let caught_up_at = *lock(&self.caught_up_at);
        ChangeLogLag {
            lag: caught_up_at.map(|at| self.clock.monotonic().saturating_duration_since(at)),
            bound: self.pacing.max_staleness,
        }
    }
}
