//! Conversions between domain sessions and their SQLite rows.

use std::net::IpAddr;

use diesel::prelude::*;
use session_core::port::store::{
    ActivePage, BoxError, InvalidRow, RowId, SeenAt, StoreError, StoredSession,
};
use session_core::token::TokenHash;
use session_core::{AccountPage, ListPosition, PageLimit, Session, SessionId};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::schema::sessions;

/// A stored session, column for column, as SQLite returns it. Public only
/// to the `fuzzing` feature.
#[derive(Queryable, Selectable)]
#[diesel(table_name = sessions)]
#[diesel(check_for_backend(diesel::sqlite::Sqlite))]
#[cfg_attr(
    not(feature = "fuzzing"),
    expect(unreachable_pub, reason = "public only to the fuzz targets")
)]
pub struct SessionRow {
    /// The session id's 16 bytes.
    pub id: Vec<u8>,
    /// The account id's 16 bytes.
    pub account_id: Vec<u8>,
    /// The token hash's 32 bytes.
    pub token_hash: Vec<u8>,
    /// Microseconds since the Unix epoch, UTC.
    pub created_at: i64,
    /// Microseconds since the Unix epoch, UTC.
    pub revoked_at: Option<i64>,
    /// As normalised at creation.
    pub user_agent: Option<String>,
    /// An IP address's text.
    pub ip: Option<String>,
    /// As given at creation.
    pub label: Option<String>,
}

/// A session about to be inserted. Owned, so it can move to a blocking thread.
#[derive(Insertable)]
#[diesel(table_name = sessions)]
pub(crate) struct NewSessionRow {
    id: Vec<u8>,
    account_id: Vec<u8>,
    token_hash: Vec<u8>,
    created_at: i64,
    revoked_at: Option<i64>,
    user_agent: Option<String>,
    ip: Option<String>,
    label: Option<String>,
}

impl NewSessionRow {
    pub(crate) fn new(session: &Session) -> Result<Self, StoreError> {
        let metadata = &session.metadata;
        Ok(Self {
            id: session.id.as_uuid().as_bytes().to_vec(),
            account_id: session.account_id.as_uuid().as_bytes().to_vec(),
            token_hash: session.token_hash.as_bytes().to_vec(),
            created_at: micros(session.created_at)?,
            revoked_at: session.revoked_at.map(micros).transpose()?,
            user_agent: metadata
                .user_agent
                .as_ref()
                .map(|ua| ua.as_str().to_owned()),
            ip: metadata.ip.map(|ip| ip.to_string()),
            label: metadata
                .label
                .as_ref()
                .map(|label| label.as_str().to_owned()),
        })
    }
}

/// The table rows are read from, as errors name it.
const TABLE: &str = "sessions";

impl SessionRow {
    /// The session, if the domain accepts every column: the columns SQLite
    /// stores as bytes, integers and text are decoded first, then
    /// session-core checks the row as every store's rows are checked.
    ///
    /// # Errors
    ///
    /// [`InvalidRow`] naming the first column the store or the domain rejects.
    #[cfg_attr(
        not(feature = "fuzzing"),
        expect(unreachable_pub, reason = "public only to the fuzz targets")
    )]
    pub fn into_session(self) -> Result<Session, InvalidRow> {
        let id = Uuid::from_slice(&self.id)
            .map_err(|err| InvalidRow::new(TABLE, "id", RowId::Unknown, err))?;
        let row = RowId::Session(SessionId::from_uuid(id));
        let invalid = |column: &'static str| move |err| InvalidRow::new(TABLE, column, row, err);
        let stored = StoredSession {
            id,
            account_id: Uuid::from_slice(&self.account_id)
                .map_err(|err| invalid("account_id")(Box::new(err).into()))?,
            token_hash: self.token_hash,
            created_at: instant(self.created_at).map_err(invalid("created_at"))?,
            revoked_at: self
                .revoked_at
                .map(instant)
                .transpose()
                .map_err(invalid("revoked_at"))?,
            user_agent: self.user_agent,
            ip: self
                .ip
                .map(|text| text.parse::<IpAddr>())
                .transpose()
                .map_err(|err| invalid("ip")(Box::new(err).into()))?,
            label: self.label,
        };
        stored.into_session(TABLE)
    }
}

/// Splits the rows of a list page into sessions and rows the domain
/// rejects. A row whose own place in the list (its id and `created_at`)
/// cannot be read fails the page, since the next page could not start after
/// it; the schema's checks keep such rows out (`length(id) = 16`).
pub(crate) fn account_page(
    rows: Vec<SessionRow>,
    limit: PageLimit,
) -> Result<AccountPage, StoreError> {
    let rows = rows
        .into_iter()
        .map(|row| {
            let id = Uuid::from_slice(&row.id)
                .map_err(|err| InvalidRow::new(TABLE, "id", RowId::Unknown, err))?;
            let created_at = instant(row.created_at).map_err(|err| {
                InvalidRow::new(
                    TABLE,
                    "created_at",
                    RowId::Session(SessionId::from_uuid(id)),
                    err,
                )
            })?;
            let position = ListPosition {
                created_at,
                id: SessionId::from_uuid(id),
            };
            Ok((position, row.into_session()))
        })
        .collect::<Result<Vec<_>, InvalidRow>>()?;
    Ok(AccountPage::from_rows(rows, limit))
}

/// Converts one row read from the database into a session.
pub(crate) fn session(row: SessionRow) -> Result<Session, StoreError> {
    Ok(row.into_session()?)
}

/// Splits the rows of a warm page into sessions and rows the domain rejects.
pub(crate) fn active_page(rows: Vec<SessionRow>, limit: u32) -> ActivePage {
    let resume_after = (rows.len() >= limit as usize)
        .then(|| rows.last().and_then(|row| Uuid::from_slice(&row.id).ok()))
        .flatten()
        .map(SessionId::from_uuid);
    let mut page = ActivePage {
        resume_after,
        ..ActivePage::default()
    };
    for row in rows {
        match row.into_session() {
            Ok(session) => page.sessions.push(session),
            Err(rejected) => page.rejected.push(rejected),
        }
    }
    page
}

/// Reads a stored token hash (from a `RETURNING` clause).
pub(crate) fn token_hash(bytes: &[u8]) -> Result<TokenHash, StoreError> {
    TokenHash::try_from(bytes)
        .map_err(|err| InvalidRow::new(TABLE, "token_hash", RowId::Unknown, err).into())
}

/// An instant as stored: whole microseconds since the Unix epoch, UTC.
/// Sub-microsecond digits are dropped, as every store does.
pub(crate) fn micros(at: OffsetDateTime) -> Result<i64, StoreError> {
    // Flooring keeps instants before 1970 in order, like `to_micros` in session-core.
    i64::try_from(at.unix_timestamp_nanos().div_euclid(1_000))
        .map_err(|_| StoreError::Failed("instant out of the storable range".into()))
}

fn instant(micros: i64) -> Result<OffsetDateTime, BoxError> {
    Ok(OffsetDateTime::from_unix_timestamp_nanos(
        i128::from(micros) * 1_000,
    )?)
}

/// A row of `session_activity`, as stored.
#[derive(diesel::QueryableByName)]
pub(crate) struct ActivityRow {
    #[diesel(sql_type = diesel::sql_types::Binary)]
    session_id: Vec<u8>,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    last_seen_at: i64,
}

/// The table activity rows are read from, as errors name it.
const ACTIVITY_TABLE: &str = "session_activity";

/// A stored activity row as the port's [`SeenAt`]; a row no session could
/// have written is an [`InvalidRow`] naming the table and column.
pub(crate) fn seen_at(row: ActivityRow) -> Result<SeenAt, StoreError> {
    let id = Uuid::from_slice(&row.session_id)
        .map_err(|err| InvalidRow::new(ACTIVITY_TABLE, "session_id", RowId::Unknown, err))?;
    let id = SessionId::from_uuid(id);
    let at = instant(row.last_seen_at)
        .map_err(|err| InvalidRow::new(ACTIVITY_TABLE, "last_seen_at", RowId::Session(id), err))?;
    Ok(SeenAt { id, at })
}
