//! The events feed on SQLite: triggers write each creation and revocation
//! to `session_events` in the writing transaction (migration
//! `2026-12-06-000004_session_events`), with an `AUTOINCREMENT` position.
//! One writer at a time means positions are taken in commit order, so a
//! read is `position > after ORDER BY position`.

use async_trait::async_trait;
use diesel::prelude::*;
use diesel::sql_query;
use diesel::sql_types::{BigInt, Binary, Nullable, Text};
use session_core::port::events::{EventCursor, EventLog, EventRead, StoredEvent};
use session_core::port::store::StoreError;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::store_error;
use crate::row;
use crate::store::SqliteSessionStore;

/// The events' table, as errors name it.
const EVENTS_TABLE: &str = "session_events";

/// The feed's state and head, read in the transaction that reads events.
const STATE: &str = "SELECT history, pruned_through,
    coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'session_events'), 0) AS head
    FROM session_event_log WHERE id = 1";

#[derive(QueryableByName)]
struct State {
    #[diesel(sql_type = BigInt)]
    history: i64,
    #[diesel(sql_type = BigInt)]
    pruned_through: i64,
    #[diesel(sql_type = BigInt)]
    head: i64,
}

impl State {
    fn read(conn: &mut SqliteConnection) -> QueryResult<Self> {
        sql_query(STATE).get_result(conn)
    }

    /// The history id as the port sees it: the stored integer's bits.
    fn history(&self) -> u64 {
        u64::from_ne_bytes(self.history.to_ne_bytes())
    }

    fn head(&self) -> EventCursor {
        EventCursor {
            history: self.history(),
            position: u64::try_from(self.head).unwrap_or(0),
        }
    }
}

#[derive(QueryableByName)]
struct EventRow {
    #[diesel(sql_type = BigInt)]
    position: i64,
    #[diesel(sql_type = Text)]
    kind: String,
    #[diesel(sql_type = Binary)]
    session_id: Vec<u8>,
    #[diesel(sql_type = Binary)]
    account_id: Vec<u8>,
    #[diesel(sql_type = BigInt)]
    at: i64,
    #[diesel(sql_type = Nullable<Text>)]
    reason: Option<String>,
}

impl EventRow {
    /// The domain's event, or `None` (logged) for a row it refuses: a
    /// position skipped, never a feed stuck on one row.
    fn into_event(self) -> Option<session_core::port::events::SessionEvent> {
        let uuid = |bytes: &[u8]| Uuid::from_slice(bytes).unwrap_or_default();
        StoredEvent {
            position: self.position,
            revoked: self.kind == "revoked",
            session_id: uuid(&self.session_id),
            account_id: uuid(&self.account_id),
            at_micros: self.at,
            reason: self.reason,
        }
        .into_event(EVENTS_TABLE)
        .inspect_err(|invalid| tracing::warn!(error = %invalid, "skipping an invalid event"))
        .ok()
    }
}

fn position(value: u64) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::Failed("an event position past i64".into()))
}

#[async_trait]
impl EventLog for SqliteSessionStore {
    #[tracing::instrument(name = "SELECT session_event_log", skip_all, fields(
        otel.kind = "client", db.system.name = "sqlite",
        db.operation.name = "SELECT", db.collection.name = "session_event_log"))]
    async fn head(&self) -> Result<EventCursor, StoreError> {
        self.read(|conn| {
            State::read(conn)
                .map(|state| state.head())
                .map_err(store_error)
        })
        .await
    }

    #[tracing::instrument(name = "SELECT session_events", skip_all, fields(
        otel.kind = "client", db.system.name = "sqlite",
        db.operation.name = "SELECT", db.collection.name = "session_events"))]
    async fn read(&self, after: EventCursor, limit: u32) -> Result<EventRead, StoreError> {
        let from = position(after.position)?;
        let rows = self
            .read(move |conn| {
                // One read transaction: the state and the events are of one
                // snapshot, so a prune committing meanwhile is seen whole or
                // not at all.
                conn.transaction(|conn| {
                    let state = State::read(conn)?;
                    if state.history() != after.history
                        || from < state.pruned_through
                        || from > state.head
                    {
                        return Ok(None);
                    }
                    sql_query(
                        "SELECT position, kind, session_id, account_id, at, reason
                         FROM session_events WHERE position > ? ORDER BY position LIMIT ?",
                    )
                    .bind::<BigInt, _>(from)
                    .bind::<BigInt, _>(i64::from(limit.max(1)))
                    .load::<EventRow>(conn)
                    .map(Some)
                })
                .map_err(store_error)
            })
            .await?;
        let Some(rows) = rows else {
            return Ok(EventRead::Gone);
        };
        let next = EventCursor {
            history: after.history,
            position: rows
                .last()
                .and_then(|last| u64::try_from(last.position).ok())
                .unwrap_or(after.position),
        };
        let events = rows.into_iter().filter_map(EventRow::into_event).collect();
        Ok(EventRead::Page { events, next })
    }

    #[tracing::instrument(name = "DELETE session_events", skip_all, fields(
        otel.kind = "client", db.system.name = "sqlite",
        db.operation.name = "DELETE", db.collection.name = "session_events"))]
    async fn prune(&self, before: OffsetDateTime, batch: u32) -> Result<u64, StoreError> {
        let before = row::micros(before)?;
        self.write(move |conn| {
            conn.immediate_transaction(|conn| {
                #[derive(QueryableByName)]
                struct Old {
                    #[diesel(sql_type = BigInt)]
                    position: i64,
                    #[diesel(sql_type = BigInt)]
                    at: i64,
                }
                let oldest: Vec<Old> =
                    sql_query("SELECT position, at FROM session_events ORDER BY position LIMIT ?")
                        .bind::<BigInt, _>(i64::from(batch))
                        .load(conn)?;
                let gone: Vec<i64> = oldest
                    .iter()
                    .take_while(|old| old.at < before)
                    .map(|old| old.position)
                    .collect();
                let Some(&last) = gone.last() else {
                    return Ok(0);
                };
                sql_query("DELETE FROM session_events WHERE position <= ?")
                    .bind::<BigInt, _>(last)
                    .execute(conn)?;
                // In the same transaction: a reader sees both or neither.
                sql_query(
                    "UPDATE session_event_log SET pruned_through = max(pruned_through, ?) WHERE id = 1",
                )
                .bind::<BigInt, _>(last)
                .execute(conn)?;
                Ok(gone.len() as u64)
            })
            .map_err(store_error)
        })
        .await
    }
}
