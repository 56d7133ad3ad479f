//! [`PgSessionStore`]: the [`SessionStore`] port over PostgreSQL.
//!
//! Every write is one statement, so each is atomic on its own; triggers log
//! the change in the same transaction (see [`crate::change_log`]).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::{Array, Bytea, Nullable, Text, Timestamptz};
use diesel_async::{RunQueryDsl, SimpleAsyncConnection};
use ipnet::IpNet;
use session_core::config::{LimitPolicy, SessionLimit};
use session_core::port::store::{
    ActivePage, EARLIEST_STORED_MICROS, Exclusive, IdentityPage, InvalidRow, LATEST_STORED_MICROS,
    LimitedInsert, NotBefore, RetentionAction, RevokeOutcome, RevokedSession, RowId, SeenAt,
    SessionStore, StoreError, StoredIdentity, StoredNotBefore, StoredSession, first_id_not_marked,
    stored_instant,
};
use session_core::token::TokenHash;
use session_core::validation::Reason;
use session_core::{
    AccountId, AccountPage, Label, ListPosition, ListScope, PageRequest, RevocationReason, Revoker,
    Session, SessionId, UserAgent,
};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::call::{Limits, Work};
use crate::change_log::Waker;
use crate::config::{PgConfig, Statements};
use crate::pool::{self, Connector, Pool};
use crate::raw::{AS_STORED, RawInstant, convert_to};
use crate::schema::sessions;

/// Sessions in PostgreSQL, in the `session` schema, over a pool of
/// diesel-async connections.
///
/// Cheap to clone; clones share the pool. Call [`migrate`](Self::migrate)
/// before first use (it is a no-op once the schema is current).
///
/// It is also a [`ChangeLog`](session_core::port::change_log::ChangeLog): several processes
/// sharing one database each follow the others' writes (see
/// [`CHANGES_CHANNEL`](crate::CHANGES_CHANNEL)).
#[derive(Clone)]
pub struct PgSessionStore {
    pub(crate) pool: Pool,
    /// Opens connections for what needs a server session of its own (the
    /// change log's LISTEN, migrations): to the direct URL when one is set,
    /// else as the pool does.
    pub(crate) direct: Arc<Connector>,
    /// Opens connections as the pool does, for what the pool's cannot send
    /// (the warm's `COPY`).
    pub(crate) connector: Arc<Connector>,
    /// The bounds of every call, and how statements are sent.
    pub(crate) limits: Arc<Limits>,
    pub(crate) connect_timeout: Duration,
    pub(crate) checkout_timeout: Duration,
    pub(crate) change_log_heartbeat: Duration,
    pub(crate) change_retention: Duration,
    pub(crate) migration_lock_timeout: Duration,
    pub(crate) trust_schema_owner: bool,
    /// Whether the change log's
    /// [`wake_ups`](session_core::port::change_log::ChangeLog::wake_ups) listen.
    pub(crate) wake_ups: bool,
    /// Wakes other readers of the change log after this store's writes.
    pub(crate) waker: Arc<Waker>,
    /// The change log's reader's connection between reads
    /// ([`log_connection`](Self::log_connection)).
    pub(crate) log_reader: crate::call::KeptConnection,
}

impl std::fmt::Debug for PgSessionStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgSessionStore")
            .field("pool", &self.pool.status())
            .finish_non_exhaustive()
    }
}

/// How the connection pool is used at one instant, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStatus {
    /// The most connections the pool opens (`pool_size`).
    pub max: usize,
    /// Connections open now, in use or idle.
    pub open: usize,
    /// Connections checked out by a store call now.
    pub in_use: usize,
    /// Store calls waiting for a connection now (each waits at most
    /// `checkout_timeout`, then fails as unavailable).
    pub waiting: usize,
}

impl PgSessionStore {
    /// The pool's use now: a few atomic reads, no lock and no round trip,
    /// so a metrics scrape may call it as often as it likes.
    #[must_use]
    pub fn pool_status(&self) -> PoolStatus {
        let status = self.pool.status();
        PoolStatus {
            max: status.max_size,
            open: status.size,
            in_use: status.size.saturating_sub(status.available),
            waiting: status.waiting,
        }
    }

    /// Builds the pool and opens one connection, so a wrong URL, refused
    /// credentials or an unreachable server show at start.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] if no connection could be opened within the
    /// configured timeouts.
    pub async fn connect(config: PgConfig) -> Result<Self, StoreError> {
        let connector = Arc::new(Connector::new(&config));
        let direct = match config.direct.as_deref() {
            Some(direct) => Arc::new(Connector::new(
                &direct.clone().connect_timeout(config.connect_timeout),
            )),
            None => Arc::clone(&connector),
        };
        let pool = pool::build(&config, Arc::clone(&connector))?;
        let store = Self {
            waker: Arc::new(Waker::start(pool.clone(), config.checkout_timeout)),
            pool,
            direct,
            connector,
            log_reader: crate::call::KeptConnection::default(),
            limits: Arc::new(Limits::new(
                config.statements,
                config.read_timeout,
                config.write_timeout,
                config.lock_timeout,
            )),
            connect_timeout: config.connect_timeout,
            checkout_timeout: config.checkout_timeout,
            change_log_heartbeat: config.change_log_heartbeat,
            change_retention: config.change_retention,
            migration_lock_timeout: config.migration_lock_timeout,
            trust_schema_owner: config.trust_schema_owner,
            wake_ups: config.wake_ups,
        };
        store.health_check().await?;
        Ok(store)
    }

    /// How statements are sent.
    #[must_use]
    pub fn statements(&self) -> Statements {
        self.limits.statements
    }
}

/// A row as stored, each column in a form any stored value decodes into
/// (see [`crate::raw`]), so the domain checks it rather than the driver.
#[derive(Queryable, Selectable)]
#[diesel(table_name = sessions, check_for_backend(Pg))]
pub(crate) struct SessionRow {
    pub(crate) id: Uuid,
    pub(crate) account_id: Uuid,
    pub(crate) token_hash: Vec<u8>,
    pub(crate) created_at: RawInstant,
    pub(crate) revoked_at: Option<RawInstant>,
    /// The bytes as stored, UTF-8 or not.
    #[diesel(
        select_expression = convert_to(sessions::user_agent, AS_STORED),
        select_expression_type = convert_to<sessions::user_agent, &'static str>,
    )]
    pub(crate) user_agent: Option<Vec<u8>>,
    pub(crate) ip: Option<IpNet>,
    /// The bytes as stored, UTF-8 or not.
    #[diesel(
        select_expression = convert_to(sessions::label, AS_STORED),
        select_expression_type = convert_to<sessions::label, &'static str>,
    )]
    pub(crate) label: Option<Vec<u8>>,
    /// The bytes as stored, UTF-8 or not.
    #[diesel(
        select_expression = convert_to(sessions::revocation_reason, AS_STORED),
        select_expression_type = convert_to<sessions::revocation_reason, &'static str>,
    )]
    pub(crate) revocation_reason: Option<Vec<u8>>,
    /// The bytes as stored, UTF-8 or not.
    #[diesel(
        select_expression = convert_to(sessions::revoked_by, AS_STORED),
        select_expression_type = convert_to<sessions::revoked_by, &'static str>,
    )]
    pub(crate) revoked_by: Option<Vec<u8>>,
}

/// Records last-seen times in one statement: only for sessions that exist,
/// each moved forward only (an older time writes no row version at all),
/// rows taken in id order (the batch is sorted), so two instances flushing
/// overlapping batches wait on each other rather than deadlock.
const RECORD_LAST_SEEN: &str = "\
    INSERT INTO session.session_activity AS activity (session_id, last_seen_at) \
    SELECT seen.id, seen.at FROM unnest($1::uuid[], $2::timestamptz[]) AS seen (id, at) \
    WHERE EXISTS (SELECT 1 FROM session.sessions WHERE sessions.id = seen.id) \
    ORDER BY seen.id \
    ON CONFLICT (session_id) DO UPDATE SET last_seen_at = EXCLUDED.last_seen_at \
    WHERE activity.last_seen_at < EXCLUDED.last_seen_at";

/// The first key of the advisory lock [`insert_within_limit`] takes per
/// account (the two-key form, whose keys no single-key lock, such as the
/// migrations', shares): "sess" in ASCII.
///
/// [`insert_within_limit`]: SessionStore::insert_within_limit
const ACCOUNT_LOCK_SPACE: i32 = 0x7365_7373;

/// Serializes the limited inserts of one account until the transaction
/// ends (so it works through a transaction pooler, unlike a session lock).
/// Two accounts may share a key: they then wait on each other, never
/// more.
const LOCK_ACCOUNT: &str = "SELECT pg_advisory_xact_lock($1, $2)";

/// Revokes, with reason `$4` (`limit`), the `$3` least recently seen active
/// sessions of account `$2` at `$1`: by last-seen time, a session never seen
/// counting as seen at its creation, then by creation time, then by id.
/// Run under [`LOCK_ACCOUNT`], in a statement of its own, so its snapshot
/// includes every insert committed before the lock was granted.
const EVICT_LEAST_RECENTLY_SEEN: &str = "\
    UPDATE session.sessions SET revoked_at = $1, revocation_reason = $4 \
    WHERE revoked_at IS NULL AND id IN ( \
        SELECT s.id FROM session.sessions AS s \
        LEFT JOIN session.session_activity AS a ON a.session_id = s.id \
        WHERE s.account_id = $2 AND s.revoked_at IS NULL \
        ORDER BY coalesce(a.last_seen_at, s.created_at), s.created_at, s.id \
        LIMIT $3) \
    RETURNING id, token_hash";

/// The second key of an account's advisory lock: its id folded to 32 bits.
fn account_lock_key(account: AccountId) -> i32 {
    let id = account.as_uuid().as_u128();
    // Truncation is the point: any fold of the id serializes that account.
    let folded = (id ^ (id >> 64)) as u64;
    let key = (folded ^ (folded >> 32)) as u32;
    key.cast_signed()
}

/// A session a statement revoked.
#[derive(QueryableByName)]
struct RevokedRow {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    id: Uuid,
    #[diesel(sql_type = Bytea)]
    token_hash: Vec<u8>,
}

/// The advisory lock a batch of idle revocation holds for its statement:
/// "sessidle" in ASCII. See [`revoke_idle`](SessionStore::revoke_idle).
pub const IDLE_JOB_LOCK: i64 = 0x7365_7373_6964_6c65;

/// The advisory lock a batch of retention holds for its statement:
/// "sessretn" in ASCII.
pub const RETENTION_JOB_LOCK: i64 = 0x7365_7373_7265_746e;

/// The idle sessions after `$2` (none: from the first), last seen, or never
/// seen and created, before `$3`, at most `$4`, in id order: a range scan of
/// `sessions_active_id_idx`, each row looked up in `session_activity` by its
/// key. The scan runs only if `worker` holds the job's lock.
fn idle(after: bool) -> String {
    format!(
        "SELECT s.id FROM session.sessions AS s \
         LEFT JOIN session.session_activity AS a ON a.session_id = s.id \
         WHERE (SELECT held FROM worker) AND s.revoked_at IS NULL AND {} \
           AND coalesce(a.last_seen_at, s.created_at) < $3 \
         ORDER BY s.id LIMIT $4",
        after_condition(after)
    )
}

/// Where a keyset batch starts: after `$2`, or (`$2` null) at the first
/// row. Two texts, not `($2 IS NULL OR s.id > $2)`: a prepared statement's
/// generic plan could not turn that into an index range, and each batch
/// would scan again every index entry the batches before it left behind.
fn after_condition(after: bool) -> &'static str {
    if after {
        "s.id > $2::uuid"
    } else {
        "$2::uuid IS NULL"
    }
}

/// One batch of a maintenance job, in one statement, so one transaction in
/// either statement mode: the transaction-scoped advisory lock first (tried,
/// never waited for: it is released at the statement's commit or rollback,
/// so a transaction pooler can hand the connection on, and a process that
/// dies holds nothing), then the rows, locked and skipped if another
/// statement holds them, then the change. Always one row with `held` and
/// no id, or one row per session taken.
fn job_batch(chosen: &str, change: &str) -> String {
    format!(
        "WITH worker AS MATERIALIZED (SELECT pg_try_advisory_xact_lock($1) AS held), \
         chosen AS ({chosen} FOR UPDATE OF s SKIP LOCKED), \
         taken AS ({change} RETURNING s.id, s.token_hash) \
         SELECT worker.held, taken.id, taken.token_hash FROM worker LEFT JOIN taken ON true"
    )
}

/// A row of a maintenance batch: whether the job's lock was held, and a
/// session taken, if any.
#[derive(QueryableByName)]
struct TakenRow {
    #[diesel(sql_type = diesel::sql_types::Bool)]
    held: bool,
    #[diesel(sql_type = Nullable<diesel::sql_types::Uuid>)]
    id: Option<Uuid>,
    #[diesel(sql_type = Nullable<Bytea>)]
    token_hash: Option<Vec<u8>>,
}

/// The sessions a batch took, in id order, or busy when another process
/// held the lock.
fn taken(rows: Vec<TakenRow>) -> Exclusive<Vec<(Uuid, Option<Vec<u8>>)>> {
    if !<[TakenRow]>::first(&rows).is_some_and(|row| row.held) {
        return Exclusive::Busy;
    }
    let mut taken: Vec<_> = rows
        .into_iter()
        .filter_map(|row| Some((row.id?, row.token_hash)))
        .collect();
    taken.sort_by_key(|(id, _)| *id);
    Exclusive::Done(taken)
}

/// The sessions a revoking batch took, as the port reports them.
fn revoked_sessions(
    taken: Vec<(Uuid, Option<Vec<u8>>)>,
) -> Result<Vec<RevokedSession>, StoreError> {
    taken
        .into_iter()
        .map(|(id, hash)| {
            Ok(RevokedSession {
                id: SessionId::from_uuid(id),
                token_hash: token_hash(id, hash.as_deref().unwrap_or_default())?,
            })
        })
        .collect()
}

/// The advisory lock a batch of the "not before" sweep holds for its
/// statement: "sessnotb" in ASCII.
pub const NOT_BEFORE_JOB_LOCK: i64 = 0x7365_7373_6e6f_7462;

/// The "not before" mark's table, as errors name it.
pub(crate) const NOT_BEFORE_TABLE: &str = "session.not_before";

/// The mark's row, raw: the domain checks it
/// ([`StoredNotBefore::into_not_before`]).
#[derive(QueryableByName)]
struct NotBeforeRow {
    #[diesel(sql_type = Timestamptz)]
    mark: RawInstant,
    #[diesel(sql_type = Nullable<Bytea>)]
    raised_by: Option<Vec<u8>>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    swept_through: Option<RawInstant>,
}

/// Reads the mark's one row, text as stored.
const READ_NOT_BEFORE: &str = "\
    SELECT mark, convert_to(raised_by, 'SQL_ASCII') AS raised_by, swept_through \
    FROM session.not_before";

/// Raises the mark in one statement: the later of the stored one and `$1`
/// (a stored one out of the domain's range, which only other SQL past the
/// table's checks could write, is replaced), recording `$2` as who raised
/// it only when it moved. Answers the mark in force.
const RAISE_NOT_BEFORE: &str = "\
    INSERT INTO session.not_before AS nb (mark, raised_by) VALUES ($1, $2) \
    ON CONFLICT (only_row) DO UPDATE SET \
        mark = CASE WHEN nb.mark BETWEEN '0001-01-01 00:00:00+00' AND '9999-12-31 23:59:59.999999+00' \
                    THEN GREATEST(nb.mark, EXCLUDED.mark) ELSE EXCLUDED.mark END, \
        raised_by = CASE WHEN EXCLUDED.mark > nb.mark \
                      OR NOT (nb.mark BETWEEN '0001-01-01 00:00:00+00' AND '9999-12-31 23:59:59.999999+00') \
                    THEN EXCLUDED.raised_by ELSE nb.raised_by END \
    RETURNING mark";

/// Records the sweep of mark `$1`, never past the stored mark, never back.
const RECORD_NOT_BEFORE_SWEPT: &str = "\
    UPDATE session.not_before SET swept_through = LEAST(mark, $1) \
    WHERE swept_through IS NULL OR swept_through < LEAST(mark, $1)";

/// A raised mark, as [`RAISE_NOT_BEFORE`] answers it.
#[derive(QueryableByName)]
struct RaisedRow {
    #[diesel(sql_type = Timestamptz)]
    mark: RawInstant,
}

/// A row of `session.session_activity`.
#[derive(QueryableByName)]
struct ActivityRow {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    session_id: Uuid,
    #[diesel(sql_type = Timestamptz)]
    last_seen_at: RawInstant,
}

/// The table rows are read from, as errors name it.
pub(crate) const SESSIONS_TABLE: &str = "session.sessions";

/// The table activity rows are read from, as errors name it.
const ACTIVITY_TABLE: &str = "session.session_activity";

/// The instants the domain accepts, as the list query bounds `created_at`.
const EARLIEST: RawInstant = RawInstant::from_unix_micros(EARLIEST_STORED_MICROS);
const LATEST: RawInstant = RawInstant::from_unix_micros(LATEST_STORED_MICROS);

impl SessionRow {
    /// The row as session-core checks every stored row.
    pub(crate) fn into_stored(self) -> StoredSession {
        StoredSession {
            id: self.id,
            account_id: self.account_id,
            token_hash: self.token_hash,
            created_at: self.created_at.unix_micros(),
            revoked_at: self.revoked_at.map(RawInstant::unix_micros),
            user_agent: self.user_agent,
            ip: self.ip.map(|net| net.addr()),
            label: self.label,
            revocation_reason: self.revocation_reason,
            revoked_by: self.revoked_by,
        }
    }

    /// Where the row is in its account's list. The list query reads only
    /// rows whose `created_at` is in the domain's range, so this fails only
    /// if that bound is lost.
    fn list_position(&self) -> Result<ListPosition, InvalidRow> {
        let id = SessionId::from_uuid(self.id);
        let created_at = stored_instant(self.created_at.unix_micros()).ok_or_else(|| {
            InvalidRow::new(
                SESSIONS_TABLE,
                "created_at",
                RowId::Session(id),
                Reason::InstantOutOfRange,
            )
        })?;
        Ok(ListPosition { created_at, id })
    }

    /// Checks the row against the domain's rules, as any input is.
    fn into_session(self) -> Result<Session, StoreError> {
        Ok(self.into_stored().into_session(SESSIONS_TABLE)?)
    }
}

/// Splits the rows of a warm page into sessions and rows the domain rejects.
fn active_page(rows: Vec<SessionRow>, limit: u32) -> ActivePage {
    let resume_after = (rows.len() >= limit as usize)
        .then(|| rows.last().map(|row| SessionId::from_uuid(row.id)))
        .flatten();
    let mut page = ActivePage {
        resume_after,
        ..ActivePage::default()
    };
    for row in rows {
        match row.into_stored().into_session(SESSIONS_TABLE) {
            Ok(session) => page.sessions.push(session),
            Err(rejected) => page.rejected.push(rejected),
        }
    }
    page
}

/// Splits the rows of a warm's identity page into identities and rows the
/// domain rejects.
fn identity_page(rows: Vec<(Uuid, Uuid, Vec<u8>)>, limit: u32) -> IdentityPage {
    let resume_after = (rows.len() >= limit as usize)
        .then(|| rows.last().map(|row| SessionId::from_uuid(row.0)))
        .flatten();
    let mut page = IdentityPage {
        resume_after,
        ..IdentityPage::default()
    };
    for (id, account_id, token_hash) in rows {
        let stored = StoredIdentity {
            id,
            account_id,
            token_hash,
        };
        match stored.into_identity(SESSIONS_TABLE) {
            Ok(identity) => page.identities.push(identity),
            Err(rejected) => page.rejected.push(rejected),
        }
    }
    page
}

/// A stored activity row as the port's [`SeenAt`]; `None`, logged by row,
/// for a time the domain cannot hold (written by other SQL): that session
/// reads as never seen rather than failing the read of every other one.
fn seen_at(row: ActivityRow) -> Option<SeenAt> {
    let id = SessionId::from_uuid(row.session_id);
    let Some(at) = stored_instant(row.last_seen_at.unix_micros()) else {
        let invalid = InvalidRow::new(
            ACTIVITY_TABLE,
            "last_seen_at",
            RowId::Session(id),
            Reason::InstantOutOfRange,
        );
        tracing::error!(error = %invalid, "skipping a stored last-seen time the domain rejects");
        return None;
    };
    Some(SeenAt { id, at })
}

fn token_hash(id: Uuid, bytes: &[u8]) -> Result<TokenHash, StoreError> {
    TokenHash::try_from(bytes).map_err(|err| {
        InvalidRow::new(
            SESSIONS_TABLE,
            "token_hash",
            RowId::Session(SessionId::from_uuid(id)),
            err,
        )
        .into()
    })
}

#[derive(Insertable)]
#[diesel(table_name = sessions, check_for_backend(Pg))]
struct NewSessionRow<'a> {
    id: Uuid,
    account_id: Uuid,
    token_hash: &'a [u8],
    created_at: OffsetDateTime,
    revoked_at: Option<OffsetDateTime>,
    user_agent: Option<&'a str>,
    ip: Option<IpNet>,
    label: Option<&'a str>,
    revocation_reason: Option<&'a str>,
    revoked_by: Option<&'a str>,
}

impl<'a> From<&'a Session> for NewSessionRow<'a> {
    fn from(session: &'a Session) -> Self {
        Self {
            id: *session.id.as_uuid(),
            account_id: *session.account_id.as_uuid(),
            token_hash: session.token_hash.as_bytes(),
            created_at: session.created_at,
            revoked_at: session.revoked_at(),
            user_agent: session.metadata.user_agent.as_ref().map(UserAgent::as_str),
            ip: session.metadata.ip.map(IpNet::from),
            label: session.metadata.label.as_ref().map(Label::as_str),
            revocation_reason: session.revocation_reason().map(RevocationReason::as_str),
            revoked_by: session.revoked_by().map(Revoker::as_str),
        }
    }
}

/// Revokes one session and tells the three outcomes apart in one statement:
///
/// ```sql
/// WITH revoked AS (
///     UPDATE session.sessions SET revoked_at = $1, revocation_reason = $3, revoked_by = $4
///     WHERE id = $2 AND revoked_at IS NULL
///     RETURNING token_hash)
/// SELECT (SELECT token_hash FROM revoked),
///        EXISTS (SELECT 1 FROM session.sessions WHERE id = $2)
/// ```
///
/// `revoked_at IS NULL` makes it idempotent and keeps the first revocation
/// time and reason; the `EXISTS` sees the row as it was before the update, so "already
/// revoked" and "not found" need no second round-trip. Written as a query
/// fragment with a static id, not `sql_query`, so its prepared statement is
/// cached per connection like the DSL queries are.
#[derive(QueryId)]
struct RevokeOne {
    id: Uuid,
    at: OffsetDateTime,
    reason: RevocationReason,
    /// The revoker's name.
    by: Option<String>,
}

impl Query for RevokeOne {
    type SqlType = (Nullable<Bytea>, Nullable<Bytea>);
}

impl QueryFragment<Pg> for RevokeOne {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("WITH revoked AS (UPDATE session.sessions SET revoked_at = ");
        out.push_bind_param::<Timestamptz, _>(&self.at)?;
        out.push_sql(", revocation_reason = ");
        out.push_bind_param::<Text, _>(self.reason.as_str())?;
        out.push_sql(", revoked_by = ");
        out.push_bind_param::<Nullable<Text>, _>(&self.by)?;
        out.push_sql(" WHERE id = ");
        out.push_bind_param::<diesel::sql_types::Uuid, _>(&self.id)?;
        out.push_sql(
            " AND revoked_at IS NULL RETURNING token_hash) \
             SELECT (SELECT token_hash FROM revoked), \
             (SELECT token_hash FROM session.sessions WHERE id = ",
        );
        out.push_bind_param::<diesel::sql_types::Uuid, _>(&self.id)?;
        out.push_sql(")");
        Ok(())
    }
}

#[async_trait]
impl SessionStore for PgSessionStore {
    #[tracing::instrument(name = "INSERT session.sessions", skip_all, fields(
        otel.kind = "client", db.system.name = "postgresql",
        db.operation.name = "INSERT", db.collection.name = "session.sessions"))]
    async fn insert(&self, session: &Session) -> Result<(), StoreError> {
        let mut connection = self.connection(Work::Write).await?;
        let statement = diesel::insert_into(sessions::table)
            .values(NewSessionRow::from(session))
            .execute(&mut connection);
        let outcome = self.bounded(Work::Write, statement).await;
        self.finish("insert session", outcome, connection).await?;
        // A create never wakes from its commit: a follower that has not
        // read it yet decides the token by reading its log anyway.
        self.waker.wake();
        Ok(())
    }

    #[tracing::instrument(name = "INSERT session.sessions", skip_all, fields(
        otel.kind = "client", db.system.name = "postgresql",
        db.operation.name = "INSERT", db.collection.name = "session.sessions"))]
    async fn insert_within_limit(
        &self,
        session: &Session,
        limit: SessionLimit,
    ) -> Result<LimitedInsert, StoreError> {
        let account = *session.account_id.as_uuid();
        let max = i64::from(limit.max.get());
        let (mut connection, wake) = self.change_transaction().await?;
        let statements = async {
            diesel::sql_query(LOCK_ACCOUNT)
                .bind::<diesel::sql_types::Integer, _>(ACCOUNT_LOCK_SPACE)
                .bind::<diesel::sql_types::Integer, _>(account_lock_key(session.account_id))
                .execute(&mut connection)
                .await?;
            // Read committed: each statement from here on sees every insert
            // committed by the holders of the lock before this one.
            let active: i64 = sessions::table
                .filter(sessions::account_id.eq(account))
                .filter(sessions::revoked_at.is_null())
                .count()
                .get_result(&mut connection)
                .await?;
            let excess = (active + 1 - max).max(0);
            if excess > 0 && limit.policy == LimitPolicy::Refuse {
                return Ok(None);
            }
            let evicted = if excess > 0 {
                diesel::sql_query(EVICT_LEAST_RECENTLY_SEEN)
                    .bind::<Timestamptz, _>(session.created_at)
                    .bind::<diesel::sql_types::Uuid, _>(account)
                    .bind::<diesel::sql_types::BigInt, _>(excess)
                    .bind::<Text, _>(RevocationReason::LIMIT.as_str())
                    .load::<RevokedRow>(&mut connection)
                    .await?
            } else {
                Vec::new()
            };
            diesel::insert_into(sessions::table)
                .values(NewSessionRow::from(session))
                .execute(&mut connection)
                .await?;
            Ok(Some(evicted))
        };
        let outcome = self.bounded(Work::Write, statements).await;
        let evicted = self
            .finish(
                "insert session within its account's limit",
                outcome,
                connection,
            )
            .await?;
        let Some(evicted) = evicted else {
            return Ok(LimitedInsert::Refused);
        };
        wake.changed(!evicted.is_empty());
        Ok(LimitedInsert::Inserted {
            evicted: evicted
                .into_iter()
                .map(|row| token_hash(row.id, &row.token_hash))
                .collect::<Result<_, _>>()?,
        })
    }

    #[tracing::instrument(name = "SELECT session.sessions", skip_all, fields(
        otel.kind = "client", db.system.name = "postgresql",
        db.operation.name = "SELECT", db.collection.name = "session.sessions"))]
    async fn find_active_by_hash(&self, hash: &TokenHash) -> Result<Option<Session>, StoreError> {
        let mut connection = self.connection(Work::Read).await?;
        let statement = sessions::table
            .filter(sessions::token_hash.eq(hash.as_bytes().as_slice()))
            .filter(sessions::revoked_at.is_null())
            .select(SessionRow::as_select())
            .get_result(&mut connection);
        let outcome = self
            .bounded(Work::Read, async { statement.await.optional() })
            .await;
        self.finish("find session by token hash", outcome, connection)
            .await?
            .map(SessionRow::into_session)
            .transpose()
    }

    #[tracing::instrument(name = "SELECT session.sessions", skip_all, fields(
        otel.kind = "client", db.system.name = "postgresql",
        db.operation.name = "SELECT", db.collection.name = "session.sessions"))]
    async fn get(&self, id: SessionId) -> Result<Option<Session>, StoreError> {
        let mut connection = self.connection(Work::Read).await?;
        let statement = sessions::table
            .find(id.as_uuid())
            .select(SessionRow::as_select())
            .get_result(&mut connection);
        let outcome = self
            .bounded(Work::Read, async { statement.await.optional() })
            .await;
        self.finish("get session", outcome, connection)
            .await?
            .map(SessionRow::into_session)
            .transpose()
    }

    #[tracing::instrument(name = "UPDATE session.sessions", skip_all, fields(
        otel.kind = "client", db.system.name = "postgresql",
        db.operation.name = "UPDATE", db.collection.name = "session.sessions"))]
    async fn revoke(
        &self,
        id: SessionId,
        at: OffsetDateTime,
        reason: RevocationReason,
        by: Option<Revoker>,
    ) -> Result<RevokeOutcome, StoreError> {
        let (mut connection, wake) = self.change().await?;
        let statement = RevokeOne {
            id: *id.as_uuid(),
            at,
            reason,
            by: by.map(|by| by.as_str().to_owned()),
        }
        .get_result::<(Option<Vec<u8>>, Option<Vec<u8>>)>(&mut connection);
        let outcome = self.bounded(Work::Write, statement).await;
        let (revoked_hash, stored_hash) =
            self.finish("revoke session", outcome, connection).await?;
        Ok(match (revoked_hash, stored_hash) {
            (Some(bytes), _) => {
                wake.changed(true);
                RevokeOutcome::Revoked {
                    token_hash: token_hash(*id.as_uuid(), &bytes)?,
                }
            }
            (None, Some(bytes)) => RevokeOutcome::AlreadyRevoked {
                token_hash: token_hash(*id.as_uuid(), &bytes)?,
            },
            (None, None) => RevokeOutcome::NotFound,
        })
    }

    #[tracing::instrument(name = "UPDATE session.sessions", skip_all, fields(
        otel.kind = "client", db.system.name = "postgresql",
        db.operation.name = "UPDATE", db.collection.name = "session.sessions"))]
    async fn revoke_all_for_account(
        &self,
        account: AccountId,
        except: Option<SessionId>,
        at: OffsetDateTime,
        reason: RevocationReason,
        by: Option<Revoker>,
    ) -> Result<Vec<TokenHash>, StoreError> {
        let (mut connection, wake) = self.change().await?;
        // One statement: the sessions it revokes are exactly the ones it returns.
        let statement = diesel::update(sessions::table)
            .filter(sessions::account_id.eq(account.as_uuid()))
            .filter(sessions::revoked_at.is_null())
            .filter(
                sessions::id
                    .nullable()
                    .is_distinct_from(except.map(|id| *id.as_uuid())),
            )
            .set((
                sessions::revoked_at.eq(at),
                sessions::revocation_reason.eq(reason.as_str()),
                sessions::revoked_by.eq(by.as_ref().map(Revoker::as_str)),
            ))
            .returning((sessions::id, sessions::token_hash))
            .get_results::<(Uuid, Vec<u8>)>(&mut connection);
        let outcome = self.bounded(Work::Write, statement).await;
        let revoked = self
            .finish("revoke all sessions of an account", outcome, connection)
            .await?;
        if !revoked.is_empty() {
            wake.changed(true);
        }
        revoked
            .into_iter()
            .map(|(id, bytes)| token_hash(id, &bytes))
            .collect()
    }

    #[tracing::instrument(name = "SELECT session.sessions", skip_all, fields(
        otel.kind = "client", db.system.name = "postgresql",
        db.operation.name = "SELECT", db.collection.name = "session.sessions"))]
    async fn list_for_account(
        &self,
        account: AccountId,
        scope: ListScope,
        page: PageRequest,
    ) -> Result<AccountPage, StoreError> {
        let mut connection = self.connection(Work::Read).await?;
        // Served by `sessions_account_created_idx` (account_id, created_at
        // DESC, id DESC): the keyset condition is a range scan of it. Only
        // rows whose `created_at` the domain accepts are read: a row's
        // `created_at` is where the next page starts, and one out of range
        // (`'infinity'`, a year past 9999) names no place a cursor can hold.
        // Such a row is in no list; the schema refuses new ones.
        let mut query = sessions::table
            .filter(sessions::account_id.eq(*account.as_uuid()))
            .filter(sessions::created_at.between(EARLIEST, LATEST))
            .order((sessions::created_at.desc(), sessions::id.desc()))
            .limit(i64::from(page.limit.get()) + 1)
            .select(SessionRow::as_select())
            .into_boxed();
        if scope == ListScope::Active {
            query = query.filter(sessions::revoked_at.is_null());
        }
        if let Some(after) = page.after {
            let id = *after.id.as_uuid();
            query = query.filter(
                sessions::created_at
                    .lt(after.created_at)
                    .or(sessions::created_at
                        .eq(after.created_at)
                        .and(sessions::id.lt(id))),
            );
        }
        let outcome = self.bounded(Work::Read, query.load(&mut connection)).await;
        let rows = self
            .finish("list sessions of an account", outcome, connection)
            .await?
            .into_iter()
            .map(|row| {
                let position = row.list_position()?;
                Ok((position, row.into_stored().into_session(SESSIONS_TABLE)))
            })
            .collect::<Result<Vec<_>, InvalidRow>>()?;
        Ok(AccountPage::from_rows(rows, page.limit))
    }

    #[tracing::instrument(name = "SELECT session.sessions", skip_all, fields(
        otel.kind = "client", db.system.name = "postgresql",
        db.operation.name = "SELECT", db.collection.name = "session.sessions"))]
    async fn active_page(
        &self,
        after: Option<SessionId>,
        limit: u32,
    ) -> Result<ActivePage, StoreError> {
        let mut connection = self.connection(Work::Read).await?;
        // Keyset pagination over the partial index of active rows: each page
        // is an index range scan, however deep into the table it starts.
        let active = sessions::table
            .filter(sessions::revoked_at.is_null())
            .order(sessions::id.asc())
            .limit(i64::from(limit))
            .select(SessionRow::as_select());
        let statement = async {
            match after {
                None => active.load(&mut connection).await,
                Some(after) => {
                    active
                        .filter(sessions::id.gt(after.as_uuid()))
                        .load(&mut connection)
                        .await
                }
            }
        };
        let outcome = self.bounded(Work::Read, statement).await;
        let rows = self
            .finish("read a page of active sessions", outcome, connection)
            .await?;
        Ok(active_page(rows, limit))
    }

    #[tracing::instrument(name = "SELECT session.sessions", skip_all, fields(
        otel.kind = "client", db.system.name = "postgresql",
        db.operation.name = "SELECT", db.collection.name = "session.sessions"))]
    async fn active_identity_page(
        &self,
        after: Option<SessionId>,
        limit: u32,
    ) -> Result<IdentityPage, StoreError> {
        let mut connection = self.connection(Work::Read).await?;
        // The warm's keyset over the same partial index, three columns wide.
        let active = sessions::table
            .filter(sessions::revoked_at.is_null())
            .order(sessions::id.asc())
            .limit(i64::from(limit))
            .select((sessions::id, sessions::account_id, sessions::token_hash));
        let statement = async {
            match after {
                None => active.load(&mut connection).await,
                Some(after) => {
                    active
                        .filter(sessions::id.gt(after.as_uuid()))
                        .load(&mut connection)
                        .await
                }
            }
        };
        let outcome = self.bounded(Work::Read, statement).await;
        let rows: Vec<(Uuid, Uuid, Vec<u8>)> = self
            .finish("read a page of active identities", outcome, connection)
            .await?;
        Ok(identity_page(rows, limit))
    }

    /// One binary `COPY` (`copy.rs`), not keyset pages.
    #[tracing::instrument(name = "COPY session.sessions", skip_all, fields(
        otel.kind = "client", db.system.name = "postgresql",
        db.operation.name = "COPY", db.collection.name = "session.sessions"))]
    async fn active_identities(
        &self,
        page_size: u32,
        pages: tokio::sync::mpsc::Sender<Result<IdentityPage, StoreError>>,
    ) {
        self.copy_active_identities(page_size, pages).await;
    }

    #[tracing::instrument(name = "SELECT session.sessions", skip_all, fields(
        otel.kind = "client", db.system.name = "postgresql",
        db.operation.name = "SELECT", db.collection.name = "session.sessions"))]
    async fn health_check(&self) -> Result<(), StoreError> {
        let mut connection = self.connection(Work::Read).await?;
        let outcome = self
            .bounded(Work::Read, connection.batch_execute("SELECT 1"))
            .await;
        self.finish("health check", outcome, connection).await
    }

    #[tracing::instrument(name = "INSERT session.session_activity", skip_all, fields(
        otel.kind = "client", db.system.name = "postgresql",
        db.operation.name = "INSERT", db.collection.name = "session.session_activity"))]
    async fn record_last_seen(&self, seen: &[SeenAt]) -> Result<(), StoreError> {
        if seen.is_empty() {
            return Ok(());
        }
        let ids: Vec<Uuid> = seen.iter().map(|mark| *mark.id.as_uuid()).collect();
        let times: Vec<OffsetDateTime> = seen.iter().map(|mark| mark.at).collect();
        let mut connection = self.connection(Work::Write).await?;
        let statement = diesel::sql_query(RECORD_LAST_SEEN)
            .bind::<Array<diesel::sql_types::Uuid>, _>(ids)
            .bind::<Array<Timestamptz>, _>(times)
            .execute(&mut connection);
        let outcome = self.bounded(Work::Write, statement).await;
        // No wake-up: activity is not a change the log reports.
        self.finish("record last seen", outcome, connection)
            .await
            .map(drop)
    }

    #[tracing::instrument(name = "SELECT session.session_activity", skip_all, fields(
        otel.kind = "client", db.system.name = "postgresql",
        db.operation.name = "SELECT", db.collection.name = "session.session_activity"))]
    async fn last_seen(&self, ids: &[SessionId]) -> Result<Vec<SeenAt>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<Uuid> = ids.iter().map(|id| *id.as_uuid()).collect();
        let mut connection = self.connection(Work::Read).await?;
        let statement = diesel::sql_query(
            "SELECT session_id, last_seen_at FROM session.session_activity \
             WHERE session_id = ANY($1)",
        )
        .bind::<Array<diesel::sql_types::Uuid>, _>(ids)
        .load::<ActivityRow>(&mut connection);
        let outcome = self.bounded(Work::Read, statement).await;
        Ok(self
            .finish("read last seen", outcome, connection)
            .await?
            .into_iter()
            .filter_map(seen_at)
            .collect())
    }

    #[tracing::instrument(name = "SELECT session.sessions", skip_all, fields(
        otel.kind = "client", db.system.name = "postgresql",
        db.operation.name = "SELECT", db.collection.name = "session.sessions"))]
    async fn idle_sessions(
        &self,
        cutoff: OffsetDateTime,
        after: Option<SessionId>,
        limit: u32,
    ) -> Result<Vec<SessionId>, StoreError> {
        #[derive(QueryableByName)]
        struct IdRow {
            #[diesel(sql_type = diesel::sql_types::Uuid)]
            id: Uuid,
        }
        let mut connection = self.connection(Work::Read).await?;
        // A dry run takes no lock: `$1` only stands where the job's is.
        let statement = diesel::sql_query(format!(
            "WITH worker AS (SELECT $1::boolean AS held) {}",
            idle(after.is_some())
        ))
        .bind::<diesel::sql_types::Bool, _>(true)
        .bind::<Nullable<diesel::sql_types::Uuid>, _>(after.map(|id| *id.as_uuid()))
        .bind::<Timestamptz, _>(cutoff)
        .bind::<diesel::sql_types::BigInt, _>(i64::from(limit))
        .load::<IdRow>(&mut connection);
        let outcome = self.bounded(Work::Read, statement).await;
        Ok(self
            .finish("find idle sessions", outcome, connection)
            .await?
            .into_iter()
            .map(|row| SessionId::from_uuid(row.id))
            .collect())
    }

    #[tracing::instrument(name = "UPDATE session.sessions", skip_all, fields(
        otel.kind = "client", db.system.name = "postgresql",
        db.operation.name = "UPDATE", db.collection.name = "session.sessions"))]
    async fn revoke_idle(
        &self,
        cutoff: OffsetDateTime,
        after: Option<SessionId>,
        limit: u32,
        at: OffsetDateTime,
        reason: RevocationReason,
    ) -> Result<Exclusive<Vec<RevokedSession>>, StoreError> {
        let (mut connection, wake) = self.change().await?;
        let statement = diesel::sql_query(job_batch(
            &idle(after.is_some()),
            "UPDATE session.sessions AS s SET revoked_at = $5, revocation_reason = $6 \
             FROM chosen WHERE s.id = chosen.id AND s.revoked_at IS NULL",
        ))
        .bind::<diesel::sql_types::BigInt, _>(IDLE_JOB_LOCK)
        .bind::<Nullable<diesel::sql_types::Uuid>, _>(after.map(|id| *id.as_uuid()))
        .bind::<Timestamptz, _>(cutoff)
        .bind::<diesel::sql_types::BigInt, _>(i64::from(limit))
        .bind::<Timestamptz, _>(at)
        .bind::<Text, _>(reason.as_str())
        .load::<TakenRow>(&mut connection);
        let outcome = self.bounded(Work::Write, statement).await;
        let rows = self
            .finish("revoke idle sessions", outcome, connection)
            .await?;
        let Exclusive::Done(taken) = taken(rows) else {
            return Ok(Exclusive::Busy);
        };
        if !taken.is_empty() {
            wake.changed(true);
        }
        revoked_sessions(taken).map(Exclusive::Done)
    }

    #[tracing::instrument(name = "SELECT session.not_before", skip_all, fields(
        otel.kind = "client", db.system.name = "postgresql",
        db.operation.name = "SELECT", db.collection.name = "session.not_before"))]
    async fn not_before(&self) -> Result<NotBefore, StoreError> {
        let mut connection = self.connection(Work::Read).await?;
        let statement = diesel::sql_query(READ_NOT_BEFORE).load::<NotBeforeRow>(&mut connection);
        let outcome = self.bounded(Work::Read, statement).await;
        let rows = self
            .finish("read the not-before mark", outcome, connection)
            .await?;
        Ok(rows
            .into_iter()
            .next()
            .map(|row| StoredNotBefore {
                mark: Some(row.mark.unix_micros()),
                raised_by: row.raised_by,
                swept_through: row.swept_through.map(RawInstant::unix_micros),
            })
            .unwrap_or_default()
            .into_not_before(NOT_BEFORE_TABLE))
    }

    #[tracing::instrument(name = "INSERT session.not_before", skip_all, fields(
        otel.kind = "client", db.system.name = "postgresql",
        db.operation.name = "INSERT", db.collection.name = "session.not_before"))]
    async fn raise_not_before(
        &self,
        at: OffsetDateTime,
        by: Option<Revoker>,
    ) -> Result<OffsetDateTime, StoreError> {
        let (mut connection, wake) = self.change().await?;
        let statement = diesel::sql_query(RAISE_NOT_BEFORE)
            .bind::<Timestamptz, _>(at)
            .bind::<Nullable<Text>, _>(by.as_ref().map(Revoker::as_str))
            .get_result::<RaisedRow>(&mut connection);
        let outcome = self.bounded(Work::Write, statement).await;
        let raised = self
            .finish("raise the not-before mark", outcome, connection)
            .await?;
        // Logged by the table's trigger when it moved: wake the followers.
        wake.changed(true);
        stored_instant(raised.mark.unix_micros()).ok_or_else(|| {
            let reason = session_core::validation::ValidationError::new(
                session_core::validation::Field::NotBefore,
                Reason::InstantOutOfRange,
            );
            InvalidRow::new(NOT_BEFORE_TABLE, "mark", RowId::Only, reason).into()
        })
    }

    #[tracing::instrument(name = "UPDATE session.not_before", skip_all, fields(
        otel.kind = "client", db.system.name = "postgresql",
        db.operation.name = "UPDATE", db.collection.name = "session.not_before"))]
    async fn record_not_before_swept(&self, mark: OffsetDateTime) -> Result<(), StoreError> {
        let mut connection = self.connection(Work::Write).await?;
        let statement = diesel::sql_query(RECORD_NOT_BEFORE_SWEPT)
            .bind::<Timestamptz, _>(mark)
            .execute(&mut connection);
        let outcome = self.bounded(Work::Write, statement).await;
        self.finish("record the not-before sweep", outcome, connection)
            .await
            .map(drop)
    }

    #[tracing::instrument(name = "UPDATE session.sessions", skip_all, fields(
        otel.kind = "client", db.system.name = "postgresql",
        db.operation.name = "UPDATE", db.collection.name = "session.sessions"))]
    async fn revoke_marked(
        &self,
        mark: OffsetDateTime,
        after: Option<SessionId>,
        limit: u32,
        at: OffsetDateTime,
        reason: RevocationReason,
        by: Option<Revoker>,
    ) -> Result<Exclusive<Vec<RevokedSession>>, StoreError> {
        // Marked: created before the mark, or with an id minted before it
        // (`$7`, the first UUIDv7 of the mark's millisecond or after): both
        // conditions on a range scan of `sessions_active_id_idx`.
        let chosen = format!(
            "SELECT s.id FROM session.sessions AS s \
             WHERE (SELECT held FROM worker) AND s.revoked_at IS NULL AND {} \
               AND (s.created_at < $3 OR s.id < $7) \
             ORDER BY s.id LIMIT $4",
            after_condition(after.is_some())
        );
        let (mut connection, wake) = self.change().await?;
        let statement = diesel::sql_query(job_batch(
            &chosen,
            "UPDATE session.sessions AS s \
             SET revoked_at = $5, revocation_reason = $6, revoked_by = $8 \
             FROM chosen WHERE s.id = chosen.id AND s.revoked_at IS NULL",
        ))
        .bind::<diesel::sql_types::BigInt, _>(NOT_BEFORE_JOB_LOCK)
        .bind::<Nullable<diesel::sql_types::Uuid>, _>(after.map(|id| *id.as_uuid()))
        .bind::<Timestamptz, _>(mark)
        .bind::<diesel::sql_types::BigInt, _>(i64::from(limit))
        .bind::<Timestamptz, _>(at)
        .bind::<Text, _>(reason.as_str())
        .bind::<diesel::sql_types::Uuid, _>(first_id_not_marked(mark))
        .bind::<Nullable<Text>, _>(by.as_ref().map(Revoker::as_str))
        .load::<TakenRow>(&mut connection);
        let outcome = self.bounded(Work::Write, statement).await;
        let rows = self
            .finish(
                "revoke the sessions before the not-before mark",
                outcome,
                connection,
            )
            .await?;
        let Exclusive::Done(taken) = taken(rows) else {
            return Ok(Exclusive::Busy);
        };
        if !taken.is_empty() {
            wake.changed(true);
        }
        revoked_sessions(taken).map(Exclusive::Done)
    }

    #[tracing::instrument(name = "DELETE session.sessions", skip_all, fields(
        otel.kind = "client", db.system.name = "postgresql",
        db.operation.name = "DELETE", db.collection.name = "session.sessions"))]
    async fn purge_revoked(
        &self,
        before: OffsetDateTime,
        after: Option<SessionId>,
        limit: u32,
        action: RetentionAction,
    ) -> Result<Exclusive<Vec<SessionId>>, StoreError> {
        // Revoked rows are in no cache: the change log's triggers log
        // neither their deletion nor their erasure (they log rows that
        // leave or change in the active set), and the activity trigger
        // deletes a deleted session's activity.
        let (holding, change) = match action {
            RetentionAction::Delete => (
                "",
                "DELETE FROM session.sessions AS s USING chosen WHERE s.id = chosen.id",
            ),
            RetentionAction::Erase => (
                "AND (s.user_agent IS NOT NULL OR s.ip IS NOT NULL)",
                "UPDATE session.sessions AS s SET user_agent = NULL, ip = NULL \
                 FROM chosen WHERE s.id = chosen.id",
            ),
        };
        let chosen = format!(
            "SELECT s.id FROM session.sessions AS s \
             WHERE (SELECT held FROM worker) AND {} \
               AND s.revoked_at < $3 {holding} \
             ORDER BY s.id LIMIT $4",
            after_condition(after.is_some())
        );
        let mut connection = self.connection(Work::Write).await?;
        let statement = diesel::sql_query(job_batch(&chosen, change))
            .bind::<diesel::sql_types::BigInt, _>(RETENTION_JOB_LOCK)
            .bind::<Nullable<diesel::sql_types::Uuid>, _>(after.map(|id| *id.as_uuid()))
            .bind::<Timestamptz, _>(before)
            .bind::<diesel::sql_types::BigInt, _>(i64::from(limit))
            .load::<TakenRow>(&mut connection);
        let outcome = self.bounded(Work::Write, statement).await;
        let rows = self
            .finish("apply retention to revoked sessions", outcome, connection)
            .await?;
        Ok(match taken(rows) {
            Exclusive::Done(taken) => Exclusive::Done(
                taken
                    .into_iter()
                    .map(|(id, _)| SessionId::from_uuid(id))
                    .collect(),
            ),
            Exclusive::Busy => Exclusive::Busy,
        })
    }
}
