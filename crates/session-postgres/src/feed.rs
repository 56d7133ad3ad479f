//! The change feed over LISTEN/NOTIFY: how one process hears the session
//! writes every other process commits to the same database.
//!
//! Publishing is done by triggers on `session.sessions` (migration
//! `2026-01-02-000000_publish_changes`), not by the store's statements:
//! whatever writes the table is heard (another process, another version of
//! this crate, an operator's `UPDATE`), each write stays one statement and
//! one round trip, and a notification sent inside the writing transaction
//! is delivered when it commits and never if it rolls back. PostgreSQL
//! delivers notifications in commit order.
//!
//! A payload is decoded as any stored row is, through the domain's
//! constructors. One that cannot be is never skipped: skipping it could
//! leave a revoked session in a cache, so the subscription ends with an
//! error and the subscriber re-warms.

use std::future::poll_fn;
use std::pin::pin;
use std::time::Duration;

use async_trait::async_trait;
use diesel::ConnectionError;
use diesel_async::{AsyncPgConnection, SimpleAsyncConnection};
use futures_core::Stream;
use ipnet::IpNet;
use serde::Deserialize;
use session_core::{BoxError, Change, ChangeFeed, ChangeSubscription, StoreError, TokenHash};
use time::OffsetDateTime;
use tokio::time::Instant;
use uuid::Uuid;

use crate::store::{PgSessionStore, SessionRow};

/// The channel every committed change to the active sessions is published
/// on, by triggers on `session.sessions`. LISTEN channels are per database;
/// this one belongs to the `session` schema, and nothing else should notify
/// on it.
///
/// Each payload is JSON with a format version, far below PostgreSQL's
/// 8000-byte limit:
///
/// - `{"v": 1, "op": "created", "id", "account_id", "token_hash",
///   "created_at_us", "user_agent", "ip", "label"}`: a session inserted
///   active; the token hash in hex, the creation time in microseconds since
///   the Unix epoch, absent metadata as `null`. About 1.7 kB at most for
///   metadata the domain accepts, about 4.1 kB for anything the schema lets
///   another writer store (escaped control characters take six bytes).
/// - `{"v": 1, "op": "revoked", "token_hashes": [...]}`: the hex token hashes
///   of sessions that went from active to revoked (or were deleted while
///   active), at most 100 per notification (under 7 kB), so a revoke-all of
///   thousands arrives as several.
/// - `{"v": 1, "op": "truncated"}`: the table was emptied, which says nothing
///   of which sessions went; a subscription ends with an error on it, so its
///   subscriber loads everything again.
///
/// A change of format is a new version: a reader meeting a version it does
/// not know ends its subscription rather than miss a revocation.
pub const CHANGES_CHANNEL: &str = "session_changes";

/// The payload version this build publishes (through its migrations) and reads.
const PAYLOAD_VERSION: u32 = 1;

/// Why the change feed failed. Never carries a payload, only its length.
#[derive(Debug, thiserror::Error)]
enum FeedError {
    #[error("cannot open the change-feed connection: {0}")]
    Connect(#[source] ConnectionError),
    #[error("cannot listen for session changes: {0}")]
    Listen(#[source] diesel::result::Error),
    #[error("the change-feed connection was not listening within {0:?}")]
    ListenTimedOut(Duration),
    #[error("the change-feed connection was lost: {0}")]
    Lost(#[source] diesel::result::Error),
    #[error("the change-feed connection was closed")]
    Closed,
    #[error("the change-feed connection did not answer a check within {0:?}")]
    Silent(Duration),
    #[error("a change notification of {bytes} bytes cannot be decoded: {reason}")]
    Undecodable {
        bytes: usize,
        #[source]
        reason: PayloadError,
    },
    #[error("the change-feed subscription has ended; subscribe again")]
    Ended,
    #[error("the sessions table was truncated; every cache must be loaded again")]
    Truncated,
}

/// What is wrong with a payload, without any of its content.
#[derive(Debug, thiserror::Error)]
enum PayloadError {
    #[error("not the expected JSON ({category} error at line {line}, column {column})")]
    Json {
        category: &'static str,
        line: usize,
        column: usize,
    },
    #[error("format version {0} is not supported: this build reads version {PAYLOAD_VERSION}")]
    Version(u32),
    #[error("{0} is malformed")]
    Field(&'static str),
    #[error("the session is invalid: {0}")]
    Session(#[source] BoxError),
}

impl PayloadError {
    /// serde_json's own messages may quote the input, so only where it failed is kept.
    fn json(err: &serde_json::Error) -> Self {
        use serde_json::error::Category;
        Self::Json {
            category: match err.classify() {
                Category::Io => "read",
                Category::Syntax => "syntax",
                Category::Data => "shape",
                Category::Eof => "truncation",
            },
            line: err.line(),
            column: err.column(),
        }
    }
}

fn unavailable(err: FeedError) -> StoreError {
    StoreError::Unavailable(Box::new(err))
}

#[async_trait]
impl ChangeFeed for PgSessionStore {
    /// Opens a connection of its own (the pool's settings and TLS; a pooled
    /// connection would be handed to other work) and returns once
    /// `LISTEN session_changes` has committed, so every change committed
    /// afterwards is delivered.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] if the connection cannot be opened or
    /// does not listen within the connect timeout.
    async fn subscribe(&self) -> Result<Box<dyn ChangeSubscription>, StoreError> {
        let listening = async {
            let mut connection = self.connector.connect().await.map_err(FeedError::Connect)?;
            connection
                .batch_execute(&format!("LISTEN {CHANGES_CHANNEL}"))
                .await
                .map_err(FeedError::Listen)?;
            Ok(connection)
        };
        let connection = match tokio::time::timeout(self.connect_timeout, listening).await {
            Ok(listening) => listening.map_err(unavailable)?,
            Err(_) => return Err(unavailable(FeedError::ListenTimedOut(self.connect_timeout))),
        };
        Ok(Box::new(PgSubscription {
            connection: Some(connection),
            heartbeat: self.feed_heartbeat,
            check_limit: self.connect_timeout,
            heard_at: Instant::now(),
        }))
    }
}

/// A listening connection. Dropping it closes the connection.
struct PgSubscription {
    /// `None` once the subscription has failed: it never delivers again.
    connection: Option<AsyncPgConnection>,
    /// Silence after which the connection is checked with a round trip.
    heartbeat: Duration,
    /// How long that check may take.
    check_limit: Duration,
    /// When the connection last proved alive.
    heard_at: Instant,
}

#[async_trait]
impl ChangeSubscription for PgSubscription {
    /// Cancel-safe: notifications wait in the connection's queue until a
    /// call takes one, and a check cut short is simply made again.
    async fn next_change(&mut self) -> Result<Change, StoreError> {
        let Some(connection) = self.connection.as_mut() else {
            return Err(unavailable(FeedError::Ended));
        };
        let result = next_change(
            connection,
            &mut self.heard_at,
            self.heartbeat,
            self.check_limit,
        )
        .await;
        if result.is_err() {
            // Closes the connection: a subscriber that missed a change must
            // subscribe afresh, and the server stops queueing for this one.
            self.connection = None;
        }
        result
    }
}

async fn next_change(
    connection: &mut AsyncPgConnection,
    heard_at: &mut Instant,
    heartbeat: Duration,
    check_limit: Duration,
) -> Result<Change, StoreError> {
    loop {
        let received = {
            let mut notifications = pin!(connection.notifications_stream());
            tokio::select! {
                biased;
                received = poll_fn(|cx| notifications.as_mut().poll_next(cx)) => Some(received),
                () = tokio::time::sleep_until(*heard_at + heartbeat) => None,
            }
        };
        match received {
            Some(Some(Ok(notification))) => {
                *heard_at = Instant::now();
                return match decode(&notification.payload) {
                    Ok(Some(change)) => Ok(change),
                    Ok(None) => Err(unavailable(FeedError::Truncated)),
                    Err(reason) => {
                        let bytes = notification.payload.len();
                        tracing::error!(
                            payload_bytes = bytes,
                            error = %reason,
                            "a session change notification cannot be decoded; resubscribing"
                        );
                        Err(StoreError::Failed(Box::new(FeedError::Undecodable {
                            bytes,
                            reason,
                        })))
                    }
                };
            }
            Some(Some(Err(err))) => return Err(unavailable(FeedError::Lost(err))),
            Some(None) => return Err(unavailable(FeedError::Closed)),
            // Quiet for a while: a connection whose peer vanished without
            // closing it would stay quiet for ever, so make it answer.
            None => match tokio::time::timeout(check_limit, connection.batch_execute("SELECT 1"))
                .await
            {
                Ok(Ok(())) => *heard_at = Instant::now(),
                Ok(Err(err)) => return Err(unavailable(FeedError::Lost(err))),
                Err(_) => return Err(unavailable(FeedError::Silent(check_limit))),
            },
        }
    }
}

/// Read first and alone, so a payload of another version is reported as such
/// rather than as whatever field it happens to lack.
#[derive(Deserialize)]
struct Versioned {
    v: u32,
}

#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Payload {
    Created {
        id: String,
        account_id: String,
        token_hash: String,
        created_at_us: i64,
        user_agent: Option<String>,
        ip: Option<String>,
        label: Option<String>,
    },
    Revoked {
        token_hashes: Vec<String>,
    },
    Truncated,
}

/// The change a payload carries; `None` for a truncation, which no change describes.
fn decode(payload: &str) -> Result<Option<Change>, PayloadError> {
    let Versioned { v } = serde_json::from_str(payload).map_err(|err| PayloadError::json(&err))?;
    if v != PAYLOAD_VERSION {
        return Err(PayloadError::Version(v));
    }
    match serde_json::from_str(payload).map_err(|err| PayloadError::json(&err))? {
        Payload::Created {
            id,
            account_id,
            token_hash,
            created_at_us,
            user_agent,
            ip,
            label,
        } => {
            let row = SessionRow {
                id: uuid(&id, "id")?,
                account_id: uuid(&account_id, "account_id")?,
                token_hash: hex(&token_hash).ok_or(PayloadError::Field("token_hash"))?,
                created_at: OffsetDateTime::from_unix_timestamp_nanos(
                    i128::from(created_at_us) * 1_000,
                )
                .map_err(|_| PayloadError::Field("created_at_us"))?,
                revoked_at: None,
                user_agent,
                ip: ip
                    .map(|ip| ip.parse::<std::net::IpAddr>().map(IpNet::from))
                    .transpose()
                    .map_err(|_| PayloadError::Field("ip"))?,
                label,
            };
            row.validate()
                .map(|session| Some(Change::Created(session)))
                .map_err(PayloadError::Session)
        }
        Payload::Revoked { token_hashes } => token_hashes
            .iter()
            .map(|text| {
                let bytes = hex(text).ok_or(PayloadError::Field("token_hashes"))?;
                TokenHash::try_from(bytes.as_slice())
                    .map_err(|err| PayloadError::Session(Box::new(err)))
            })
            .collect::<Result<_, _>>()
            .map(|hashes| Some(Change::Revoked(hashes))),
        Payload::Truncated => Ok(None),
    }
}

fn uuid(text: &str, field: &'static str) -> Result<Uuid, PayloadError> {
    Uuid::try_parse(text).map_err(|_| PayloadError::Field(field))
}

/// PostgreSQL's `encode(..., 'hex')`: two lowercase digits per byte.
fn hex(text: &str) -> Option<Vec<u8>> {
    fn digit(byte: u8) -> Option<u8> {
        match byte {
            b'0'..=b'9' => Some(byte - b'0'),
            b'a'..=b'f' => Some(byte - b'a' + 10),
            _ => None,
        }
    }
    let text = text.as_bytes();
    if !text.len().is_multiple_of(2) {
        return None;
    }
    text.chunks_exact(2)
        .map(|pair| Some((digit(pair[0])? << 4) | digit(pair[1])?))
        .collect()
}
