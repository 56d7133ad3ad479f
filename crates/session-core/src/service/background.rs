//! The background work a running service needs, under one owner: the task
//! that warms the cache and follows the change log, and the one that writes
//! last-seen marks. [`SessionService::start`] spawns them and returns the
//! [`BackgroundTasks`] guard. The only other tasks the service spawns are
//! its writes, each finishing on its own so a commit always reaches the
//! cache.

use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::{AbortHandle, JoinSet};

use super::{Error, Round, RoundEnd, SessionService};
use crate::config::{IdleRevocation, Retention};

/// One line per round: the counts, never a session.
/// How often the "not before" sweep looks for a mark not yet swept, when
/// no raise wakes it: a raise on another instance is swept here within this.
const NOT_BEFORE_SWEEP_INTERVAL: Duration = Duration::from_secs(60);

fn log_round(job: &'static str, verb: &'static str, round: &Round) {
    let sessions = round.total();
    let batches = round.batches.len();
    match &round.end {
        RoundEnd::Complete => {
            tracing::info!(
                job,
                sessions,
                batches,
                "{job} round done: {verb} {sessions}"
            );
        }
        RoundEnd::Busy => tracing::info!(
            job,
            sessions,
            batches,
            "{job} round stopped: another instance is running it"
        ),
        RoundEnd::Failed(err) => tracing::warn!(
            job,
            sessions,
            batches,
            error = %err,
            "{job} round failed; retrying at the next round"
        ),
    }
}

/// The service's background tasks, running until [`shutdown`](Self::shutdown)
/// or until this guard is dropped.
///
/// Dropping it aborts every task at once, as a dropped [`JoinSet`] does: no
/// task outlives its owner, so a test or a host that forgets to stop them
/// does not leave a follower reading the change log for ever. Last-seen
/// marks not yet written then stay queued in the service, written only by
/// an explicit [`flush_last_seen`](SessionService::flush_last_seen); call
/// [`shutdown`](Self::shutdown) to stop cleanly.
#[derive(Debug)]
#[must_use = "dropping the guard stops the service's background tasks at once"]
pub struct BackgroundTasks {
    service: SessionService,
    tasks: JoinSet<()>,
    /// The task that warms and follows the change log: aborted at shutdown,
    /// since what it is doing matters only while the service serves.
    cache: AbortHandle,
    /// With last-seen activity on, tells its task to stop between two
    /// flushes, so that shutdown never cuts a flush short.
    stop_last_seen: Option<oneshot::Sender<()>>,
    /// The maintenance jobs' loops: aborted at shutdown. Each batch runs on
    /// a task of its own, so an abort never parts a commit from its cache
    /// change.
    jobs: Vec<AbortHandle>,
}

impl BackgroundTasks {
    /// Stops the tasks, then writes the last-seen marks made since the last
    /// flush, once (a no-op with last-seen activity off). Returns how many
    /// sessions' times that flush wrote.
    ///
    /// A flush in progress is let finish, so bound the wait with a timeout
    /// if the store may hang: dropping this future drops the guard, which
    /// aborts whatever still runs.
    ///
    /// # Errors
    ///
    /// [`Error::Store`] if the final flush failed: its marks stay queued,
    /// written only by another
    /// [`flush_last_seen`](SessionService::flush_last_seen).
    pub async fn shutdown(mut self) -> Result<usize, Error> {
        self.cache.abort();
        for job in &self.jobs {
            job.abort();
        }
        if let Some(stop) = self.stop_last_seen.take() {
            // The task has ended already if the send fails.
            let _ = stop.send(());
        }
        while let Some(ended) = self.tasks.join_next().await {
            if let Err(err) = ended
                && err.is_panic()
            {
                tracing::error!("a session service background task panicked before shutdown");
            }
        }
        self.service.flush_last_seen().await
    }
}

impl SessionService {
    /// Starts the background work this service's configuration needs, on
    /// the current Tokio runtime, and returns the guard that owns it. Call
    /// it once, before serving:
    ///
    /// - always, a task that warms the cache (retrying failures with
    ///   backoff) and, with a [change log](super::SessionServiceBuilder::change_log),
    ///   then follows it for ever, so the cache stays complete;
    /// - with [last-seen activity](super::SessionServiceBuilder::last_seen)
    ///   on, a task that moves the current minute to the clock's every
    ///   second and writes the marks every flush interval (a failed flush is
    ///   logged at `warn` and retried at the next).
    ///
    /// Keep the guard for as long as the service serves, and end with
    /// [`BackgroundTasks::shutdown`].
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime.
    pub fn start(&self) -> BackgroundTasks {
        let mut tasks = JoinSet::new();
        let cache = tasks.spawn({
            let service = self.clone();
            async move { service.keep_cache_complete().await }
        });
        let stop_last_seen = self.inner.last_seen.as_ref().map(|_| {
            let (stop, stopped) = oneshot::channel();
            tasks.spawn({
                let service = self.clone();
                async move { service.keep_last_seen(stopped).await }
            });
            stop
        });
        let mut jobs = Vec::new();
        if let Some(idle) = self.inner.idle_revocation {
            let service = self.clone();
            jobs.push(tasks.spawn(async move { service.keep_revoking_idle(idle).await }));
        }
        if let Some(retention) = self.inner.retention {
            let service = self.clone();
            jobs.push(tasks.spawn(async move { service.keep_retaining(retention).await }));
        }
        jobs.push(tasks.spawn({
            let service = self.clone();
            async move { service.keep_sweeping_not_before().await }
        }));
        BackgroundTasks {
            service: self.clone(),
            tasks,
            cache,
            stop_last_seen,
            jobs,
        }
    }

    /// Runs a round of idle revocation at once and then every interval,
    /// logging each round's counts at `info` (a failure at `warn`).
    async fn keep_revoking_idle(&self, idle: IdleRevocation) {
        let mut tick = tokio::time::interval(idle.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let round = self.revoke_idle(&idle, false).await;
            log_round("idle revocation", "revoked", &round);
        }
    }

    /// Runs a round of the "not before" sweep at once, after each raise
    /// and every [`NOT_BEFORE_SWEEP_INTERVAL`]; logs the rounds that
    /// revoked something or failed.
    async fn keep_sweeping_not_before(&self) {
        loop {
            let round = self.sweep_not_before().await;
            if round.total() > 0 || !matches!(round.end, RoundEnd::Complete) {
                log_round("not-before sweep", "revoked", &round);
            }
            tokio::select! {
                () = self.inner.sweep_wanted.notified() => {}
                () = tokio::time::sleep(NOT_BEFORE_SWEEP_INTERVAL) => {}
            }
        }
    }

    /// Runs a round of retention at once and then every interval.
    async fn keep_retaining(&self, retention: Retention) {
        let mut tick = tokio::time::interval(retention.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let round = self.retain_revoked(&retention).await;
            log_round("retention", retention.action.as_str(), &round);
        }
    }

    /// With last-seen activity on, runs until `stop` fires (or its sender is
    /// gone): moves the current minute to the clock's every second and
    /// flushes the marks every flush interval. Returns at once with it off.
    async fn keep_last_seen(&self, mut stop: oneshot::Receiver<()>) {
        let Some((marks, flush_interval)) = &self.inner.last_seen else {
            return;
        };
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_flush = tokio::time::Instant::now();
        loop {
            tokio::select! {
                biased;
                _ = &mut stop => return,
                _ = tick.tick() => {}
            }
            marks.set_now(self.inner.clock.now());
            if last_flush.elapsed() < *flush_interval {
                continue;
            }
            last_flush = tokio::time::Instant::now();
            if let Err(err) = self.flush_last_seen().await {
                tracing::warn!(error = %err, "could not record when sessions were last seen; retrying at the next flush");
            }
        }
    }
}
