//! [`SqliteSessionStore`]: the [`SessionStore`] port over one SQLite file.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use deadpool::unmanaged::Pool;
use diesel::dsl::exists;
use diesel::prelude::*;
use session_core::config::{LimitPolicy, SessionLimit};
use session_core::port::store::{
    ActivePage, EARLIEST_STORED_MICROS, Exclusive, IdentityPage, LATEST_STORED_MICROS,
    LimitedInsert, NotBefore, RetentionAction, RevokeOutcome, RevokedSession, SeenAt, SessionStore,
    StoreError, StoredNotBefore, first_id_not_marked,
};
use session_core::token::TokenHash;
use session_core::{
    AccountId, AccountPage, ListScope, PageRequest, RevocationReason, Revoker, Session, SessionId,
};
use time::OffsetDateTime;
use tokio::sync::Mutex;

use crate::error::{join_error, store_error};
use crate::lock::DatabaseLock;
use crate::open::{OpenError, SqliteOptions, open_blocking};
use crate::row::{self, NewSessionRow, SessionRow};
use crate::schema::sessions;

/// Sessions kept in one SQLite file.
///
/// Writes go through a single connection, one at a time, so they never
/// contend for SQLite's write lock within the process; reads use a small pool
/// of other connections and, thanks to the write-ahead log, never wait for a
/// write. All SQLite calls run on Tokio's blocking pool.
pub struct SqliteSessionStore {
    path: PathBuf,
    /// Owned guards of this mutex move into blocking tasks, so a write whose
    /// caller stopped waiting still finishes before the next one starts.
    writer: Arc<Mutex<Writer>>,
    /// Writes begun and not finished: the one running and those waiting.
    writes: Arc<AtomicUsize>,
    readers: Pool<SqliteConnection>,
    migrations_applied: Vec<String>,
}

/// The one connection that writes, and the lock that makes this process the
/// file's only writer. They live together, so the lock is held until the last
/// write (even one whose caller went away) has finished.
struct Writer {
    // Declared first: fields drop in order, so the connection closes before
    // the lock is released.
    connection: SqliteConnection,
    _lock: DatabaseLock,
}

impl fmt::Debug for SqliteSessionStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteSessionStore")
            .field("path", &self.path)
            .field("readers", &self.readers.status().max_size)
            .finish_non_exhaustive()
    }
}

impl SqliteSessionStore {
    /// Opens the session database at `path` with default [`SqliteOptions`]:
    /// creates the file and its directory if missing, locks the file for this
    /// store (through `<path>.lock`, until the store is dropped), and applies
    /// pending migrations.
    ///
    /// # Errors
    ///
    /// [`OpenError`], naming the file: another store (in this process or
    /// another) has it open ([`OpenError::Locked`]), it cannot be created or
    /// opened, is not a SQLite database, or was written by a newer version.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, OpenError> {
        Self::open_with(path, SqliteOptions::default()).await
    }

    /// Opens the session database at `path` with `options`.
    ///
    /// # Errors
    ///
    /// As [`open`](Self::open), and [`OpenError::PendingMigrations`] if
    /// migrating is turned off and the schema is behind.
    pub async fn open_with(
        path: impl AsRef<Path>,
        options: SqliteOptions,
    ) -> Result<Self, OpenError> {
        let path = path.as_ref().to_path_buf();
        let task_path = path.clone();
        let opened = tokio::task::spawn_blocking(move || open_blocking(&task_path, &options))
            .await
            .map_err(|source| OpenError::Interrupted {
                path: path.clone(),
                source,
            })??;
        tracing::debug!(
            path = %path.display(),
            migrations_applied = ?opened.migrations_applied,
            "opened the session database"
        );
        Ok(Self {
            path,
            writer: Arc::new(Mutex::new(Writer {
                connection: opened.writer,
                _lock: opened.lock,
            })),
            writes: Arc::new(AtomicUsize::new(0)),
            readers: Pool::from(opened.readers),
            migrations_applied: opened.migrations_applied,
        })
    }

    /// The database file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The schema migrations this open applied, oldest first; empty when the
    /// file was already up to date. For the service to report at start.
    #[must_use]
    pub fn migrations_applied(&self) -> &[String] {
        &self.migrations_applied
    }

    /// How the connections are used now, for metrics: the reader pool, and
    /// the single writer connection (in use while a write runs; later
    /// writes wait for it). Atomic reads only, no lock.
    #[must_use]
    pub fn pool_status(&self) -> SqlitePoolStatus {
        let readers = self.readers.status();
        let writes = self.writes.load(Ordering::Relaxed);
        SqlitePoolStatus {
            readers: PoolStatus {
                max: readers.max_size,
                open: readers.size,
                in_use: readers.size.saturating_sub(readers.available),
                waiting: readers.waiting,
            },
            writer: PoolStatus {
                max: 1,
                open: 1,
                in_use: writes.min(1),
                waiting: writes.saturating_sub(1),
            },
        }
    }

    /// Runs `op` on the writer connection, after every earlier write.
    pub(crate) async fn write<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut SqliteConnection) -> Result<T, StoreError> + Send + 'static,
    {
        // Counted until the write ends, even one whose caller went away.
        let counted = WriteInFlight::start(&self.writes);
        let mut writer = Arc::clone(&self.writer).lock_owned().await;
        tokio::task::spawn_blocking(move || {
            let _counted = counted;
            op(&mut writer.connection)
        })
        .await
        .map_err(join_error)?
    }

    /// Runs `op` on a reader connection.
    pub(crate) async fn read<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut SqliteConnection) -> Result<T, StoreError> + Send + 'static,
    {
        let mut conn = self
            .readers
            .get()
            .await
            .map_err(|err| StoreError::Unavailable(Box::new(err)))?;
        tokio::task::spawn_blocking(move || op(&mut conn))
            .await
            .map_err(join_error)?
    }
}

/// One write counted in [`SqliteSessionStore::pool_status`] until dropped.
struct WriteInFlight(Arc<AtomicUsize>);

impl WriteInFlight {
    fn start(writes: &Arc<AtomicUsize>) -> Self {
        writes.fetch_add(1, Ordering::Relaxed);
        Self(Arc::clone(writes))
    }
}

impl Drop for WriteInFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How a group of connections is used at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStatus {
    /// The most connections the group holds.
    pub max: usize,
    /// Connections open now.
    pub open: usize,
    /// Connections a store call is using now.
    pub in_use: usize,
    /// Store calls waiting for a connection now.
    pub waiting: usize,
}

/// The SQLite store's connections at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SqlitePoolStatus {
    /// The pool of read-only connections.
    pub readers: PoolStatus,
    /// The one connection every write goes through, in order.
    pub writer: PoolStatus,
}

/// Revokes, with reason `?4` (`limit`), the `?3` least recently seen active
/// sessions of account `?2` at `?1`: by last-seen time, a session never seen
/// counting as seen at its creation, then by creation time, then by id.
const EVICT_LEAST_RECENTLY_SEEN: &str = "\
    UPDATE sessions SET revoked_at = ?1, revocation_reason = ?4 \
    WHERE id IN ( \
        SELECT s.id FROM sessions AS s \
        LEFT JOIN session_activity AS a ON a.session_id = s.id \
        WHERE s.account_id = ?2 AND s.revoked_at IS NULL \
        ORDER BY coalesce(a.last_seen_at, s.created_at), s.created_at, s.id \
        LIMIT ?3) \
    RETURNING token_hash";

/// The sessions a revoking batch's `RETURNING` gave, in id order, as the
/// port reports them (RETURNING's order is SQLite's).
fn revoked_in_id_order(rows: &[row::TakenRow]) -> Result<Vec<RevokedSession>, StoreError> {
    let mut revoked = rows
        .iter()
        .map(|taken| {
            Ok(RevokedSession {
                id: row::session_id(&taken.id)?,
                token_hash: row::token_hash(taken.token_hash.as_deref().unwrap_or_default())?,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    revoked.sort_by_key(|session| session.id);
    Ok(revoked)
}

fn id_bytes(id: SessionId) -> Vec<u8> {
    id.as_uuid().as_bytes().to_vec()
}

fn account_bytes(account: AccountId) -> Vec<u8> {
    account.as_uuid().as_bytes().to_vec()
}

#[async_trait]
impl SessionStore for SqliteSessionStore {
    #[tracing::instrument(name = "INSERT sessions", skip_all, fields(
        otel.kind = "client", db.system.name = "sqlite",
        db.operation.name = "INSERT", db.collection.name = "sessions"))]
    async fn insert(&self, session: &Session) -> Result<(), StoreError> {
        let row = NewSessionRow::new(session)?;
        self.write(move |conn| {
            diesel::insert_into(sessions::table)
                .values(&row)
                .execute(conn)
                .map(drop)
                .map_err(store_error)
        })
        .await
    }

    #[tracing::instrument(name = "INSERT sessions", skip_all, fields(
        otel.kind = "client", db.system.name = "sqlite",
        db.operation.name = "INSERT", db.collection.name = "sessions"))]
    async fn insert_within_limit(
        &self,
        session: &Session,
        limit: SessionLimit,
    ) -> Result<LimitedInsert, StoreError> {
        let row = NewSessionRow::new(session)?;
        let account = account_bytes(session.account_id);
        let at = row::micros(session.created_at)?;
        let max = i64::from(limit.max.get());
        let evicted: Option<Vec<row::HashRow>> = self
            .write(move |conn| {
                // IMMEDIATE: the write lock is taken at BEGIN, so no other
                // connection (another process, despite the file lock) can
                // write between the count and the insert.
                conn.immediate_transaction(|conn| {
                    let active: i64 = sessions::table
                        .filter(sessions::account_id.eq(&account))
                        .filter(sessions::revoked_at.is_null())
                        .count()
                        .get_result(conn)?;
                    let excess = (active + 1 - max).max(0);
                    if excess > 0 && limit.policy == LimitPolicy::Refuse {
                        return Ok(None);
                    }
                    let evicted = if excess > 0 {
                        diesel::sql_query(EVICT_LEAST_RECENTLY_SEEN)
                            .bind::<diesel::sql_types::BigInt, _>(at)
                            .bind::<diesel::sql_types::Binary, _>(&account)
                            .bind::<diesel::sql_types::BigInt, _>(excess)
                            .bind::<diesel::sql_types::Text, _>(RevocationReason::LIMIT.as_str())
                            .load(conn)?
                    } else {
                        Vec::new()
                    };
                    diesel::insert_into(sessions::table)
                        .values(&row)
                        .execute(conn)?;
                    Ok(Some(evicted))
                })
                .map_err(store_error)
            })
            .await?;
        let Some(evicted) = evicted else {
            return Ok(LimitedInsert::Refused);
        };
        Ok(LimitedInsert::Inserted {
            evicted: evicted
                .iter()
                .map(|row| row::token_hash(&row.token_hash))
                .collect::<Result<_, _>>()?,
        })
    }

    #[tracing::instrument(name = "SELECT sessions", skip_all, fields(
        otel.kind = "client", db.system.name = "sqlite",
        db.operation.name = "SELECT", db.collection.name = "sessions"))]
    async fn find_active_by_hash(&self, hash: &TokenHash) -> Result<Option<Session>, StoreError> {
        let hash = hash.as_bytes().to_vec();
        self.read(move |conn| {
            sessions::table
                .filter(sessions::token_hash.eq(hash))
                .filter(sessions::revoked_at.is_null())
                .select(SessionRow::as_select())
                .first(conn)
                .optional()
                .map_err(store_error)?
                .map(row::session)
                .transpose()
        })
        .await
    }

    #[tracing::instrument(name = "SELECT sessions", skip_all, fields(
        otel.kind = "client", db.system.name = "sqlite",
        db.operation.name = "SELECT", db.collection.name = "sessions"))]
    async fn get(&self, id: SessionId) -> Result<Option<Session>, StoreError> {
        let id = id_bytes(id);
        self.read(move |conn| {
            sessions::table
                .filter(sessions::id.eq(id))
                .select(SessionRow::as_select())
                .first(conn)
                .optional()
                .map_err(store_error)?
                .map(row::session)
                .transpose()
        })
        .await
    }

    #[tracing::instrument(name = "UPDATE sessions", skip_all, fields(
        otel.kind = "client", db.system.name = "sqlite",
        db.operation.name = "UPDATE", db.collection.name = "sessions"))]
    async fn revoke(
        &self,
        id: SessionId,
        at: OffsetDateTime,
        reason: RevocationReason,
        by: Option<Revoker>,
    ) -> Result<RevokeOutcome, StoreError> {
        let id = id_bytes(id);
        let at = row::micros(at)?;
        let reason = reason.as_str().to_owned();
        let by = by.map(|by| by.as_str().to_owned());
        let (revoked, stored) = self
            .write(move |conn| {
                // One transaction, so "not revoked by this call" and "exists"
                // describe the same state even if another process writes.
                conn.immediate_transaction(|conn| {
                    let revoked: Option<Vec<u8>> = diesel::update(
                        sessions::table
                            .filter(sessions::id.eq(&id))
                            .filter(sessions::revoked_at.is_null()),
                    )
                    .set((
                        sessions::revoked_at.eq(at),
                        sessions::revocation_reason.eq(&reason),
                        sessions::revoked_by.eq(&by),
                    ))
                    .returning(sessions::token_hash)
                    .get_result(conn)
                    .optional()?;
                    if revoked.is_some() {
                        return Ok((revoked, None));
                    }
                    let stored: Option<Vec<u8>> = sessions::table
                        .filter(sessions::id.eq(&id))
                        .select(sessions::token_hash)
                        .get_result(conn)
                        .optional()?;
                    Ok((None, stored))
                })
                .map_err(store_error)
            })
            .await?;
        Ok(match (revoked, stored) {
            (Some(hash), _) => RevokeOutcome::Revoked {
                token_hash: row::token_hash(&hash)?,
            },
            (None, Some(hash)) => RevokeOutcome::AlreadyRevoked {
                token_hash: row::token_hash(&hash)?,
            },
            (None, None) => RevokeOutcome::NotFound,
        })
    }

    #[tracing::instrument(name = "UPDATE sessions", skip_all, fields(
        otel.kind = "client", db.system.name = "sqlite",
        db.operation.name = "UPDATE", db.collection.name = "sessions"))]
    async fn revoke_all_for_account(
        &self,
        account: AccountId,
        except: Option<SessionId>,
        at: OffsetDateTime,
        reason: RevocationReason,
        by: Option<Revoker>,
    ) -> Result<Vec<TokenHash>, StoreError> {
        let account = account_bytes(account);
        let except = except.map(id_bytes);
        let at = row::micros(at)?;
        let reason = reason.as_str().to_owned();
        let by = by.map(|by| by.as_str().to_owned());
        let hashes: Vec<Vec<u8>> = self
            .write(move |conn| {
                // One statement: every matching session is revoked, or none.
                let active = sessions::table
                    .filter(sessions::account_id.eq(account))
                    .filter(sessions::revoked_at.is_null());
                let revoke = (
                    sessions::revoked_at.eq(at),
                    sessions::revocation_reason.eq(&reason),
                    sessions::revoked_by.eq(&by),
                );
                match except {
                    Some(except) => diesel::update(active.filter(sessions::id.ne(except)))
                        .set(revoke)
                        .returning(sessions::token_hash)
                        .get_results(conn),
                    None => diesel::update(active)
                        .set(revoke)
                        .returning(sessions::token_hash)
                        .get_results(conn),
                }
                .map_err(store_error)
            })
            .await?;
        hashes.iter().map(|hash| row::token_hash(hash)).collect()
    }

    #[tracing::instrument(name = "SELECT sessions", skip_all, fields(
        otel.kind = "client", db.system.name = "sqlite",
        db.operation.name = "SELECT", db.collection.name = "sessions"))]
    async fn list_for_account(
        &self,
        account: AccountId,
        scope: ListScope,
        page: PageRequest,
    ) -> Result<AccountPage, StoreError> {
        let account = account_bytes(account);
        let after = page
            .after
            .map(|after| Ok::<_, StoreError>((row::micros(after.created_at)?, id_bytes(after.id))))
            .transpose()?;
        self.read(move |conn| {
            // Served by `sessions_account_newest_first` (account_id,
            // created_at DESC, id DESC): the keyset condition is a range
            // scan of it. Only rows whose `created_at` the domain accepts
            // are read: a row's `created_at` is where the next page starts,
            // and one out of range names no place a cursor can hold. Such a
            // row is in no list; the schema refuses new ones.
            let mut query = sessions::table
                .filter(sessions::account_id.eq(account))
                .filter(sessions::created_at.between(EARLIEST_STORED_MICROS, LATEST_STORED_MICROS))
                .select(SessionRow::as_select())
                .order((sessions::created_at.desc(), sessions::id.desc()))
                .limit(i64::from(page.limit.get()) + 1)
                .into_boxed();
            if scope == ListScope::Active {
                query = query.filter(sessions::revoked_at.is_null());
            }
            if let Some((created_at, id)) = after {
                query = query.filter(
                    sessions::created_at
                        .lt(created_at)
                        .or(sessions::created_at.eq(created_at).and(sessions::id.lt(id))),
                );
            }
            row::account_page(query.load(conn).map_err(store_error)?, page.limit)
        })
        .await
    }

    #[tracing::instrument(name = "SELECT sessions", skip_all, fields(
        otel.kind = "client", db.system.name = "sqlite",
        db.operation.name = "SELECT", db.collection.name = "sessions"))]
    async fn active_page(
        &self,
        after: Option<SessionId>,
        limit: u32,
    ) -> Result<ActivePage, StoreError> {
        let after = after.map(id_bytes);
        self.read(move |conn| {
            let mut query = sessions::table
                .filter(sessions::revoked_at.is_null())
                .select(SessionRow::as_select())
                .order(sessions::id.asc())
                .limit(i64::from(limit))
                .into_boxed();
            if let Some(after) = after {
                // BLOBs compare bytewise, and big-endian UUID bytes sort in UUID order.
                query = query.filter(sessions::id.gt(after));
            }
            Ok(row::active_page(
                query.load(conn).map_err(store_error)?,
                limit,
            ))
        })
        .await
    }

    #[tracing::instrument(name = "SELECT sessions", skip_all, fields(
        otel.kind = "client", db.system.name = "sqlite",
        db.operation.name = "SELECT", db.collection.name = "sessions"))]
    async fn active_identity_page(
        &self,
        after: Option<SessionId>,
        limit: u32,
    ) -> Result<IdentityPage, StoreError> {
        let after = after.map(id_bytes);
        self.read(move |conn| {
            let mut query = sessions::table
                .filter(sessions::revoked_at.is_null())
                .select((sessions::id, sessions::account_id, sessions::token_hash))
                .order(sessions::id.asc())
                .limit(i64::from(limit))
                .into_boxed();
            if let Some(after) = after {
                query = query.filter(sessions::id.gt(after));
            }
            Ok(row::identity_page(
                query.load::<row::IdentityRow>(conn).map_err(store_error)?,
                limit,
            ))
        })
        .await
    }

    #[tracing::instrument(name = "SELECT sessions", skip_all, fields(
        otel.kind = "client", db.system.name = "sqlite",
        db.operation.name = "SELECT", db.collection.name = "sessions"))]
    async fn health_check(&self) -> Result<(), StoreError> {
        // Reads the table, so a file that went away or turned unreadable fails.
        self.read(|conn| {
            diesel::select(exists(sessions::table.select(sessions::id)))
                .get_result::<bool>(conn)
                .map(drop)
                .map_err(store_error)
        })
        .await
    }

    #[tracing::instrument(name = "INSERT session_activity", skip_all, fields(
        otel.kind = "client", db.system.name = "sqlite",
        db.operation.name = "INSERT", db.collection.name = "session_activity"))]
    async fn record_last_seen(&self, seen: &[SeenAt]) -> Result<(), StoreError> {
        if seen.is_empty() {
            return Ok(());
        }
        let rows = seen
            .iter()
            .map(|mark| Ok((id_bytes(mark.id), row::micros(mark.at)?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        self.write(move |conn| {
            // One statement: the sessions that exist, each moved forward only.
            let values = vec!["(?, ?)"; rows.len()].join(", ");
            let sql = format!(
                "INSERT INTO session_activity (session_id, last_seen_at) \
                 SELECT seen.column1, seen.column2 FROM (VALUES {values}) AS seen \
                 WHERE seen.column1 IN (SELECT id FROM sessions) \
                 ON CONFLICT (session_id) DO UPDATE SET last_seen_at = excluded.last_seen_at \
                 WHERE excluded.last_seen_at > session_activity.last_seen_at"
            );
            let mut query = diesel::sql_query(sql).into_boxed();
            for (id, at) in rows {
                query = query
                    .bind::<diesel::sql_types::Binary, _>(id)
                    .bind::<diesel::sql_types::BigInt, _>(at);
            }
            query.execute(conn).map(drop).map_err(store_error)
        })
        .await
    }

    #[tracing::instrument(name = "SELECT session_activity", skip_all, fields(
        otel.kind = "client", db.system.name = "sqlite",
        db.operation.name = "SELECT", db.collection.name = "session_activity"))]
    async fn last_seen(&self, ids: &[SessionId]) -> Result<Vec<SeenAt>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<Vec<u8>> = ids.iter().map(|&id| id_bytes(id)).collect();
        self.read(move |conn| {
            let marks = vec!["?"; ids.len()].join(", ");
            let sql = format!(
                "SELECT session_id, last_seen_at FROM session_activity \
                 WHERE session_id IN ({marks})"
            );
            let mut query = diesel::sql_query(sql).into_boxed();
            for id in ids {
                query = query.bind::<diesel::sql_types::Binary, _>(id);
            }
            Ok(query
                .load::<row::ActivityRow>(conn)
                .map_err(store_error)?
                .into_iter()
                .filter_map(row::seen_at)
                .collect())
        })
        .await
    }

    #[tracing::instrument(name = "SELECT sessions", skip_all, fields(
        otel.kind = "client", db.system.name = "sqlite",
        db.operation.name = "SELECT", db.collection.name = "sessions"))]
    async fn idle_sessions(
        &self,
        cutoff: OffsetDateTime,
        after: Option<SessionId>,
        limit: u32,
    ) -> Result<Vec<SessionId>, StoreError> {
        let cutoff = row::micros(cutoff)?;
        let after = after.map(id_bytes).unwrap_or_default();
        let rows = self
            .read(move |conn| {
                diesel::sql_query(format!("SELECT s.id, NULL AS token_hash {IDLE}"))
                    .bind::<diesel::sql_types::Binary, _>(after)
                    .bind::<diesel::sql_types::BigInt, _>(cutoff)
                    .bind::<diesel::sql_types::BigInt, _>(i64::from(limit))
                    .load::<row::TakenRow>(conn)
                    .map_err(store_error)
            })
            .await?;
        rows.iter()
            .map(|taken| row::session_id(&taken.id))
            .collect()
    }

    #[tracing::instrument(name = "UPDATE sessions", skip_all, fields(
        otel.kind = "client", db.system.name = "sqlite",
        db.operation.name = "UPDATE", db.collection.name = "sessions"))]
    async fn revoke_idle(
        &self,
        cutoff: OffsetDateTime,
        after: Option<SessionId>,
        limit: u32,
        at: OffsetDateTime,
        reason: RevocationReason,
    ) -> Result<Exclusive<Vec<RevokedSession>>, StoreError> {
        let cutoff = row::micros(cutoff)?;
        let at = row::micros(at)?;
        let after = after.map(id_bytes).unwrap_or_default();
        let reason = reason.as_str().to_owned();
        // One statement, on the one writer: idleness is decided as the rows
        // are revoked, and this process is the file's only writer, so the
        // job is never busy here.
        let rows = self
            .write(move |conn| {
                diesel::sql_query(format!(
                    "UPDATE sessions SET revoked_at = ?, revocation_reason = ? \
                     WHERE id IN (SELECT s.id {IDLE}) AND revoked_at IS NULL \
                     RETURNING id, token_hash"
                ))
                .bind::<diesel::sql_types::BigInt, _>(at)
                .bind::<diesel::sql_types::Text, _>(reason)
                .bind::<diesel::sql_types::Binary, _>(after)
                .bind::<diesel::sql_types::BigInt, _>(cutoff)
                .bind::<diesel::sql_types::BigInt, _>(i64::from(limit))
                .load::<row::TakenRow>(conn)
                .map_err(store_error)
            })
            .await?;
        revoked_in_id_order(&rows).map(Exclusive::Done)
    }

    #[tracing::instrument(name = "SELECT not_before", skip_all, fields(
        otel.kind = "client", db.system.name = "sqlite",
        db.operation.name = "SELECT", db.collection.name = "not_before"))]
    async fn not_before(&self) -> Result<NotBefore, StoreError> {
        let rows = self
            .read(|conn| {
                diesel::sql_query("SELECT mark, raised_by, swept_through FROM not_before")
                    .load::<row::NotBeforeRow>(conn)
                    .map_err(store_error)
            })
            .await?;
        Ok(rows
            .into_iter()
            .next()
            .map(|row| StoredNotBefore {
                mark: Some(row.mark),
                raised_by: row.raised_by.map(|text| text.0),
                swept_through: row.swept_through,
            })
            .unwrap_or_default()
            .into_not_before(NOT_BEFORE_TABLE))
    }

    #[tracing::instrument(name = "INSERT not_before", skip_all, fields(
        otel.kind = "client", db.system.name = "sqlite",
        db.operation.name = "INSERT", db.collection.name = "not_before"))]
    async fn raise_not_before(
        &self,
        at: OffsetDateTime,
        by: Option<Revoker>,
    ) -> Result<OffsetDateTime, StoreError> {
        let at = row::micros(at)?;
        let by = by.map(|by| by.as_str().to_owned());
        // One statement: the later of the stored mark and this one (a
        // stored one out of the domain's range replaced), the raiser
        // recorded only when the mark moved.
        let raised = self
            .write(move |conn| {
                diesel::sql_query(format!(
                    "INSERT INTO not_before AS nb (only_row, mark, raised_by) VALUES (1, ?, ?) \
                     ON CONFLICT (only_row) DO UPDATE SET \
                         mark = CASE WHEN nb.mark BETWEEN {EARLIEST_STORED_MICROS} AND {LATEST_STORED_MICROS} \
                                     THEN max(nb.mark, excluded.mark) ELSE excluded.mark END, \
                         raised_by = CASE WHEN excluded.mark > nb.mark \
                                       OR nb.mark NOT BETWEEN {EARLIEST_STORED_MICROS} AND {LATEST_STORED_MICROS} \
                                     THEN excluded.raised_by ELSE nb.raised_by END \
                     RETURNING mark"
                ))
                .bind::<diesel::sql_types::BigInt, _>(at)
                .bind::<diesel::sql_types::Nullable<diesel::sql_types::Text>, _>(by)
                .get_result::<row::MarkRow>(conn)
                .map_err(store_error)
            })
            .await?;
        let read = StoredNotBefore {
            mark: Some(raised.mark),
            ..StoredNotBefore::default()
        }
        .into_not_before(NOT_BEFORE_TABLE);
        match (read.mark, read.rejected) {
            (Some(mark), _) => Ok(mark),
            (None, Some(rejected)) => Err(rejected.into()),
            (None, None) => Err(StoreError::Failed("the raise stored no mark".into())),
        }
    }

    #[tracing::instrument(name = "UPDATE not_before", skip_all, fields(
        otel.kind = "client", db.system.name = "sqlite",
        db.operation.name = "UPDATE", db.collection.name = "not_before"))]
    async fn record_not_before_swept(&self, mark: OffsetDateTime) -> Result<(), StoreError> {
        let mark = row::micros(mark)?;
        self.write(move |conn| {
            diesel::sql_query(
                "UPDATE not_before SET swept_through = min(mark, ?1) \
                 WHERE swept_through IS NULL OR swept_through < min(mark, ?1)",
            )
            .bind::<diesel::sql_types::BigInt, _>(mark)
            .execute(conn)
            .map(drop)
            .map_err(store_error)
        })
        .await
    }

    #[tracing::instrument(name = "UPDATE sessions", skip_all, fields(
        otel.kind = "client", db.system.name = "sqlite",
        db.operation.name = "UPDATE", db.collection.name = "sessions"))]
    async fn revoke_marked(
        &self,
        mark: OffsetDateTime,
        after: Option<SessionId>,
        limit: u32,
        at: OffsetDateTime,
        reason: RevocationReason,
        by: Option<Revoker>,
    ) -> Result<Exclusive<Vec<RevokedSession>>, StoreError> {
        let first_unmarked = first_id_not_marked(mark).as_bytes().to_vec();
        let mark = row::micros(mark)?;
        let at = row::micros(at)?;
        let after = after.map(id_bytes).unwrap_or_default();
        let reason = reason.as_str().to_owned();
        let by = by.map(|by| by.as_str().to_owned());
        // One statement, on the one writer, as `revoke_idle`.
        let rows = self
            .write(move |conn| {
                diesel::sql_query(
                    "UPDATE sessions SET revoked_at = ?, revocation_reason = ?, revoked_by = ? \
                     WHERE id IN (SELECT s.id FROM sessions AS s \
                                  WHERE s.revoked_at IS NULL AND s.id > ? \
                                    AND (s.created_at < ? OR s.id < ?) \
                                  ORDER BY s.id LIMIT ?) \
                       AND revoked_at IS NULL \
                     RETURNING id, token_hash",
                )
                .bind::<diesel::sql_types::BigInt, _>(at)
                .bind::<diesel::sql_types::Text, _>(reason)
                .bind::<diesel::sql_types::Nullable<diesel::sql_types::Text>, _>(by)
                .bind::<diesel::sql_types::Binary, _>(after)
                .bind::<diesel::sql_types::BigInt, _>(mark)
                .bind::<diesel::sql_types::Binary, _>(first_unmarked)
                .bind::<diesel::sql_types::BigInt, _>(i64::from(limit))
                .load::<row::TakenRow>(conn)
                .map_err(store_error)
            })
            .await?;
        revoked_in_id_order(&rows).map(Exclusive::Done)
    }

    #[tracing::instrument(name = "DELETE sessions", skip_all, fields(
        otel.kind = "client", db.system.name = "sqlite",
        db.operation.name = "DELETE", db.collection.name = "sessions"))]
    async fn purge_revoked(
        &self,
        before: OffsetDateTime,
        after: Option<SessionId>,
        limit: u32,
        action: RetentionAction,
    ) -> Result<Exclusive<Vec<SessionId>>, StoreError> {
        let before = row::micros(before)?;
        let after = after.map(id_bytes).unwrap_or_default();
        let (change, holding) = match action {
            // The activity trigger deletes the session's activity with it.
            RetentionAction::Delete => ("DELETE FROM sessions", ""),
            RetentionAction::Erase => (
                "UPDATE sessions SET user_agent = NULL, ip = NULL",
                "AND (user_agent IS NOT NULL OR ip IS NOT NULL)",
            ),
        };
        let rows = self
            .write(move |conn| {
                diesel::sql_query(format!(
                    "{change} WHERE id IN (\
                         SELECT id FROM sessions \
                         WHERE id > ? AND revoked_at IS NOT NULL AND revoked_at < ? {holding} \
                         ORDER BY id LIMIT ?) \
                     RETURNING id, NULL AS token_hash"
                ))
                .bind::<diesel::sql_types::Binary, _>(after)
                .bind::<diesel::sql_types::BigInt, _>(before)
                .bind::<diesel::sql_types::BigInt, _>(i64::from(limit))
                .load::<row::TakenRow>(conn)
                .map_err(store_error)
            })
            .await?;
        let mut taken = rows
            .iter()
            .map(|taken| row::session_id(&taken.id))
            .collect::<Result<Vec<_>, StoreError>>()?;
        taken.sort();
        Ok(Exclusive::Done(taken))
    }
}

/// The idle sessions after `?` (an id; the empty blob, which sorts first,
/// for none), last seen, or never seen and created, before `?`, at most
/// `?`, in id order: a range scan of `sessions_active_by_id`, each row
/// looked up in `session_activity` by its key.
/// The "not before" mark's table, as errors name it.
const NOT_BEFORE_TABLE: &str = "not_before";

const IDLE: &str = "\
    FROM sessions AS s LEFT JOIN session_activity AS a ON a.session_id = s.id \
    WHERE s.revoked_at IS NULL AND s.id > ? \
      AND coalesce(a.last_seen_at, s.created_at) < ? \
    ORDER BY s.id LIMIT ?";
