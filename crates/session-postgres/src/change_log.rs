//! The change log: how one process learns of the session writes every other
//! process commits to the same database.
//!
//! Triggers on `session.sessions` (migration `2026-11-29-000000_change_log`)
//! write each change to `session.changes` in the writing transaction: the
//! token hash and what happened, stamped with the transaction's id (xid8).
//! Whatever writes the table is logged (another process, another version of
//! this crate, an operator's `UPDATE`), and a rolled-back write never is.
//!
//! Each entry is numbered at insert and stamped with its transaction. A
//! read returns, from one snapshot, the entries numbered past the cursor and
//! those of the transactions the cursor still waits for (the ones open at
//! its last read), so it returns each entry once however long any other
//! transaction stays open; see
//! [`PgSessionStore::read`](session_core::port::change_log::ChangeLog::read) and the migration
//! `2026-12-06-000000_change_log_cursor`. Creations are joined to the
//! sessions table in that statement, so what enters a cache is the stored
//! row as it is at the read, checked by the domain's rules.
//!
//! `NOTIFY session_changes` (sent, empty, by the store that wrote, after its
//! commit) only wakes readers early. PostgreSQL has no privileges on NOTIFY, so a notification
//! may come from any role: its payload is never read, and a burst of them
//! costs at most one read.

use std::future::poll_fn;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;
use std::time::Duration;

use async_trait::async_trait;
use diesel::ConnectionError;
use diesel::pg::Pg;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::Untyped;
use diesel::sql_types::{Array, BigInt, Bytea, Inet, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel::{QueryResult, QueryableByName, sql_query};
use diesel_async::{AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use futures_core::Stream;
use ipnet::IpNet;
use session_core::port::change_log::{
    Change, ChangeLog, LogCursor, LogPage, LogRead, OpenWriter, WakeUps,
};
use session_core::port::store::{BoxError, InvalidRow, RowId, StoreError, stored_instant};
use session_core::token::TokenHash;
use session_core::validation::{Field, Reason, ValidationError};
use tokio::sync::Notify;
use tokio::time::Instant;
use uuid::Uuid;

use crate::call::{Checkout, Work};
use crate::pool::{Connection, Pool};
use crate::raw::RawInstant;
use crate::store::{NOT_BEFORE_TABLE, PgSessionStore, SESSIONS_TABLE, SessionRow};

/// The log's table, as errors name it.
const CHANGES_TABLE: &str = "session.changes";

/// The channel the change log's triggers notify, with an empty payload, so
/// readers wake at once rather than at their next poll. Anything may notify
/// on it; readers treat each notification as a hint to read the log, never
/// as data.
pub const CHANGES_CHANNEL: &str = "session_changes";

/// Wakes other readers after this store's writes commit, in one of two
/// ways. A write that may revoke (a revocation, a limited insert, a raised
/// not-before mark) and finds no other of this store's in flight asks for
/// the wake-up at its own commit ([`crate::call::WAKE_AT_COMMIT`]): its
/// transaction's first entry that takes something away sends the `NOTIFY`,
/// which PostgreSQL delivers as it commits, so followers hear of a
/// revocation with no round trip after it. Every other write is announced
/// by one `NOTIFY` on [`CHANGES_CHANNEL`] from a statement of its own on a
/// pooled connection, after the commit. A notifying commit holds a lock
/// PostgreSQL takes for the whole server across the commit's WAL flush, so
/// notifying commits queue behind each other: hence only revoking writes,
/// and only those that overlap none, notify from their commits. Creates,
/// the bulk of writes, never do: a follower that has not applied one yet
/// decides its token by reading the log anyway. Coalesced, never delayed: a
/// write that commits while a wake-up is being sent is announced by the
/// next one, sent as soon as that one is done. Best effort: a wake-up that
/// cannot be sent costs readers only their poll interval.
pub(crate) struct Waker {
    pending: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
    /// This store's writes that may revoke, from checkout to finish.
    writing: AtomicUsize,
}

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
                }
            }
        });
        Self {
            pending,
            task,
            writing: AtomicUsize::new(0),
        }
    }

    /// Counts a write that may revoke as in flight until the returned
    /// [`Wake`] is dropped; its commit wakes the readers itself if no other
    /// was in flight when it began.
    pub(crate) fn writing(self: &Arc<Self>) -> Wake {
        let alone = self.writing.fetch_add(1, Ordering::AcqRel) == 0;
        Wake {
            waker: Arc::clone(self),
            at_commit: alone,
        }
    }

    /// Asks for a wake-up after a write committed; returns at once.
    pub(crate) fn wake(&self) {
        self.pending.notify_one();
    }
}

/// One write that may revoke, in flight: who wakes the log's readers once
/// it commits.
pub(crate) struct Wake {
    waker: Arc<Waker>,
    at_commit: bool,
}

impl Wake {
    /// Whether the write's own commit sends the wake-up.
    pub(crate) const fn at_commit(&self) -> bool {
        self.at_commit
    }

    /// The write committed a change, which `revoked` says took something
    /// away (logged an entry other than a creation): wakes the readers,
    /// unless its commit already did.
    pub(crate) fn changed(self, revoked: bool) {
        if !(self.at_commit && revoked) {
            self.waker.wake();
        }
    }
}

impl Drop for Wake {
    fn drop(&mut self) {
        self.waker.writing.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drop for Waker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn notify(pool: &Pool, limit: Duration) -> Result<(), BoxError> {
    notify_on(pool, CHANGES_CHANNEL, limit).await
}

/// Sends an empty `NOTIFY channel` from a pooled connection, within `limit`.
async fn notify_on(pool: &Pool, channel: &str, limit: Duration) -> Result<(), BoxError> {
    let mut connection = tokio::time::timeout(limit, pool.get()).await??;
    let sent = tokio::time::timeout(
        limit,
        connection.batch_execute(&format!("NOTIFY {channel}")),
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
    #[error(
        "LISTEN delivers nothing here: a notification this instance sent did not arrive within \
         {0:?} (a transaction pooler, such as PgBouncer with pool_mode = transaction, between \
         this service and PostgreSQL?); reading the change log at each poll instead. Give a \
         direct URL to PostgreSQL for LISTEN (--pg-direct-url) to be woken at once"
    )]
    NotDelivered(Duration),
    #[error("cannot send the wake-up probe: {0}")]
    Probe(#[source] BoxError),
    #[error("the wake-up listener has ended; listen again")]
    Ended,
}

fn unavailable(err: ListenError) -> StoreError {
    StoreError::Unavailable(Box::new(err))
}

/// Where a reader about to load everything starts: the epoch, the newest
/// entry visible (or the pruned bound, past it) and the transactions still
/// open, all from one snapshot.
#[derive(QueryableByName)]
struct Head {
    #[diesel(sql_type = BigInt)]
    epoch: i64,
    #[diesel(sql_type = BigInt)]
    through: i64,
    #[diesel(sql_type = Array<BigInt>)]
    open_now: Vec<i64>,
    #[diesel(sql_type = BigInt)]
    open_from: i64,
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

/// One row of a log read: the first gives the horizon (epoch, expiry and
/// the transactions still open), every other one entry, with the session
/// row for a creation. Column for column as [`READ_LOG`] selects it; public
/// only to the `fuzzing` feature.
#[derive(QueryableByName)]
#[cfg_attr(
    not(feature = "fuzzing"),
    expect(unreachable_pub, reason = "public only to the fuzz targets")
)]
pub struct LogRow {
    /// An id of the database's history (`epoch_sql!`); horizon row only.
    #[diesel(sql_type = Nullable<BigInt>)]
    pub epoch: Option<i64>,
    /// Whether pruning may have deleted entries the cursor has not read;
    /// horizon row only.
    #[diesel(sql_type = Nullable<diesel::sql_types::Bool>)]
    pub expired: Option<bool>,
    /// The transactions still open at the read's snapshot, below its xmax;
    /// horizon row only.
    #[diesel(sql_type = Nullable<Array<BigInt>>)]
    pub open_now: Option<Vec<i64>>,
    /// The snapshot's xmax: every transaction from it on is invisible to
    /// the read and not in `open_now`, though it may be writing already;
    /// horizon row only.
    #[diesel(sql_type = Nullable<BigInt>)]
    pub open_from: Option<i64>,
    /// The transactions from the cursor's `open_from` on, visible now, with
    /// entries numbered at most the cursor's `through`; horizon row only.
    #[diesel(sql_type = Nullable<Array<BigInt>>)]
    pub late: Option<Vec<i64>>,
    /// The "not before" mark stored at the read, raw (none: no mark);
    /// horizon row only. What a `n` entry carries, and what followers
    /// compare their own mark with.
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub not_before: Option<RawInstant>,
    /// The entry's number, taken at insert.
    #[diesel(sql_type = Nullable<BigInt>)]
    pub seq: Option<i64>,
    /// What happened: `c` created, `r` revoked, `n` the "not before" mark
    /// raised, anything else reload.
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
    /// `sessions.user_agent`, the bytes as stored, UTF-8 or not.
    #[diesel(sql_type = Nullable<Bytea>)]
    pub user_agent: Option<Vec<u8>>,
    /// `sessions.ip`.
    #[diesel(sql_type = Nullable<Inet>)]
    pub ip: Option<IpNet>,
    /// `sessions.label`, the bytes as stored, UTF-8 or not.
    #[diesel(sql_type = Nullable<Bytea>)]
    pub label: Option<Vec<u8>>,
}

/// The entries a cursor has not been given, with the horizon, in one
/// statement, so all come from one snapshot: the entries numbered past the
/// cursor's `through` ($1), those of the transactions it waits for ($2,
/// each read past its own mark, $3) and those of every transaction from its
/// `open_from` ($5) on, the first $4 of them all by number. xid8 has no
/// binary form diesel knows; it travels as text through bigint (transaction
/// ids stay far below 2^63). Sent by [`ReadLog`], which pushes the five
/// parameters before it.
///
/// Each creation's session row is looked up by its token hash in a
/// `LATERAL` subquery with a `LIMIT`, which the planner cannot flatten into
/// a join: the lookup is always an index probe per entry. As a plain join
/// the plan followed the statistics: under about half a million rows the
/// planner hashed the whole sessions table for a read it expected to bring
/// a full page, and for every read while its statistics lagged the table
/// (22 ms a read at 60,000 sessions on a throwaway server, where the probe
/// takes 0.15 ms).
const READ_LOG: &str = concat!(
    ", horizon AS MATERIALIZED (
    SELECT pg_current_snapshot() AS snap, s.pruned_seq, s.pruned_snapshot,
           (SELECT mark FROM session.not_before) AS not_before, ",
    epoch_sql!(),
    " AS epoch
    FROM session.change_log_state s
), open AS (
    SELECT o.xid::text::xid8 AS xid, o.read_through
    FROM unnest($2::bigint[], $3::bigint[]) AS o (xid, read_through)
), late AS MATERIALIZED (
    SELECT DISTINCT xid FROM session.changes
    WHERE xid >= $5::text::xid8
      AND xid < pg_snapshot_xmax((SELECT snap FROM horizon))
      AND seq <= $1
), fresh AS (
    SELECT * FROM (
        (SELECT xid, seq, kind, token_hash FROM session.changes
         WHERE seq > $1 ORDER BY seq LIMIT $4)
        UNION ALL
        (SELECT c.xid, c.seq, c.kind, c.token_hash
         FROM open o CROSS JOIN LATERAL (
             SELECT xid, seq, kind, token_hash FROM session.changes
             WHERE xid = o.xid AND seq > o.read_through AND seq <= $1
             ORDER BY seq LIMIT $4) c)
        UNION ALL
        (SELECT c.xid, c.seq, c.kind, c.token_hash
         FROM late l CROSS JOIN LATERAL (
             SELECT xid, seq, kind, token_hash FROM session.changes
             WHERE xid = l.xid AND seq <= $1
             ORDER BY seq LIMIT $4) c)
    ) AS all_parts
    ORDER BY seq LIMIT $4
)
SELECT h.epoch,
       h.pruned_seq > $1
       OR coalesce($5::text::xid8 < pg_snapshot_xmax(h.pruned_snapshot), false)
       OR EXISTS (
           SELECT 1 FROM open o WHERE pg_visible_in_snapshot(o.xid, h.pruned_snapshot)) AS expired,
       ARRAY(SELECT x::text::bigint FROM pg_snapshot_xip(h.snap) AS x) AS open_now,
       pg_snapshot_xmax(h.snap)::text::bigint AS open_from,
       ARRAY(SELECT xid::text::bigint FROM late) AS late,
       h.not_before,
       NULL::bigint AS seq, NULL::text AS kind, NULL::bytea AS change_hash,
       NULL::uuid AS id, NULL::uuid AS account_id, NULL::bytea AS token_hash,
       NULL::timestamptz AS created_at, NULL::timestamptz AS revoked_at,
       NULL::bytea AS user_agent, NULL::inet AS ip, NULL::bytea AS label
FROM horizon h
UNION ALL
SELECT NULL, NULL, NULL, NULL, NULL, NULL,
       f.seq, f.kind::text, f.token_hash,
       s.id, s.account_id, s.token_hash, s.created_at, s.revoked_at,
       convert_to(s.user_agent, 'SQL_ASCII'), s.ip, convert_to(s.label, 'SQL_ASCII')
FROM fresh f
LEFT JOIN LATERAL (
    SELECT * FROM session.sessions
    WHERE f.kind = 'c' AND token_hash = f.token_hash
    LIMIT 1) s ON true
ORDER BY seq NULLS FIRST"
);

/// [`READ_LOG`] as a query with a static id, so each connection keeps it
/// as a prepared statement, as it does the DSL's queries (`sql_query` is
/// prepared again on every read, a round trip more), and PostgreSQL plans
/// it once: after five executions it keeps the generic plan, because every
/// part of the statement is an index range whatever the parameters. On a
/// throwaway server with 100,000 entries a read then takes 0.15 ms, where
/// planning each execution took 0.4 to 0.5 ms more. (The entries of the
/// transactions from the cursor's `open_from` on are why the `late` CTE is
/// bounded by the snapshot's xmax too: with `xid >= $5` alone a generic
/// plan scanned the index by number, 27 ms there, so the planner kept
/// planning each read.)
///
/// diesel numbers a fragment's parameters in the order it pushes them, and
/// the statement refers to each several times: they are pushed once, in
/// order, in a leading CTE that only names them (unreferenced, so never
/// evaluated), and the statement refers to them by number.
#[derive(QueryId)]
struct ReadLog {
    through: i64,
    xids: Vec<i64>,
    marks: Vec<i64>,
    limit: i64,
    open_from: i64,
}

impl Query for ReadLog {
    type SqlType = Untyped;
}

impl QueryFragment<Pg> for ReadLog {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("WITH parameters (through, xids, marks, page, open_from) AS (SELECT ");
        out.push_bind_param::<BigInt, _>(&self.through)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<BigInt>, _>(&self.xids)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<BigInt>, _>(&self.marks)?;
        out.push_sql(", ");
        out.push_bind_param::<BigInt, _>(&self.limit)?;
        out.push_sql(", ");
        out.push_bind_param::<BigInt, _>(&self.open_from)?;
        out.push_sql(")");
        out.push_sql(READ_LOG);
        Ok(())
    }
}

/// [`ReadLog`]'s text, its parameters as `$1` to `$5`, for the tests that
/// read its plans.
#[cfg(test)]
pub(crate) fn read_log_text() -> String {
    let statement = ReadLog {
        through: 0,
        xids: Vec::new(),
        marks: Vec::new(),
        limit: 0,
        open_from: 0,
    };
    let text = diesel::debug_query::<Pg, _>(&statement).to_string();
    text.split(" -- binds: ")
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// The head: the epoch, the newest visible entry's number (at least the
/// pruned bound) and the transactions still open, from one snapshot.
const HEAD: &str = concat!(
    "WITH s AS MATERIALIZED (SELECT pg_current_snapshot() AS snap)
SELECT ",
    epoch_sql!(),
    " AS epoch,
       greatest((SELECT max(seq) FROM session.changes),
                (SELECT pruned_seq FROM session.change_log_state)) AS through,
       ARRAY(SELECT x::text::bigint FROM pg_snapshot_xip(s.snap) AS x) AS open_now,
       pg_snapshot_xmax(s.snap)::text::bigint AS open_from
FROM s"
);

/// One batch of pruning, through the schema owner's function (migration
/// `2026-12-06-000000_change_log_cursor`): the service's role needs no right
/// to write the log.
const PRUNE_LOG: &str = "SELECT session.prune_change_log($1, $2) AS pruned";

#[derive(QueryableByName)]
struct Pruned {
    #[diesel(sql_type = BigInt)]
    pruned: i64,
}

/// Entries deleted per prune statement, so no one statement runs long.
const PRUNE_BATCH: i64 = 10_000;

impl PgSessionStore {
    /// [`ChangeLog::read`] on `connection`.
    async fn read_log(
        &self,
        mut connection: Checkout,
        after: &LogCursor,
        limit: u32,
    ) -> Result<LogRead, StoreError> {
        let (xids, marks): (Vec<i64>, Vec<i64>) = after
            .open()
            .iter()
            .map(|writer| (as_bigint(writer.id), as_bigint(writer.read_through)))
            .unzip();
        let statement = ReadLog {
            through: as_bigint(after.through()),
            xids,
            marks,
            limit: i64::from(limit),
            open_from: as_bigint(after.open_from()),
        }
        .load::<LogRow>(&mut connection);
        // A read takes milliseconds; one that hangs (a peer gone silent
        // mid-reply) would stall the follower until TCP gives up, so it is
        // bounded, and its connection, perhaps mid-reply, is closed.
        let outcome = self.bounded(Work::Read, statement).await;
        let rows = self
            .finish("read the change log", outcome, connection)
            .await?;
        Ok(page(after, limit, rows))
    }
}

/// The transactions of a snapshot's open list, as a cursor waits for
/// them: none of their entries read yet.
fn open_writers(open_now: &[i64]) -> Vec<OpenWriter> {
    open_now
        .iter()
        .map(|&xid| OpenWriter {
            id: xid.unsigned_abs(),
            read_through: 0,
        })
        .collect()
}

fn as_bigint(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[async_trait]
impl ChangeLog for PgSessionStore {
    #[tracing::instrument(name = "SELECT session.changes", skip_all, fields(
        otel.kind = "client", db.system.name = "postgresql",
        db.operation.name = "SELECT", db.collection.name = "session.changes"))]
    async fn head(&self) -> Result<LogCursor, StoreError> {
        let mut connection = self.connection(Work::Read).await?;
        let statement = sql_query(HEAD).get_result::<Head>(&mut connection);
        let outcome = self.bounded(Work::Read, statement).await;
        let head = self
            .finish("read the change log's head", outcome, connection)
            .await?;
        Ok(LogCursor::new(
            head.epoch.cast_unsigned(),
            head.through.unsigned_abs(),
            open_writers(&head.open_now),
        )
        .with_open_from(head.open_from.unsigned_abs()))
    }

    /// One statement: the entries `after` has not been given, the
    /// transactions still open and the pruned bound, all from one snapshot
    /// (the statement `READ_LOG`; the migration `2026-12-06-000000_change_log_cursor`).
    #[tracing::instrument(name = "SELECT session.changes", skip_all, fields(
        otel.kind = "client", db.system.name = "postgresql",
        db.operation.name = "SELECT", db.collection.name = "session.changes"))]
    async fn read(&self, after: &LogCursor, limit: u32) -> Result<LogRead, StoreError> {
        let limit = limit.max(1);
        let (connection, kept) = self.log_connection().await?;
        match self.read_log(connection, after, limit).await {
            // The kept connection died while it waited (a restart, a
            // failover) and was closed: once more on a new one, so the
            // follower does not wait out its retry for it.
            Err(err) if kept && err.is_retryable() && !self.log_connection_kept() => {
                let (connection, _) = self.log_connection().await?;
                self.read_log(connection, after, limit).await
            }
            read => read,
        }
    }

    /// A connection listening on [`CHANGES_CHANNEL`] (to the direct URL
    /// when one is set), once a notification of its own sent from the pool
    /// has reached it within a second; with
    /// [`PgConfig::wake_ups`](crate::PgConfig::wake_ups) off, none, and
    /// hints that never come.
    ///
    /// Behind a transaction pooler LISTEN succeeds and then delivers nothing
    /// (the server session that listens is handed to other clients), so it
    /// is probed rather than trusted: a probe that does not arrive fails
    /// this call, and the follower polls and tries again later. The probe is
    /// sent again after each [`change_log_heartbeat`](crate::PgConfig::change_log_heartbeat)
    /// of silence, which also finds a connection whose peer went silent.
    async fn wake_ups(&self) -> Result<Box<dyn WakeUps>, StoreError> {
        if !self.wake_ups {
            return Ok(Box::new(NoWakeUps));
        }
        // A channel of this listener's own, so probes wake no other reader.
        let probe = format!("session_probe_{}", Uuid::new_v4().simple());
        let listening = async {
            let mut connection = self.direct.connect().await.map_err(ListenError::Connect)?;
            // The change log's channel last, so it is the listener's last
            // statement, as `pg_stat_activity` shows it: probes come from
            // the pool, so nothing else is run on this connection.
            for channel in [probe.as_str(), CHANGES_CHANNEL] {
                connection
                    .batch_execute(&format!("LISTEN {channel}"))
                    .await
                    .map_err(ListenError::Listen)?;
            }
            Ok(connection)
        };
        let limit = self.direct.limit();
        let connection = match tokio::time::timeout(limit, listening).await {
            Ok(listening) => listening.map_err(unavailable)?,
            Err(_) => return Err(unavailable(ListenError::TimedOut(limit))),
        };
        let mut wake_ups = PgWakeUps {
            connection: Some(connection),
            pool: self.pool.clone(),
            probe,
            probe_sent: None,
            heartbeat: self.change_log_heartbeat,
            check_limit: self.connect_timeout,
            heard_at: Instant::now(),
        };
        wake_ups.probe_now().await?;
        Ok(Box::new(wake_ups))
    }

    #[tracing::instrument(name = "DELETE session.changes", skip_all, fields(
        otel.kind = "client", db.system.name = "postgresql",
        db.operation.name = "DELETE", db.collection.name = "session.changes"))]
    async fn prune(&self) -> Result<u64, StoreError> {
        let retention = self.change_retention.as_secs_f64();
        let mut total = 0;
        loop {
            let mut connection = self.connection(Work::Write).await?;
            let statement = sql_query(PRUNE_LOG)
                .bind::<diesel::sql_types::Double, _>(retention)
                .bind::<BigInt, _>(PRUNE_BATCH)
                .get_result::<Pruned>(&mut connection);
            let outcome = self.bounded(Work::Write, statement).await;
            let pruned = self
                .finish("prune the change log", outcome, connection)
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
/// domain rejects becomes a typed [`InvalidRow`] in [`LogPage::rejected`].
/// Public only to the `fuzzing` feature.
///
/// The next cursor: `through` moves to the newest entry read; the
/// transactions the read found still open are waited for; one the cursor
/// waited for that has finished is dropped once its entries up to
/// `through` are all read, and otherwise kept, read through the last entry
/// of a full page.
#[cfg_attr(
    not(feature = "fuzzing"),
    expect(unreachable_pub, reason = "public only to the fuzz targets")
)]
pub fn page(after: &LogCursor, limit: u32, rows: Vec<LogRow>) -> LogRead {
    let mut rows = rows.into_iter();
    // The horizon row is always first; without it nothing can be said.
    let Some(LogRow {
        epoch: Some(epoch),
        expired: Some(expired),
        open_now: Some(open_now),
        open_from: Some(open_from),
        late: Some(late),
        not_before,
        ..
    }) = rows.next()
    else {
        return LogRead::Page(LogPage {
            next: after.clone(),
            ..LogPage::default()
        });
    };
    if expired || after.epoch() != epoch.cast_unsigned() {
        return LogRead::Expired;
    }
    let mut page = LogPage::default();
    // The mark as this read found it, checked as any stored instant.
    let mark = not_before.map(|raw| stored_instant(raw.unix_micros()));
    page.not_before = mark.flatten();
    let mut read = 0_usize;
    let mut last = None;
    for row in rows {
        let (Some(seq), Some(kind)) = (row.seq, row.kind.as_deref()) else {
            continue;
        };
        read += 1;
        let seq = seq.unsigned_abs();
        last = Some(last.map_or(seq, |last: u64| last.max(seq)));
        let change = match kind {
            "c" => match created(row) {
                Some(Ok(session)) => Change::Created(session),
                None => continue,
                Some(Err(rejected)) => {
                    page.rejected.push(rejected);
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
                        page.rejected.push(invalid);
                        continue;
                    }
                };
                // Consecutive revocations (a revoke-all) become one entry.
                if let Some(Change::Revoked(hashes)) = page.entries.last_mut() {
                    hashes.push(hash);
                    continue;
                }
                Change::Revoked(vec![hash])
            }
            "n" => match mark {
                Some(Some(mark)) => Change::NotBefore(mark),
                // Gone since (the table emptied by other SQL): nothing to raise.
                None => continue,
                Some(None) => {
                    let reason = ValidationError::new(Field::NotBefore, Reason::InstantOutOfRange);
                    let invalid = InvalidRow::new(NOT_BEFORE_TABLE, "mark", RowId::Only, reason);
                    page.rejected.push(invalid);
                    continue;
                }
            },
            _ => Change::Reload,
        };
        page.entries.push(change);
    }
    page.more = read >= limit as usize;
    let through = after.through().max(last.unwrap_or(0));
    let still_open = open_writers(&open_now);
    // A full page that stopped below `through`: the finished writers the
    // cursor waited for (listed, or from its `open_from` on) may have
    // entries above the page's last one, not read yet.
    let rest_unread = page.more && last.is_some_and(|last| last < after.through());
    let mut open: Vec<OpenWriter> = Vec::new();
    if rest_unread {
        let last = last.unwrap_or(0);
        let finished = after
            .open()
            .iter()
            .copied()
            .chain(late.iter().map(|&xid| OpenWriter {
                id: xid.unsigned_abs(),
                read_through: 0,
            }))
            .filter(|writer| !still_open.iter().any(|open| open.id == writer.id));
        open.extend(finished.map(|writer| OpenWriter {
            id: writer.id,
            read_through: last.max(writer.read_through),
        }));
    }
    open.extend(still_open);
    page.next = LogCursor::new(epoch.cast_unsigned(), through, open)
        .with_open_from(open_from.unsigned_abs());
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
        user_agent: row.user_agent,
        ip: row.ip,
        label: row.label,
        // Active, so none: a reason is written only with `revoked_at`.
        revocation_reason: None,
        revoked_by: None,
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

    fn delivers(&self) -> bool {
        false
    }
}

/// How long a probe notification may take to arrive before LISTEN is taken
/// not to deliver: on a working connection it arrives in milliseconds.
pub(crate) const PROBE_WAIT: Duration = Duration::from_secs(1);

/// A listening connection. Dropping it closes the connection.
struct PgWakeUps {
    /// `None` once it has failed: it never wakes again.
    connection: Option<AsyncPgConnection>,
    /// Where probes are sent from: never the listening connection itself,
    /// which a transaction pooler may hand the very server session that
    /// listens, and so deliver a probe no other notification would follow.
    pool: Pool,
    /// This listener's own channel, for probes.
    probe: String,
    /// When the probe now awaited was sent.
    probe_sent: Option<Instant>,
    /// Silence after which a probe is sent.
    heartbeat: Duration,
    /// How long sending a probe may take.
    check_limit: Duration,
    /// When the connection last proved alive.
    heard_at: Instant,
}

impl PgWakeUps {
    /// Sends a probe and waits until it arrives; hints that arrive
    /// meanwhile are dropped (the follower reads once after listening).
    async fn probe_now(&mut self) -> Result<(), StoreError> {
        self.send_probe().await?;
        while self.probe_sent.is_some() {
            self.hear().await?;
        }
        Ok(())
    }

    async fn send_probe(&mut self) -> Result<(), StoreError> {
        if let Err(err) = notify_on(&self.pool, &self.probe, self.check_limit).await {
            self.fail().await;
            return Err(unavailable(ListenError::Probe(err)));
        }
        self.probe_sent = Some(Instant::now());
        Ok(())
    }

    /// Gives up the connection. Behind a pooler the LISTEN may have stayed
    /// with a server session others now use: ask, best effort, that it
    /// stop listening.
    async fn fail(&mut self) {
        if let Some(mut connection) = self.connection.take() {
            let _ignored =
                tokio::time::timeout(self.check_limit, connection.batch_execute("UNLISTEN *"))
                    .await;
        }
    }
}

#[async_trait]
impl WakeUps for PgWakeUps {
    /// Cancel-safe: notifications wait in the connection's queue until a
    /// call takes them, and a probe cut short is awaited by the next call.
    async fn next(&mut self) -> Result<(), StoreError> {
        while !self.hear().await? {}
        Ok(())
    }
}

impl PgWakeUps {
    /// Waits for the next notification, or the next deadline: a probe that
    /// did not arrive in time fails, and silence past the heartbeat sends
    /// one. `true` for a hint.
    async fn hear(&mut self) -> Result<bool, StoreError> {
        let Some(connection) = self.connection.as_mut() else {
            return Err(unavailable(ListenError::Ended));
        };
        let deadline = match self.probe_sent {
            Some(sent) => sent + PROBE_WAIT,
            None => self.heard_at + self.heartbeat,
        };
        match next_notification(connection, deadline, &self.probe).await {
            Heard::Notified { hint, probe } => {
                self.heard_at = Instant::now();
                if probe {
                    self.probe_sent = None;
                }
                Ok(hint)
            }
            Heard::Nothing if self.probe_sent.is_some() => {
                self.fail().await;
                Err(unavailable(ListenError::NotDelivered(PROBE_WAIT)))
            }
            // Quiet for a while: a connection whose peer vanished without
            // closing it, or a LISTEN a pooler no longer delivers, would
            // stay quiet for ever; probe it.
            Heard::Nothing => self.send_probe().await.map(|()| false),
            Heard::Failed(err) => {
                self.connection = None;
                Err(unavailable(err))
            }
        }
    }
}

/// What the listening connection brought.
enum Heard {
    /// Notifications: on the change log's channel (or any but the probe's),
    /// a hint; on the probe's, the probe.
    Notified {
        hint: bool,
        probe: bool,
    },
    /// Nothing before the deadline.
    Nothing,
    Failed(ListenError),
}

async fn next_notification(
    connection: &mut AsyncPgConnection,
    deadline: Instant,
    probe: &str,
) -> Heard {
    let mut notifications = pin!(connection.notifications_stream());
    let received = tokio::select! {
        biased;
        received = poll_fn(|cx| notifications.as_mut().poll_next(cx)) => received,
        () = tokio::time::sleep_until(deadline) => return Heard::Nothing,
    };
    let (mut hint, mut probed) = (false, false);
    let mut note = |channel: &str| {
        if channel == probe {
            probed = true;
        } else {
            hint = true;
        }
    };
    match received {
        Some(Ok(notification)) => note(&notification.channel),
        Some(Err(err)) => return Heard::Failed(ListenError::Lost(err)),
        None => return Heard::Failed(ListenError::Closed),
    }
    // Coalesce: whatever else is already queued is the same hint, or the
    // probe. The payload is never read.
    poll_fn(|cx| {
        loop {
            match notifications.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(notification))) => note(&notification.channel),
                _ => return Poll::Ready(()),
            }
        }
    })
    .await;
    Heard::Notified {
        hint,
        probe: probed,
    }
}
