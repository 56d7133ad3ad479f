//! Conversions between domain sessions and their SQLite rows.

use std::net::IpAddr;

use diesel::deserialize::{self, FromSql, FromSqlRow};
use diesel::prelude::*;
use diesel::sql_types::Text;
use diesel::sqlite::{Sqlite, SqliteValue};
use session_core::port::store::{
    ActivePage, IdentityPage, InvalidRow, RowId, SeenAt, StoreError, StoredIdentity, StoredSession,
    stored_instant,
};
use session_core::token::TokenHash;
use session_core::validation::Reason;
use session_core::{AccountPage, ListPosition, PageLimit, Session, SessionId, SessionIdentity};
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
    /// As normalised at creation; its bytes, UTF-8 or not.
    pub user_agent: Option<RawText>,
    /// An IP address's text.
    pub ip: Option<String>,
    /// As given at creation; its bytes, UTF-8 or not.
    pub label: Option<RawText>,
    /// Why it was revoked; its bytes, UTF-8 or not.
    pub revocation_reason: Option<RawText>,
    /// Who revoked it; its bytes, UTF-8 or not.
    pub revoked_by: Option<RawText>,
}

/// A TEXT value's bytes as stored, UTF-8 or not: SQLite stores whatever
/// bytes it is given as text, and diesel's `String` would replace invalid
/// UTF-8 silently, so the domain checks the bytes instead. Public only to
/// the `fuzzing` feature.
#[derive(Debug, Clone, PartialEq, Eq, FromSqlRow)]
#[cfg_attr(
    not(feature = "fuzzing"),
    expect(unreachable_pub, reason = "public only to the fuzz targets")
)]
pub struct RawText(pub Vec<u8>);

impl FromSql<Text, Sqlite> for RawText {
    fn from_sql(mut value: SqliteValue<'_, '_, '_>) -> deserialize::Result<Self> {
        // A TEXT value's blob form is its bytes, unconverted.
        Ok(Self(value.read_blob().to_vec()))
    }
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
    revocation_reason: Option<String>,
    revoked_by: Option<String>,
}

impl NewSessionRow {
    pub(crate) fn new(session: &Session) -> Result<Self, StoreError> {
        let metadata = &session.metadata;
        Ok(Self {
            id: session.id.as_uuid().as_bytes().to_vec(),
            account_id: session.account_id.as_uuid().as_bytes().to_vec(),
            token_hash: session.token_hash.as_bytes().to_vec(),
            created_at: micros(session.created_at)?,
            revoked_at: session.revoked_at().map(micros).transpose()?,
            user_agent: metadata
                .user_agent
                .as_ref()
                .map(|ua| ua.as_str().to_owned()),
            ip: metadata.ip.map(|ip| ip.to_string()),
            label: metadata
                .label
                .as_ref()
                .map(|label| label.as_str().to_owned()),
            revocation_reason: session
                .revocation_reason()
                .map(|reason| reason.as_str().to_owned()),
            revoked_by: session.revoked_by().map(|by| by.as_str().to_owned()),
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
        let stored = StoredSession {
            id,
            account_id: Uuid::from_slice(&self.account_id)
                .map_err(|err| InvalidRow::new(TABLE, "account_id", row, err))?,
            token_hash: self.token_hash,
            created_at: self.created_at,
            revoked_at: self.revoked_at,
            user_agent: self.user_agent.map(|text| text.0),
            ip: self
                .ip
                .map(|text| text.parse::<IpAddr>())
                .transpose()
                .map_err(|err| InvalidRow::new(TABLE, "ip", row, err))?,
            label: self.label.map(|text| text.0),
            revocation_reason: self.revocation_reason.map(|text| text.0),
            revoked_by: self.revoked_by.map(|text| text.0),
        };
        stored.into_session(TABLE)
    }
}

/// Splits the rows of a list page into sessions and rows the domain
/// rejects. A row whose own place in the list (its id and `created_at`)
/// cannot be read fails the page, since the next page could not start after
/// it; the schema's checks (`length(id) = 16`) and the list query (only
/// `created_at` the domain accepts) keep such rows out.
pub(crate) fn account_page(
    rows: Vec<SessionRow>,
    limit: PageLimit,
) -> Result<AccountPage, StoreError> {
    let rows = rows
        .into_iter()
        .map(|row| {
            let id = Uuid::from_slice(&row.id)
                .map_err(|err| InvalidRow::new(TABLE, "id", RowId::Unknown, err))?;
            let id = SessionId::from_uuid(id);
            let created_at = stored_instant(row.created_at).ok_or_else(|| {
                InvalidRow::new(
                    TABLE,
                    "created_at",
                    RowId::Session(id),
                    Reason::InstantOutOfRange,
                )
            })?;
            let position = ListPosition { created_at, id };
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

/// A warm's identity row: `id`, `account_id` and `token_hash`, as stored.
pub(crate) type IdentityRow = (Vec<u8>, Vec<u8>, Vec<u8>);

/// Splits the rows of a warm's identity page into identities and rows the
/// domain rejects.
pub(crate) fn identity_page(rows: Vec<IdentityRow>, limit: u32) -> IdentityPage {
    let resume_after = (rows.len() >= limit as usize)
        .then(|| rows.last().and_then(|row| Uuid::from_slice(&row.0).ok()))
        .flatten()
        .map(SessionId::from_uuid);
    let mut page = IdentityPage {
        resume_after,
        ..IdentityPage::default()
    };
    for (id, account_id, token_hash) in rows {
        match identity(&id, &account_id, token_hash) {
            Ok(identity) => page.identities.push(identity),
            Err(rejected) => page.rejected.push(rejected),
        }
    }
    page
}

/// One identity row, checked as [`SessionRow::into_session`] checks its columns.
fn identity(
    id: &[u8],
    account_id: &[u8],
    token_hash: Vec<u8>,
) -> Result<SessionIdentity, InvalidRow> {
    let id =
        Uuid::from_slice(id).map_err(|err| InvalidRow::new(TABLE, "id", RowId::Unknown, err))?;
    let row = RowId::Session(SessionId::from_uuid(id));
    let stored = StoredIdentity {
        id,
        account_id: Uuid::from_slice(account_id)
            .map_err(|err| InvalidRow::new(TABLE, "account_id", row, err))?,
        token_hash,
    };
    stored.into_identity(TABLE)
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

/// The "not before" mark's row, as stored.
#[derive(diesel::QueryableByName)]
pub(crate) struct NotBeforeRow {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub(crate) mark: i64,
    #[diesel(sql_type = diesel::sql_types::Nullable<Text>)]
    pub(crate) raised_by: Option<RawText>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::BigInt>)]
    pub(crate) swept_through: Option<i64>,
}

/// The mark a raise left.
#[derive(diesel::QueryableByName)]
pub(crate) struct MarkRow {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub(crate) mark: i64,
}

/// A row of `session_activity`, as stored.
#[derive(diesel::QueryableByName)]
pub(crate) struct ActivityRow {
    #[diesel(sql_type = diesel::sql_types::Binary)]
    session_id: Vec<u8>,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    last_seen_at: i64,
}

/// A token hash a statement returns, as stored.
#[derive(QueryableByName)]
pub(crate) struct HashRow {
    #[diesel(sql_type = diesel::sql_types::Binary)]
    pub(crate) token_hash: Vec<u8>,
}

/// The table activity rows are read from, as errors name it.
const ACTIVITY_TABLE: &str = "session_activity";

/// A stored activity row as the port's [`SeenAt`]; `None`, logged by row,
/// for a row no session could have written (written by other SQL): that
/// session reads as never seen rather than failing the read of every other
/// one.
pub(crate) fn seen_at(row: ActivityRow) -> Option<SeenAt> {
    let checked = Uuid::from_slice(&row.session_id)
        .map_err(|err| InvalidRow::new(ACTIVITY_TABLE, "session_id", RowId::Unknown, err))
        .and_then(|id| {
            let id = SessionId::from_uuid(id);
            let at = stored_instant(row.last_seen_at).ok_or_else(|| {
                InvalidRow::new(
                    ACTIVITY_TABLE,
                    "last_seen_at",
                    RowId::Session(id),
                    Reason::InstantOutOfRange,
                )
            })?;
            Ok(SeenAt { id, at })
        });
    checked
        .inspect_err(|invalid| {
            tracing::error!(error = %invalid, "skipping a stored last-seen time the domain rejects");
        })
        .ok()
}

/// A row of `sessions` a maintenance statement took: its id and, for a
/// revocation, its token hash.
#[derive(diesel::QueryableByName)]
pub(crate) struct TakenRow {
    #[diesel(sql_type = diesel::sql_types::Binary)]
    pub(crate) id: Vec<u8>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Binary>)]
    pub(crate) token_hash: Option<Vec<u8>>,
}

/// A stored session id, as the domain reads it.
pub(crate) fn session_id(bytes: &[u8]) -> Result<SessionId, StoreError> {
    Uuid::from_slice(bytes)
        .map(SessionId::from_uuid)
        .map_err(|err| InvalidRow::new("sessions", "id", RowId::Unknown, err).into())
}
