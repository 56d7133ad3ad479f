//! The events port: a durable, ordered feed of what happened to sessions
//! (created, revoked with its reason), for downstream services that follow
//! it from a cursor and resume where they stopped.
//!
//! Unlike the [change log](super::change_log), which tells caches what to
//! load and may be read in a different order by each reader, the feed has
//! one order, fixed once in the store: each event has a *position*, and
//! every reader, on every instance, reads the same events at the same
//! positions. Positions increase in commit order, and a reader that
//! resumes after its last position reads the rest with no gap and no
//! duplicate. A cursor names its *history* too (an id stored once with the
//! feed), so a cursor of another database, or of a backup restored over
//! this one, is refused ([`EventRead::Gone`]) rather than answered with
//! other events under the same positions.
//!
//! Events never carry a token or a token hash: only ids, times and reasons.

use async_trait::async_trait;
use time::OffsetDateTime;

use super::store::{InvalidRow, RowId, StoreError, stored_instant};
use crate::session::{AccountId, RevocationReason, SessionId};

/// A position in one history of a feed: every event up to `position` has
/// been read. Position 0 is before every event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EventCursor {
    /// The feed's history, an id the store chose at random once.
    pub history: u64,
    /// The last position read.
    pub position: u64,
}

/// What happened to the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    /// The session was created; the event's time is its `created_at`.
    Created,
    /// The session was revoked; the event's time is its `revoked_at`. The
    /// reason is `None` only for a revocation written without one (by other
    /// SQL, or under a schema older than reasons).
    Revoked {
        /// Why it was revoked.
        reason: Option<RevocationReason>,
    },
}

/// One event of the feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionEvent {
    /// Where it is in the feed: one more than the event before it.
    pub position: u64,
    /// What happened.
    pub kind: EventKind,
    /// The session it happened to.
    pub session_id: SessionId,
    /// The session's account.
    pub account_id: AccountId,
    /// When it happened, as the session row records it (`created_at` or
    /// `revoked_at`), with microsecond precision.
    pub at: OffsetDateTime,
}

/// The result of one [`EventLog::read`].
#[derive(Debug)]
pub enum EventRead {
    /// The events after the cursor, in position order (possibly none), and
    /// the cursor after them.
    Page {
        /// At most the limit asked for.
        events: Vec<SessionEvent>,
        /// Where the next read starts: the last event's position, or the
        /// cursor read from when there was none.
        next: EventCursor,
    },
    /// The feed cannot answer from this cursor: it is of another history,
    /// before what retention kept, or past the feed's head (a database
    /// restored from an older copy). The reader must list again and
    /// continue from a fresh [`EventLog::head`].
    Gone,
}

/// A durable feed of session events, kept by the store.
///
/// A store writes an event for every session it creates and every session
/// it revokes (one per session, so a revoke-all of `n` sessions is `n`
/// events), either in the same transaction as the write (a store with one
/// writer at a time) or in a later *sequencing* step that fixes one order
/// for writes that committed concurrently ([`sequence`](Self::sequence)).
#[async_trait]
pub trait EventLog: Send + Sync + 'static {
    /// The newest position, in the current history: a reader that starts
    /// here reads only events written after it.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] if the store cannot be reached.
    async fn head(&self) -> Result<EventCursor, StoreError>;

    /// At most `limit` events after `after`, in position order.
    ///
    /// # Errors
    ///
    /// [`StoreError`] if the store cannot be read.
    async fn read(&self, after: EventCursor, limit: u32) -> Result<EventRead, StoreError>;

    /// Turns writes committed since the last step into events, if the
    /// store sequences them after the fact, and returns the head. Any
    /// process may call it at any time: concurrent steps take turns, and a
    /// step that finds nothing new writes nothing. A store that writes its
    /// events with each write only returns the head.
    ///
    /// # Errors
    ///
    /// [`StoreError`] if the store cannot be read or written.
    async fn sequence(&self) -> Result<EventCursor, StoreError> {
        self.head().await
    }

    /// Deletes at most `batch` of the oldest events, each older than
    /// `before` by its time, stopping at the first that is not; returns how
    /// many went. A cursor before the last one deleted is then
    /// [`EventRead::Gone`]. Called again until it returns less than `batch`.
    ///
    /// # Errors
    ///
    /// [`StoreError`] if the store cannot be written.
    async fn prune(&self, before: OffsetDateTime, batch: u32) -> Result<u64, StoreError>;
}

/// An event as a store holds it, in raw forms any stored value fits, for
/// [`into_event`](Self::into_event): the one place a stored event becomes a
/// [`SessionEvent`], so both stores check it alike.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    /// Its position; positive.
    pub position: i64,
    /// `true` for a revocation, `false` for a creation.
    pub revoked: bool,
    /// The session id.
    pub session_id: uuid::Uuid,
    /// The account id.
    pub account_id: uuid::Uuid,
    /// Microseconds since 1970-01-01T00:00:00Z (UTC).
    pub at_micros: i64,
    /// The revocation reason, as stored.
    pub reason: Option<String>,
}

impl StoredEvent {
    /// The event, if the domain accepts every field.
    ///
    /// # Errors
    ///
    /// [`InvalidRow`] naming `table` and the column the domain refuses.
    pub fn into_event(self, table: &'static str) -> Result<SessionEvent, InvalidRow> {
        let session_id = SessionId::from_uuid(self.session_id);
        let row = RowId::Session(session_id);
        let position = u64::try_from(self.position)
            .ok()
            .filter(|&position| position > 0)
            .ok_or_else(|| InvalidRow::new(table, "position", row, "not positive"))?;
        let account_id = AccountId::new(self.account_id)
            .map_err(|err| InvalidRow::new(table, "account_id", row, err))?;
        let at = stored_instant(self.at_micros)
            .ok_or_else(|| InvalidRow::new(table, "at", row, "out of range"))?;
        let kind = if self.revoked {
            let reason = self
                .reason
                .map(RevocationReason::new)
                .transpose()
                .map_err(|err| InvalidRow::new(table, "reason", row, err))?;
            EventKind::Revoked { reason }
        } else {
            EventKind::Created
        };
        Ok(SessionEvent {
            position,
            kind,
            session_id,
            account_id,
            at,
        })
    }
}
