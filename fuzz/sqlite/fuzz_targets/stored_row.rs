//! What turns a stored row into a domain session: `StoredSession::into_session`,
//! which every store's rows go through, and the SQLite store's decoding of
//! its bytes, integers and text before it.
//!
//! The row is structured with `arbitrary`, so the fuzzer spends its time on
//! values rather than on a byte layout. Invariants: no panic; a row becomes
//! either a session holding exactly the row's values, or an `InvalidRow`
//! naming the table, the row and the first column whose value really is
//! invalid, with a reason that is fixed text and numbers, never the
//! stored text.

#![no_main]

use std::net::IpAddr;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use session_core::port::store::{InvalidRow, RowId, StoredSession};
use session_core::token::TokenHash;
use session_core::{AccountId, Label, SessionId, UserAgent};
use session_sqlite::SessionRow;
use time::OffsetDateTime;
use uuid::Uuid;

#[derive(Arbitrary, Debug)]
enum Row {
    /// A row as any store hands it to session-core.
    Stored {
        id: u128,
        account_id: u128,
        token_hash: Vec<u8>,
        created_at: Instant,
        revoked_at: Option<Instant>,
        user_agent: Option<String>,
        ip: Option<IpAddr>,
        label: Option<String>,
    },
    /// A row as SQLite returns it.
    Sqlite {
        id: Vec<u8>,
        account_id: Vec<u8>,
        token_hash: Vec<u8>,
        created_at: i64,
        revoked_at: Option<i64>,
        user_agent: Option<String>,
        ip: Option<String>,
        label: Option<String>,
    },
}

/// Any instant `OffsetDateTime` can hold, from seconds and nanoseconds.
#[derive(Arbitrary, Debug)]
struct Instant(i64, u32);

impl Instant {
    fn get(&self) -> OffsetDateTime {
        let min = OffsetDateTime::new_utc(time::Date::MIN, time::Time::MIDNIGHT).unix_timestamp();
        let max = OffsetDateTime::new_utc(time::Date::MAX, time::Time::MIDNIGHT).unix_timestamp();
        let seconds = min + self.0.rem_euclid(max - min);
        OffsetDateTime::from_unix_timestamp(seconds).expect("in range")
            + time::Duration::nanoseconds(i64::from(self.1 % 1_000_000_000))
    }
}

const TABLE: &str = "session.sessions";

fuzz_target!(|row: Row| match row {
    Row::Stored {
        id,
        account_id,
        token_hash,
        created_at,
        revoked_at,
        user_agent,
        ip,
        label,
    } => {
        let stored = StoredSession {
            id: Uuid::from_u128(id),
            account_id: Uuid::from_u128(account_id),
            token_hash,
            created_at: created_at.get(),
            revoked_at: revoked_at.as_ref().map(Instant::get),
            user_agent,
            ip,
            label,
        };
        check_stored(stored.clone(), stored.into_session(TABLE));
    }
    Row::Sqlite {
        id,
        account_id,
        token_hash,
        created_at,
        revoked_at,
        user_agent,
        ip,
        label,
    } => {
        let row = SessionRow {
            id: id.clone(),
            account_id: account_id.clone(),
            token_hash: token_hash.clone(),
            created_at,
            revoked_at,
            user_agent: user_agent.clone(),
            ip: ip.clone(),
            label: label.clone(),
        };
        let decoded = row.into_session();
        // What the SQLite columns mean, decoded independently.
        let uuid = |bytes: &[u8]| <[u8; 16]>::try_from(bytes).ok().map(Uuid::from_bytes);
        let instant = |micros: i64| {
            OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1_000).ok()
        };
        let columns = [
            ("id", uuid(&id).is_some()),
            ("account_id", uuid(&account_id).is_some()),
            ("created_at", instant(created_at).is_some()),
            (
                "revoked_at",
                revoked_at.is_none_or(|at| instant(at).is_some()),
            ),
            (
                "ip",
                ip.as_deref().is_none_or(|ip| ip.parse::<IpAddr>().is_ok()),
            ),
        ];
        if let Some(&(column, _)) = columns.iter().find(|(_, ok)| !ok) {
            let invalid = decoded.expect_err("a column SQLite cannot decode was accepted");
            assert_eq!(invalid.table, "sessions");
            assert_eq!(invalid.column, column);
            let expected_row = uuid(&id).map_or(RowId::Unknown, |id| {
                RowId::Session(SessionId::from_uuid(id))
            });
            assert_eq!(invalid.row, expected_row);
            return;
        }
        let stored = StoredSession {
            id: uuid(&id).expect("checked"),
            account_id: uuid(&account_id).expect("checked"),
            token_hash,
            created_at: instant(created_at).expect("checked"),
            revoked_at: revoked_at.map(|at| instant(at).expect("checked")),
            user_agent,
            ip: ip.map(|ip| ip.parse().expect("checked")),
            label,
        };
        let decoded = decoded.map_err(|invalid| {
            assert_eq!(invalid.table, "sessions");
            InvalidRow::new(TABLE, invalid.column, invalid.row, invalid.reason)
        });
        check_stored(stored, decoded);
    }
});

/// `result` is what `stored` became: check it against the domain's own
/// constructors, column by column, in the order they are checked.
fn check_stored(stored: StoredSession, result: Result<session_core::Session, InvalidRow>) {
    let id = SessionId::from_uuid(stored.id);
    let user_agent_ok = stored
        .user_agent
        .as_deref()
        .is_none_or(|ua| UserAgent::new(ua).is_ok());
    let label_ok = stored
        .label
        .as_deref()
        .is_none_or(|label| Label::new(label).is_ok());
    let columns = [
        ("account_id", AccountId::new(stored.account_id).is_ok()),
        (
            "token_hash",
            TokenHash::try_from(stored.token_hash.as_slice()).is_ok(),
        ),
        ("user_agent", user_agent_ok),
        ("label", label_ok),
    ];
    match result {
        Ok(session) => {
            assert!(
                columns.iter().all(|(_, ok)| *ok),
                "an invalid row was accepted"
            );
            assert_eq!(session.id, id);
            assert_eq!(session.account_id.as_uuid(), &stored.account_id);
            assert_eq!(
                session.token_hash.as_bytes().as_slice(),
                stored.token_hash.as_slice()
            );
            assert_eq!(session.created_at, stored.created_at);
            assert_eq!(session.revoked_at, stored.revoked_at);
            let metadata = &session.metadata;
            assert_eq!(
                metadata.user_agent.as_ref().map(UserAgent::as_str),
                stored.user_agent.as_deref()
            );
            assert_eq!(
                metadata.label.as_ref().map(Label::as_str),
                stored.label.as_deref()
            );
            assert_eq!(metadata.ip, stored.ip.map(|ip| ip.to_canonical()));
        }
        Err(invalid) => {
            let first = columns
                .iter()
                .find(|(_, ok)| !ok)
                .map(|(column, _)| *column);
            assert_eq!(
                Some(invalid.column),
                first,
                "the error names the wrong column"
            );
            assert_eq!(invalid.table, TABLE);
            assert_eq!(invalid.row, RowId::Session(id));
            // Only numbers of the value, never its text.
            let reason = digits_as_hash(&invalid.reason.to_string());
            let fixed = match invalid.column {
                "token_hash" => reason == "a token hash is # bytes, found #",
                column => reason
                    .strip_prefix(column)
                    .and_then(|r| r.strip_prefix(": "))
                    .is_some_and(|r| REASONS.iter().any(|t| digits_as_hash(t) == r)),
            };
            assert!(fixed, "the reason {reason:?} is not a fixed text");
        }
    }
}

/// Why the domain refuses a stored value, with numbers as `#`.
const REASONS: &[&str] = &[
    "must not be empty (omit the field instead)",
    "must be at most # bytes, got #",
    "must not contain control characters",
    "must not be the nil UUID",
];

fn digits_as_hash(text: &str) -> String {
    let mut shape = String::with_capacity(text.len());
    for c in text.chars() {
        if !c.is_ascii_digit() {
            shape.push(c);
        } else if !shape.ends_with('#') {
            shape.push('#');
        }
    }
    shape
}
