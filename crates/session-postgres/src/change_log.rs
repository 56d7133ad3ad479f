//! The change log: how one process learns of the session writes every other
//! process commits to the same database.
//!
//! Triggers on `session.sessions` (migration `2026-11-29-000000_change_log`)
//! write each change to `session.changes` in the writing transaction: the
//! token hash and what happened, stamped with the transaction's id (xid8).
//! Whatever writes the table is logged (another process, another version of
//! this crate, an operator's `UPDATE`), and a rolled-back write never is.
//!
//! A reader takes as final only entries below the oldest transaction still
//! running, read in the same statement as the entries; see
//! [`PgSessionStore::read`](session_core::port::change_log::ChangeLog::read). Creations are
//! joined to the sessions table in that statement, so what enters a cache is
//! the stored row as it is at the read, checked by the domain's rules.
//!
//! `NOTIFY session_changes` (sent by the same triggers, empty) only wakes
//! readers early. PostgreSQL has no privileges on NOTIFY, so a notification
//! may come from any role: its payload is never read, and a burst of them
//! costs at most one read.

use std::future::poll_fn;
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use async_trait::async_trait;
use diesel::ConnectionError;
use diesel::sql_types::{BigInt, Bytea, Inet, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel::{QueryableByName, sql_query};
use diesel_async::{AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use futures_core::Stream;
use ipnet::IpNet;
use session_core::port::change_log::{
    Change, ChangeLog, LogEntry, LogPage, LogPosition, LogRead, WakeUps,
};
use session_core::port::store::{BoxError, InvalidRow, RowId, StoreError};
use session_core::token::TokenHash;
use tokio::sync::Notify;
use tokio::time::Instant;
use uuid::Uuid;

use crate::pool::{Connection, Pool};
use crate::raw::RawInstant;
use crate::store::{PgSessionStore, SESSIONS_TABLE, SessionRow};

/// The log's table, as errors name it.
const CHANGES_TABLE: &str = "session.changes";

/// The channel the change log's triggers notify, with an empty payload, so
/// readers wake at once rather than at their next poll. Anything may notify
/// on it; readers treat each notification as a hint to read the log, never
/// as data.
pub const CHANGES_CHANNEL: &str = "session_changes";

/// Wakes other readers after this store's writes commit: one `NOTIFY` on
/// [`CHANGES_CHANNEL`], from a statement of its own on a pooled connection,
/// never from the writing transaction (a notifying commit takes a lock
/// PostgreSQL holds for the whole server across the commit's WAL flush).
/// Coalesced: writes that finish while one is being sent, or within
/// [`MIN_WAKE_GAP`] after it, are announced by the next one alone. Best
/// effort: a wake-up that cannot be sent costs readers only their poll
/// interval.
pub(crate) struct Waker {
    pending: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

/// The least time between two wake-ups one store sends: at most 50 a
/// second, however many writes commit. Every wake-up costs every follower a
/// read; more often would cost writers throughput for no propagation a
/// reader could tell from this (docs/BENCHMARKS.md).
const MIN_WAKE_GAP: Duration = Duration::from_millis(20);

impl Waker {
    /// Starts the task that sends wake-ups on connections from `pool`, each
    /// bounded by `limit`. It ends when the waker is dropped.
    pub(crate) fn start(pool: Pool, limit: Duration) -> Self {
        let pending = Arc::new(Notify::new());
        let task = tokio::spawn({
            let pending = Arc::clone(&pending);
            async move {
                loop {
                    pending.notified().await;
                    if let Err(err) = notify(&pool, limit).await {
                        tracing::debug!(error = %err, "could not wake other readers of the change log");
                    }
                    tokio::time::sleep(MIN_WAKE_GAP).await;
                }
            }
        });
        Self { pending, task }
    }

    /// Asks for a wake-up after a write committed; returns at once.
    pub(crate) fn wake(&self) {
        self.pending.notify_one();
    }
}

impl Drop for Waker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn notify(pool: &Pool, limit: Duration) -> Result<(), BoxError> {
    let mut connection = tokio::time::timeout(limit, pool.get()).await??;
    let sent = tokio::time::timeout(
        limit,
        connection.batch_execute(&format!("NOTIFY {CHANGES_CHANNEL}")),
    )
    .await;
    match sent {
        Ok(result) => Ok(result?),
        Err(elapsed) => {
            // Perhaps mid-reply: never hand it to other work.
            drop(Connection::take(connection));
            Err(elapsed.into())
        }
    }
}

/// Why the wake-up listener failed.
#[derive(Debug, thiserror::Error)]
enum ListenError {
    #[error("cannot open the wake-up connection: {0}")]
    Connect(#[source] ConnectionError),
    #[error("cannot listen for wake-ups: {0}")]
    Listen(#[source] diesel::result::Error),
    #[error("the wake-up connection was not listening within {0:?}")]
    TimedOut(Duration),
    #[error("the wake-up connection was lost: {0}")]
    Lost(#[source] diesel::result::Error),
    #[error("the wake-up connection was closed")]
    Closed,
    #[error("the wake-up connection did not answer a check within {0:?}")]
    Silent(Duration),
    #[error("the wake-up listener has ended; listen again")]
    Ended,
}

/// A read of the log that did not finish within the checkout timeout.
#[derive(Debug, thiserror::Error)]
#[error("reading the change log did not finish within {0:?}; the connection was closed")]
struct ReadTimedOut(Duration);

fn unavailable(err: ListenError) -> StoreError {
    StoreError::Unavailable(Box::new(err))
}

/// The oldest transaction still running, as a log position: everything
/// before it is final; and the epoch it belongs to.
#[derive(QueryableByName)]
struct Horizon {
    #[diesel(sql_type = BigInt)]
    epoch: i64,
    #[diesel(sql_type = BigInt)]
    xmin: i64,
}

/// The log's epoch: one server run on one timeline of one cluster. A
/// transaction id is unique only within it: after a crash, the server may
/// hand out again ids of transactions that rolled back without their abort
/// reaching the disk; after a promotion, ids the old primary used but never
/// streamed; another cluster (a restore) has ids of its own. A reader's
/// cursor may have passed any of those, so a position of another epoch
/// expires. Any role may call these functions. A macro, so the statements
/// that use it stay string literals.
macro_rules! epoch_sql {
    () => {
        "hashtextextended(
    (SELECT system_identifier::text FROM pg_control_system())
    || '/' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)
    || '/' || pg_postmaster_start_time()::text,
    0)"
    };
}

/// One row of a log read: the horizon, and (unless the log had nothing after
/// the cursor) one entry, with the session row for a creation. Column for
/// column as [`READ_LOG`] selects it; public only to the `fuzzing` feature.
#[derive(QueryableByName)]
#[cfg_attr(
    not(feature = "fuzzing"),
    expect(unreachable_pub, reason = "public only to the fuzz targets")
)]
pub struct LogRow {
    /// An id of the database's history (`epoch_sql!`), the same in every row.
    #[diesel(sql_type = BigInt)]
    pub epoch: i64,
    /// The oldest transaction still running, the same in every row.
    #[diesel(sql_type = BigInt)]
    pub xmin: i64,
    /// The newest transaction whose entries were pruned, the same in every row.
    #[diesel(sql_type = BigInt)]
    pub pruned_through: i64,
    /// The entry's transaction; `None` in the one row of an empty read.
    #[diesel(sql_type = Nullable<BigInt>)]
    pub xid: Option<i64>,
    /// The entry's place in its transaction.
    #[diesel(sql_type = Nullable<BigInt>)]
    pub seq: Option<i64>,
    /// What happened: `c` created, `r` revoked, anything else reload.
    #[diesel(sql_type = Nullable<Text>)]
    pub kind: Option<String>,
    /// The hash of the token the entry is about.
    #[diesel(sql_type = Nullable<Bytea>)]
    pub change_hash: Option<Vec<u8>>,
    /// The session row a creation entry joins to, column by column.
    #[diesel(sql_type = Nullable<SqlUuid>)]
    pub id: Option<Uuid>,
    /// `sessions.account_id`.
    #[diesel(sql_type = Nullable<SqlUuid>)]
    pub account_id: Option<Uuid>,
    /// `sessions.token_hash`.
    #[diesel(sql_type = Nullable<Bytea>)]
    pub token_hash: Option<Vec<u8>>,
    /// `sessions.created_at`, raw: the domain checks it.
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub created_at: Option<RawInstant>,
    /// `sessions.revoked_at`, raw.
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub revoked_at: Option<RawInstant>,
    /// `sessions.user_agent`.
    #[diesel(sql_type = Nullable<Text>)]
    pub user_agent: Option<String>,
    /// `sessions.ip`.
    #[diesel(sql_type = Nullable<Inet>)]
    pub ip: Option<IpNet>,
    /// `sessions.label`.
    #[diesel(sql_type = Nullable<Text>)]
    pub label: Option<String>,
}

/// The entries after a cursor with the horizon, in one statement, so both
/// come from one snapshot. xid8 has no binary form diesel knows; it travels
/// as text through bigint (transaction ids stay far below 2^63).
const READ_LOG: &str = concat!(
    "WITH horizon AS MATERIALIZED (
    SELECT pg_snapshot_xmin(pg_current_snapshot()) AS xmin,
           (SELECT pruned_through FROM session.change_log_state) AS pruned_through,
           ",
    epoch_sql!(),
    " AS epoch
)
SELECT h.epoch, h.xmin::text::bigint AS xmin,
       h.pruned_through::text::bigint AS pruned_through,
       c.xid::text::bigint AS xid, c.seq, c.kind::text AS kind, c.token_hash AS change_hash,
       s.id, s.account_id, s.token_hash, s.created_at, s.revoked_at, s.user_agent, s.ip, s.label
FROM horizon h
LEFT JOIN LATERAL (
    SELECT xid, seq, kind, token_hash FROM session.changes
    WHERE (xid, seq) > ($1::text::xid8, $2)
    ORDER BY xid, seq
    LIMIT $3
) c ON true
LEFT JOIN session.sessions s ON c.kind = 'c' AND s.token_hash = c.token_hash
ORDER BY c.xid, c.seq"
);

/// The head: the oldest running transaction and the epoch.
const HEAD: &str = concat!(
    "SELECT ",
    epoch_sql!(),
    " AS epoch, pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS xmin"
);

/// Deletes a batch of entries older than the retention window and moves the
/// pruned bound past them, in one transaction, so a reader sees either the
/// entries or the bound. Writers never wait for it: it touches only old rows
/// and the one-row state table, which no writer locks.
const PRUNE_LOG: &str = "\
WITH gone AS (
    DELETE FROM session.changes
    WHERE (xid, seq) IN (
        SELECT xid, seq FROM session.changes
        WHERE recorded_at < now() - make_interval(secs => $1)
        ORDER BY xid, seq
        LIMIT $2
    )
    RETURNING xid
), top AS (
    SELECT xid FROM gone ORDER BY xid DESC LIMIT 1
), moved AS (
    UPDATE session.change_log_state
    SET pruned_through = greatest(pruned_through, (SELECT xid FROM top))
    WHERE EXISTS (SELECT 1 FROM top)
)
SELECT count(*) AS pruned FROM gone";

#[derive(QueryableByName)]
struct Pruned {
    #[diesel(sql_type = BigInt)]
    pruned: i64,
}

/// Entries deleted per prune statement, so no one statement runs long.
const PRUNE_BATCH: i64 = 10_000;

fn position(epoch: i64, xid: i64, seq: i64) -> LogPosition {
    LogPosition::new(
        epoch.cast_unsigned(),
        xid.unsigned_abs(),
        seq.unsigned_abs(),
    )
}

fn as_bigint(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[async_trait]
impl ChangeLog for PgSessionStore {
    #[tracing::instrument(name = "SELECT session.changes", skip_all, fields(
        otel.kind = "client", db.system.name = "postgresql",
        db.operation.name = "SELECT", db.collection.name = "session.changes"))]
    async fn head(&self) -> Result<LogPosition, StoreError> {
        let mut connection = self.connection().await?;
        let result = sql_query(HEAD).get_result::<Horizon>(&mut connection).await;
        let horizon = self
            .finish("read the change log's head", result, &mut connection)
            .await?;
        // Seq numbers start at 1: (xmin, 0) is before every entry of xmin.
        Ok(position(horizon.epoch, horizon.xmin, 0))
    }

    /// One statement: the entries after `after`, the oldest running
    /// transaction (xmin) and the pruned bound, all from one snapshot.
    /// Entries below xmin are final; those at or above it are committed but
    /// may yet get earlier neighbours, so `settled` stops before them.
    #[tracing::instrument(name = "SELECT session.changes", skip_all, fields(
        otel.kind = "client", db.system.name = "postgresql",
        db.operation.name = "SELECT", db.collection.name = "session.changes"))]
    async fn read(&self, after: LogPosition, limit: u32) -> Result<LogRead, StoreError> {
        let limit = limit.max(1);
        let mut connection = self.connection().await?;
        let query = sql_query(READ_LOG)
            .bind::<BigInt, _>(as_bigint(after.major()))
            .bind::<BigInt, _>(as_bigint(after.minor()))
            .bind::<BigInt, _>(i64::from(limit))
            .load::<LogRow>(&mut connection);
        // A read takes milliseconds; one that hangs (a peer gone silent
        // mid-reply) would stall the follower until TCP gives up, so it is
        // bounded, and its connection, perhaps mid-reply, is closed.
        let Ok(result) = tokio::time::timeout(self.checkout_timeout, query).await else {
            drop(Connection::take(connection));
            return Err(StoreError::Unavailable(Box::new(ReadTimedOut(
                self.checkout_timeout,
            ))));
        };
        let rows = self
            .finish("read the change log", result, &mut connection)
            .await?;
        drop(connection);
        Ok(page(after, limit, rows))
    }

    /// A connection listening on [`CHANGES_CHANNEL`]; with
    /// [`PgConfig::wake_ups`](crate::PgConfig::wake_ups) off, none, and
    /// hints that never come.
    async fn wake_ups(&self) -> Result<Box<dyn WakeUps>, StoreError> {
        if !self.wake_ups {
            return Ok(Box::new(NoWakeUps));
        }
        let listening = async {
            let mut connection = self
                .connector
                .connect()
                .await
                .map_err(ListenError::Connect)?;
            connection
                .batch_execute(&format!("LISTEN {CHANGES_CHANNEL}"))
                .await
                .map_err(ListenError::Listen)?;
            Ok(connection)
        };
        let limit = self.connector.limit();
        let connection = match tokio::time::timeout(limit, listening).await {
            Ok(listening) => listening.map_err(unavailable)?,
            Err(_) => return Err(unavailable(ListenError::TimedOut(limit))),
        };
        Ok(Box::new(PgWakeUps {
            connection: Some(connection),
            heartbeat: self.change_log_heartbeat,
            check_limit: self.connect_timeout,
            heard_at: Instant::now(),
        }))
    }

    #[tracing::instrument(name = "DELETE session.changes", skip_all, fields(
        otel.kind = "client", db.system.name = "postgresql",
        db.operation.name = "DELETE", db.collection.name = "session.changes"))]
    async fn prune(&self) -> Result<u64, StoreError> {
        let retention = self.change_retention.as_secs_f64();
        let mut total = 0;
        loop {
            let mut connection = self.connection().await?;
            let result = sql_query(PRUNE_LOG)
                .bind::<diesel::sql_types::Double, _>(retention)
                .bind::<BigInt, _>(PRUNE_BATCH)
                .get_result::<Pruned>(&mut connection)
                .await;
            let pruned = self
                .finish("prune the change log", result, &mut connection)
                .await?
                .pruned;
            total += pruned.unsigned_abs();
            if pruned < PRUNE_BATCH {
                return Ok(total);
            }
        }
    }
}

/// Turns the rows of one read into a page: what a hostile or corrupt row
/// can reach, so it never panics, and a creation whose session row the
/// domain rejects becomes a typed [`InvalidRow`] in
/// [`LogPage::rejected`]. Public only to the `fuzzing` feature.
#[cfg_attr(
    not(feature = "fuzzing"),
    expect(unreachable_pub, reason = "public only to the fuzz targets")
)]
pub fn page(after: LogPosition, limit: u32, rows: Vec<LogRow>) -> LogRead {
    let mut page = LogPage {
        settled: after,
        read_to: after,
        ..LogPage::default()
    };
    let Some(first) = rows.as_slice().first() else {
        // The horizon row is always there; without it nothing can be said.
        return LogRead::Page(page);
    };
    let epoch = first.epoch;
    if after.epoch() != epoch.cast_unsigned()
        || after.major() <= first.pruned_through.unsigned_abs()
    {
        return LogRead::Expired;
    }
    let first_xmin = first.xmin;
    let xmin = first_xmin.unsigned_abs();
    let mut read = 0_usize;
    // Whether every entry so far is below xmin: final, so `settled` may pass it.
    let mut all_final = true;
    for row in rows {
        let (Some(xid), Some(seq), Some(kind)) = (row.xid, row.seq, row.kind.as_deref()) else {
            continue;
        };
        read += 1;
        let at = position(epoch, xid, seq);
        page.read_to = at;
        all_final &= at.major() < xmin;
        if all_final {
            page.settled = at;
        }
        let change = match kind {
            "c" => match created(row) {
                Some(Ok(session)) => Change::Created(session),
                None => continue,
                Some(Err(rejected)) => {
                    page.rejected.push((at, rejected));
                    continue;
                }
            },
            "r" => {
                let stored = row.change_hash.as_deref().unwrap_or_default();
                let hash = match TokenHash::try_from(stored) {
                    Ok(hash) => hash,
                    // The table's check makes this unreachable; report it if not.
                    Err(err) => {
                        let row = RowId::Unknown;
                        let invalid = InvalidRow::new(CHANGES_TABLE, "token_hash", row, err);
                        page.rejected.push((at, invalid));
                        continue;
                    }
                };
                // Consecutive revocations (a revoke-all) become one entry.
                if let Some(LogEntry {
                    position,
                    change: Change::Revoked(hashes),
                }) = page.entries.last_mut()
                {
                    hashes.push(hash);
                    *position = at;
                    continue;
                }
                Change::Revoked(vec![hash])
            }
            _ => Change::Reload,
        };
        page.entries.push(LogEntry {
            position: at,
            change,
        });
    }
    page.more = read >= limit as usize;
    if !page.more {
        // Every visible entry after `after` was read; all below xmin are final.
        page.settled = page.settled.max(position(epoch, first_xmin, 0)).max(after);
    }
    LogRead::Page(page)
}

/// The session a creation entry names, as stored now: `None` if it is gone
/// or no longer active (its revocation follows in the log).
fn created(row: LogRow) -> Option<Result<session_core::Session, InvalidRow>> {
    let (Some(id), Some(account_id), Some(token_hash), Some(created_at)) =
        (row.id, row.account_id, row.token_hash, row.created_at)
    else {
        return None;
    };
    if row.revoked_at.is_some() {
        return None;
    }
    let stored = SessionRow {
        id,
        account_id,
        token_hash,
        created_at,
        revoked_at: None,
        user_agent: row.user_agent.map(String::into_bytes),
        ip: row.ip,
        label: row.label.map(String::into_bytes),
    };
    Some(stored.into_stored().into_session(SESSIONS_TABLE))
}

/// Wake-ups turned off: never a hint, so followers read the log only when
/// they poll. Never fails either, so nobody retries to listen.
struct NoWakeUps;

#[async_trait]
impl WakeUps for NoWakeUps {
    async fn next(&mut self) -> Result<(), StoreError> {
        std::future::pending().await
    }
}

/// A listening connection. Dropping it closes the connection.
struct PgWakeUps {
    /// `None` once it has failed: it never wakes again.
    connection: Option<AsyncPgConnection>,
    /// Silence after which the connection is checked with a round trip.
    heartbeat: Duration,
    /// How long that check may take.
    check_limit: Duration,
    /// When the connection last proved alive.
    heard_at: Instant,
}

#[async_trait]
impl WakeUps for PgWakeUps {
    /// Cancel-safe: notifications wait in the connection's queue until a
    /// call takes them, and a check cut short is simply made again.
    async fn next(&mut self) -> Result<(), StoreError> {
        let Some(connection) = self.connection.as_mut() else {
            return Err(unavailable(ListenError::Ended));
        };
        let result = next_wake_up(
            connection,
            &mut self.heard_at,
            self.heartbeat,
            self.check_limit,
        )
        .await;
        if result.is_err() {
            self.connection = None;
        }
        result
    }
}

async fn next_wake_up(
    connection: &mut AsyncPgConnection,
    heard_at: &mut Instant,
    heartbeat: Duration,
    check_limit: Duration,
) -> Result<(), StoreError> {
    loop {
        let received = {
            let mut notifications = pin!(connection.notifications_stream());
            let received = tokio::select! {
                biased;
                received = poll_fn(|cx| notifications.as_mut().poll_next(cx)) => Some(received),
                () = tokio::time::sleep_until(*heard_at + heartbeat) => None,
            };
            if let Some(Some(Ok(_))) = &received {
                // Coalesce: whatever else is already queued is the same hint.
                // The payload is never read.
                poll_fn(|cx| {
                    loop {
                        match notifications.as_mut().poll_next(cx) {
                            Poll::Ready(Some(Ok(_))) => {}
                            _ => return Poll::Ready(()),
                        }
                    }
                })
                .await;
            }
            received
        };
        match received {
            Some(Some(Ok(_))) => {
                *heard_at = Instant::now();
                return Ok(());
            }
            Some(Some(Err(err))) => return Err(unavailable(ListenError::Lost(err))),
            Some(None) => return Err(unavailable(ListenError::Closed)),
            // Quiet for a while: a connection whose peer vanished without
            // closing it would stay quiet for ever, so make it answer.
            None => match tokio::time::timeout(check_limit, connection.batch_execute("SELECT 1"))
                .await
            {
                Ok(Ok(())) => *heard_at = Instant::now(),
                Ok(Err(err)) => return Err(unavailable(ListenError::Lost(err))),
                Err(_) => return Err(unavailable(ListenError::Silent(check_limit))),
            },
        }
    }
}
