//! Conversions between domain sessions and their SQLite rows.

use std::net::IpAddr;

use diesel::prelude::*;
use session_core::{
    AccountId, ClientMetadata, Label, Session, SessionId, StoreError, TokenHash, UserAgent,
};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::schema::sessions;

/// A stored session, column for column.
#[derive(Queryable, Selectable)]
#[diesel(table_name = sessions)]
#[diesel(check_for_backend(diesel::sqlite::Sqlite))]
pub(crate) struct SessionRow {
    id: Vec<u8>,
    account_id: Vec<u8>,
    token_hash: Vec<u8>,
    created_at: i64,
    revoked_at: Option<i64>,
    user_agent: Option<String>,
    ip: Option<String>,
    label: Option<String>,
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

/// A stored row that does not make a valid session: written by something other
/// than this crate, or damaged. Names the column, never the stored value.
#[derive(Debug, thiserror::Error)]
#[error("stored session has an invalid {column}: {reason}")]
pub(crate) struct InvalidRow {
    column: &'static str,
    reason: String,
}

impl InvalidRow {
    fn new(column: &'static str, reason: impl ToString) -> Self {
        Self {
            column,
            reason: reason.to_string(),
        }
    }
}

impl TryFrom<SessionRow> for Session {
    type Error = InvalidRow;

    fn try_from(row: SessionRow) -> Result<Self, Self::Error> {
        let uuid = |column, bytes: &[u8]| {
            Uuid::from_slice(bytes).map_err(|err| InvalidRow::new(column, err))
        };
        let account_id = AccountId::new(uuid("account_id", &row.account_id)?)
            .map_err(|err| InvalidRow::new("account_id", err.reason))?;
        let token_hash = TokenHash::try_from(row.token_hash.as_slice())
            .map_err(|err| InvalidRow::new("token_hash", err))?;
        let ip = row
            .ip
            .map(|text| text.parse::<IpAddr>())
            .transpose()
            .map_err(|err| InvalidRow::new("ip", err))?;
        let user_agent = row
            .user_agent
            .map(UserAgent::new)
            .transpose()
            .map_err(|err| InvalidRow::new("user_agent", err.reason))?;
        let label = row
            .label
            .map(Label::new)
            .transpose()
            .map_err(|err| InvalidRow::new("label", err.reason))?;
        Ok(Self {
            id: SessionId::from_uuid(uuid("id", &row.id)?),
            account_id,
            token_hash,
            created_at: instant("created_at", row.created_at)?,
            revoked_at: row
                .revoked_at
                .map(|at| instant("revoked_at", at))
                .transpose()?,
            metadata: ClientMetadata {
                user_agent,
                ip,
                label,
            },
        })
    }
}

/// Converts rows read from the database into sessions.
pub(crate) fn sessions(rows: Vec<SessionRow>) -> Result<Vec<Session>, StoreError> {
    rows.into_iter()
        .map(|row| Session::try_from(row).map_err(|err| StoreError::Failed(Box::new(err))))
        .collect()
}

/// Converts one row read from the database into a session.
pub(crate) fn session(row: SessionRow) -> Result<Session, StoreError> {
    Session::try_from(row).map_err(|err| StoreError::Failed(Box::new(err)))
}

/// Reads a stored token hash (from a `RETURNING` clause).
pub(crate) fn token_hash(bytes: &[u8]) -> Result<TokenHash, StoreError> {
    TokenHash::try_from(bytes)
        .map_err(|err| StoreError::Failed(Box::new(InvalidRow::new("token_hash", err))))
}

/// An instant as stored: whole microseconds since the Unix epoch, UTC.
/// Sub-microsecond digits are dropped, as every store does.
pub(crate) fn micros(at: OffsetDateTime) -> Result<i64, StoreError> {
    // Flooring keeps instants before 1970 in order, like `to_micros` in session-core.
    i64::try_from(at.unix_timestamp_nanos().div_euclid(1_000))
        .map_err(|_| StoreError::Failed("instant out of the storable range".into()))
}

fn instant(column: &'static str, micros: i64) -> Result<OffsetDateTime, InvalidRow> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1_000)
        .map_err(|err| InvalidRow::new(column, err))
}
