//! The events feed on PostgreSQL: `session.events`, filled only by the
//! sequencer (`session.sequence_events`, migration
//! `2026-12-06-000004_session_events`), which any instance runs and which
//! fixes one order for writes that committed concurrently. Readers read
//! `position > after ORDER BY position` with the feed's state in the same
//! statement, so from one snapshot.

use async_trait::async_trait;
use diesel::QueryableByName;
use diesel::sql_query;
use diesel::sql_types::{BigInt, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::RunQueryDsl;
use session_core::port::events::{EventCursor, EventLog, EventRead, SessionEvent, StoredEvent};
use session_core::port::store::StoreError;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::call::Work;
use crate::raw::RawInstant;
use crate::store::PgSessionStore;

/// The events' table, as errors name it.
const EVENTS_TABLE: &str = "session.events";

/// Events a sequencing step turns entries into at most, so no one step runs
/// long; a step that fills it is followed by another at once.
pub(crate) const SEQUENCE_BATCH: i64 = 5_000;

#[derive(QueryableByName)]
struct Head {
    #[diesel(sql_type = BigInt)]
    history: i64,
    #[diesel(sql_type = BigInt)]
    head: i64,
}

impl Head {
    fn cursor(&self) -> EventCursor {
        EventCursor {
            history: self.history.cast_unsigned(),
            position: self.head.unsigned_abs(),
        }
    }
}

/// One row of a read: the first gives the state (`event_position` null),
/// every other one an event.
#[derive(QueryableByName)]
struct ReadRow {
    #[diesel(sql_type = Nullable<BigInt>)]
    history: Option<i64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    pruned_through: Option<i64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    head: Option<i64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    event_position: Option<i64>,
    #[diesel(sql_type = Nullable<Text>)]
    kind: Option<String>,
    #[diesel(sql_type = Nullable<SqlUuid>)]
    session_id: Option<Uuid>,
    #[diesel(sql_type = Nullable<SqlUuid>)]
    account_id: Option<Uuid>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    at: Option<RawInstant>,
    #[diesel(sql_type = Nullable<Text>)]
    reason: Option<String>,
}

/// The state and the events after $1, the first $2 of them, from one
/// snapshot.
const READ_EVENTS: &str = "SELECT history, pruned_through, last_position AS head,
       NULL::bigint AS event_position, NULL::text AS kind, NULL::uuid AS session_id,
       NULL::uuid AS account_id, NULL::timestamptz AS at, NULL::text AS reason
FROM session.event_log_state
UNION ALL
(SELECT NULL, NULL, NULL, position, kind, session_id, account_id, at, reason
 FROM session.events WHERE position > $1 ORDER BY position LIMIT $2)
ORDER BY event_position NULLS FIRST";

impl ReadRow {
    /// The domain's event, or `None` (logged) for a row it refuses: a
    /// position skipped, never a feed stuck on one row.
    fn into_event(self) -> Option<SessionEvent> {
        StoredEvent {
            position: self.event_position?,
            revoked: self.kind.as_deref() == Some("revoked"),
            session_id: self.session_id.unwrap_or_default(),
            account_id: self.account_id.unwrap_or_default(),
            at_micros: self.at.map_or(i64::MIN, RawInstant::unix_micros),
            reason: self.reason,
        }
        .into_event(EVENTS_TABLE)
        .inspect_err(|invalid| tracing::warn!(error = %invalid, "skipping an invalid event"))
        .ok()
    }
}

#[async_trait]
impl EventLog for PgSessionStore {
    #[tracing::instrument(name = "SELECT session.event_log_state", skip_all, fields(
        otel.kind = "client", db.system.name = "postgresql",
        db.operation.name = "SELECT", db.collection.name = "session.event_log_state"))]
    async fn head(&self) -> Result<EventCursor, StoreError> {
        let mut connection = self.connection(Work::Read).await?;
        let statement =
            sql_query("SELECT history, last_position AS head FROM session.event_log_state")
                .get_result::<Head>(&mut connection);
        let outcome = self.bounded(Work::Read, statement).await;
        let head = self
            .finish("read the events feed's head", outcome, connection)
            .await?;
        Ok(head.cursor())
    }

    #[tracing::instrument(name = "SELECT session.events", skip_all, fields(
        otel.kind = "client", db.system.name = "postgresql",
        db.operation.name = "SELECT", db.collection.name = "session.events"))]
    async fn read(&self, after: EventCursor, limit: u32) -> Result<EventRead, StoreError> {
        let from = i64::try_from(after.position).unwrap_or(i64::MAX);
        let mut connection = self.connection(Work::Read).await?;
        let statement = sql_query(READ_EVENTS)
            .bind::<BigInt, _>(from)
            .bind::<BigInt, _>(i64::from(limit.max(1)))
            .load::<ReadRow>(&mut connection);
        let outcome = self.bounded(Work::Read, statement).await;
        let rows = self
            .finish("read the events feed", outcome, connection)
            .await?;
        let mut rows = rows.into_iter();
        let Some(ReadRow {
            history: Some(history),
            pruned_through: Some(pruned_through),
            head: Some(head),
            ..
        }) = rows.next()
        else {
            return Err(StoreError::Failed(
                "session.event_log_state has no row: was the schema migrated?".into(),
            ));
        };
        if history.cast_unsigned() != after.history || from < pruned_through || from > head {
            return Ok(EventRead::Gone);
        }
        let mut next = after;
        let events = rows
            .inspect(|row| {
                if let Some(position) = row.event_position {
                    next.position = position.unsigned_abs();
                }
            })
            .filter_map(ReadRow::into_event)
            .collect();
        Ok(EventRead::Page { events, next })
    }

    /// Steps until one does not fill its batch, each its own transaction
    /// through the schema owner's `session.sequence_events`.
    #[tracing::instrument(name = "SELECT session.sequence_events", skip_all, fields(
        otel.kind = "client", db.system.name = "postgresql",
        db.operation.name = "SELECT", db.collection.name = "session.events"))]
    async fn sequence(&self) -> Result<EventCursor, StoreError> {
        #[derive(QueryableByName)]
        struct Step {
            #[diesel(sql_type = BigInt)]
            history: i64,
            #[diesel(sql_type = BigInt)]
            head: i64,
            #[diesel(sql_type = BigInt)]
            added: i64,
        }
        loop {
            let mut connection = self.connection(Work::Write).await?;
            let statement =
                sql_query("SELECT history, head, added FROM session.sequence_events($1)")
                    .bind::<BigInt, _>(SEQUENCE_BATCH)
                    .get_result::<Step>(&mut connection);
            let outcome = self.bounded(Work::Write, statement).await;
            let step = self
                .finish("sequence the events feed", outcome, connection)
                .await?;
            if step.added < SEQUENCE_BATCH {
                return Ok(Head {
                    history: step.history,
                    head: step.head,
                }
                .cursor());
            }
        }
    }

    #[tracing::instrument(name = "DELETE session.events", skip_all, fields(
        otel.kind = "client", db.system.name = "postgresql",
        db.operation.name = "DELETE", db.collection.name = "session.events"))]
    async fn prune(&self, before: OffsetDateTime, batch: u32) -> Result<u64, StoreError> {
        #[derive(QueryableByName)]
        struct Pruned {
            #[diesel(sql_type = BigInt)]
            pruned: i64,
        }
        let before = RawInstant::from_unix_micros(
            i64::try_from(before.unix_timestamp_nanos() / 1_000).unwrap_or(i64::MIN),
        );
        let mut connection = self.connection(Work::Write).await?;
        let statement = sql_query("SELECT session.prune_events($1, $2) AS pruned")
            .bind::<Timestamptz, _>(before)
            .bind::<BigInt, _>(i64::from(batch))
            .get_result::<Pruned>(&mut connection);
        let outcome = self.bounded(Work::Write, statement).await;
        let pruned = self
            .finish("prune the events feed", outcome, connection)
            .await?;
        Ok(pruned.pruned.unsigned_abs())
    }
}
