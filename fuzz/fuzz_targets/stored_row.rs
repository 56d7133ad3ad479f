//! What turns a stored row into a domain session: `StoredSession::into_session`,
//! which every store's rows go through with every column in a raw form
//! (instants as any `i64` of microseconds, text as any bytes), and the
//! SQLite store's decoding of its ids and addresses before it.
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
use session_core::port::store::{
    EARLIEST_STORED_MICROS, InvalidRow, LATEST_STORED_MICROS, RowId, StoredSession, stored_instant,
};
use session_core::token::TokenHash;
use session_core::{AccountId, Label, SessionId, UserAgent};
use session_sqlite::{RawText, SessionRow};
use uuid::Uuid;

#[derive(Arbitrary, Debug)]
enum Row {
    /// A row as any store hands it to session-core.
    Stored {
        id: u128,
        account_id: u128,
        token_hash: Vec<u8>,
        created_at: Micros,
        revoked_at: Option<Micros>,
        user_agent: Option<Text>,
        ip: Option<IpAddr>,
        label: Option<Text>,
    },
    /// A row as SQLite returns it.
    Sqlite {
        id: Vec<u8>,
        account_id: Vec<u8>,
        token_hash: Vec<u8>,
        created_at: Micros,
        revoked_at: Option<Micros>,
        user_agent: Option<Text>,
        ip: Option<String>,
        label: Option<Text>,
    },
}

/// A stored instant: mostly one the domain accepts, so the fuzzer reaches
/// the columns after it, or any `i64` at all.
#[derive(Arbitrary, Debug)]
enum Micros {
    InRange(i64),
    Any(i64),
}

impl Micros {
    fn get(&self) -> i64 {
        match *self {
            Self::InRange(micros) => {
                EARLIEST_STORED_MICROS
                    + micros.rem_euclid(LATEST_STORED_MICROS - EARLIEST_STORED_MICROS + 1)
            }
            Self::Any(micros) => micros,
        }
    }
}

/// Stored text: mostly UTF-8, so the fuzzer reaches the domain's rules for
/// it, or any bytes at all.
#[derive(Arbitrary, Debug)]
enum Text {
    Utf8(String),
    Bytes(Vec<u8>),
}

impl Text {
    fn get(&self) -> Vec<u8> {
        match self {
            Self::Utf8(text) => text.clone().into_bytes(),
            Self::Bytes(bytes) => bytes.clone(),
        }
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
            revoked_at: revoked_at.as_ref().map(Micros::get),
            user_agent: user_agent.as_ref().map(Text::get),
            ip,
            label: label.as_ref().map(Text::get),
            revocation_reason: None,
            revoked_by: None,
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
        let created_at = created_at.get();
        let revoked_at = revoked_at.as_ref().map(Micros::get);
        let user_agent = user_agent.as_ref().map(Text::get);
        let label = label.as_ref().map(Text::get);
        let row = SessionRow {
            id: id.clone(),
            account_id: account_id.clone(),
            token_hash: token_hash.clone(),
            created_at,
            revoked_at,
            user_agent: user_agent.clone().map(RawText),
            ip: ip.clone(),
            label: label.clone().map(RawText),
            revocation_reason: None,
            revoked_by: None,
        };
        let decoded = row.into_session();
        // What the SQLite columns mean, decoded independently: the ids'
        // bytes and the address's text; the rest is the domain's.
        let uuid = |bytes: &[u8]| <[u8; 16]>::try_from(bytes).ok().map(Uuid::from_bytes);
        let columns = [
            ("id", uuid(&id).is_some()),
            ("account_id", uuid(&account_id).is_some()),
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
            created_at,
            revoked_at,
            user_agent,
            ip: ip.map(|ip| ip.parse().expect("checked")),
            label,
            revocation_reason: None,
            revoked_by: None,
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
    // Absent, or UTF-8 the domain accepts.
    let text_ok = |bytes: Option<&[u8]>, accepts: fn(&str) -> bool| {
        bytes.is_none_or(|bytes| std::str::from_utf8(bytes).is_ok_and(accepts))
    };
    let user_agent_ok = text_ok(stored.user_agent.as_deref(), |ua| {
        UserAgent::new(ua).is_ok()
    });
    let label_ok = text_ok(stored.label.as_deref(), |label| Label::new(label).is_ok());
    let in_range = |micros: i64| (EARLIEST_STORED_MICROS..=LATEST_STORED_MICROS).contains(&micros);
    let columns = [
        ("account_id", AccountId::new(stored.account_id).is_ok()),
        (
            "token_hash",
            TokenHash::try_from(stored.token_hash.as_slice()).is_ok(),
        ),
        ("created_at", in_range(stored.created_at)),
        ("revoked_at", stored.revoked_at.is_none_or(in_range)),
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
            let micros = |at: time::OffsetDateTime| at.unix_timestamp_nanos() / 1_000;
            assert_eq!(micros(session.created_at), i128::from(stored.created_at));
            assert_eq!(
                session.created_at,
                stored_instant(stored.created_at).expect("in range")
            );
            assert_eq!(
                session.revoked_at().map(micros),
                stored.revoked_at.map(i128::from)
            );
            let metadata = &session.metadata;
            assert_eq!(
                metadata
                    .user_agent
                    .as_ref()
                    .map(|ua| ua.as_str().as_bytes()),
                stored.user_agent.as_deref()
            );
            assert_eq!(
                metadata
                    .label
                    .as_ref()
                    .map(|label| label.as_str().as_bytes()),
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
    "must be UTF-8 text",
    "must be an instant from 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999Z",
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
