//! `StoredSession::into_session`, the one place a stored row becomes a
//! session: every raw value a store can hand it is either a session or an
//! `InvalidRow` naming the column, never a panic, never the value.

use std::net::{IpAddr, Ipv4Addr};

use session_core::port::store::{
    EARLIEST_STORED_MICROS, InvalidRow, LATEST_STORED_MICROS, RowId, StoredSession, stored_instant,
};
use session_core::{Label, SessionId, UserAgent};
use time::OffsetDateTime;
use time::macros::datetime;
use uuid::Uuid;

const TABLE: &str = "session.sessions";

fn micros(at: OffsetDateTime) -> i64 {
    i64::try_from(at.unix_timestamp_nanos() / 1_000).unwrap()
}

/// A row every column of which the domain accepts.
fn valid() -> StoredSession {
    StoredSession {
        id: Uuid::now_v7(),
        account_id: Uuid::new_v4(),
        token_hash: vec![7; 32],
        created_at: micros(datetime!(2026-01-02 03:04:05.123456 UTC)),
        revoked_at: None,
        user_agent: Some(b"curl/8.5".to_vec()),
        ip: Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))),
        label: Some("laptop".as_bytes().to_vec()),
        revocation_reason: None,
        revoked_by: None,
    }
}

/// The rejection of `row`, checked to name the table, the row and `column`.
fn rejected(row: StoredSession, column: &str) -> InvalidRow {
    let id = SessionId::from_uuid(row.id);
    let invalid = row.into_session(TABLE).expect_err(column);
    assert_eq!(invalid.table, TABLE);
    assert_eq!(invalid.column, column);
    assert_eq!(invalid.row, RowId::Session(id));
    invalid
}

#[test]
fn the_stored_range_is_years_1_to_9999() {
    assert_eq!(
        stored_instant(EARLIEST_STORED_MICROS),
        Some(datetime!(0001-01-01 0:00 UTC))
    );
    assert_eq!(
        stored_instant(LATEST_STORED_MICROS),
        Some(datetime!(9999-12-31 23:59:59.999_999 UTC))
    );
    assert_eq!(stored_instant(EARLIEST_STORED_MICROS - 1), None);
    assert_eq!(stored_instant(LATEST_STORED_MICROS + 1), None);
    assert_eq!(stored_instant(i64::MIN), None);
    assert_eq!(stored_instant(i64::MAX), None);
}

#[test]
fn instants_at_the_bounds_and_the_epochs_are_sessions() {
    for at in [
        datetime!(0001-01-01 0:00 UTC),
        datetime!(1969-12-31 23:59:59.999_999 UTC),
        datetime!(1970-01-01 0:00 UTC),
        datetime!(2000-01-01 0:00 UTC),
        datetime!(9999-12-31 23:59:59.999_999 UTC),
    ] {
        let row = StoredSession {
            created_at: micros(at),
            revoked_at: Some(micros(at)),
            ..valid()
        };
        let session = row.into_session(TABLE).unwrap();
        assert_eq!(session.created_at, at);
        assert_eq!(session.revoked_at(), Some(at));
    }
}

#[test]
fn an_instant_out_of_range_is_rejected_by_column() {
    for out in [
        i64::MIN,
        EARLIEST_STORED_MICROS - 1,
        LATEST_STORED_MICROS + 1,
        i64::MAX,
    ] {
        let invalid = rejected(
            StoredSession {
                created_at: out,
                ..valid()
            },
            "created_at",
        );
        let reason = invalid.reason.to_string();
        assert!(
            reason.starts_with("created_at: must be an instant from"),
            "{reason}"
        );
        rejected(
            StoredSession {
                revoked_at: Some(out),
                ..valid()
            },
            "revoked_at",
        );
    }
}

#[test]
fn text_that_is_not_utf8_is_rejected_without_echoing_it() {
    let not_utf8 = b"secret\xff\xfe".to_vec();
    for (row, column) in [
        (
            StoredSession {
                user_agent: Some(not_utf8.clone()),
                ..valid()
            },
            "user_agent",
        ),
        (
            StoredSession {
                label: Some(not_utf8.clone()),
                ..valid()
            },
            "label",
        ),
    ] {
        let text = rejected(row, column).to_string();
        assert!(text.contains("must be UTF-8 text"), "{text}");
        assert!(!text.contains("secret"), "{text}");
    }
}

#[test]
fn text_the_domain_rejects_is_rejected_by_column() {
    let cases = [
        (b"".to_vec(), b"".to_vec()),
        (
            vec![b'u'; UserAgent::MAX_LEN + 1],
            vec![b'l'; Label::MAX_LEN + 1],
        ),
        (b"bell\x07".to_vec(), b"bell\x07".to_vec()),
        (
            "c1 \u{85}".as_bytes().to_vec(),
            "c1 \u{85}".as_bytes().to_vec(),
        ),
        (b"nul\0".to_vec(), b"nul\0".to_vec()),
    ];
    for (user_agent, label) in cases {
        rejected(
            StoredSession {
                user_agent: Some(user_agent),
                ..valid()
            },
            "user_agent",
        );
        rejected(
            StoredSession {
                label: Some(label),
                ..valid()
            },
            "label",
        );
    }
    // At the limits, and absent, they are accepted.
    let session = StoredSession {
        user_agent: Some(vec![b'u'; UserAgent::MAX_LEN]),
        label: Some(vec![b'l'; Label::MAX_LEN]),
        ..valid()
    }
    .into_session(TABLE)
    .unwrap();
    assert_eq!(
        session.metadata.label.unwrap().as_str().len(),
        Label::MAX_LEN
    );
    let bare = StoredSession {
        user_agent: None,
        ip: None,
        label: None,
        ..valid()
    }
    .into_session(TABLE)
    .unwrap();
    assert_eq!(bare.metadata, session_core::ClientMetadata::default());
}

#[test]
fn a_hash_of_any_length_but_32_and_a_nil_account_are_rejected() {
    for length in [0, 1, 31, 33, 64] {
        rejected(
            StoredSession {
                token_hash: vec![1; length],
                ..valid()
            },
            "token_hash",
        );
    }
    rejected(
        StoredSession {
            account_id: Uuid::nil(),
            ..valid()
        },
        "account_id",
    );
}

#[test]
fn a_valid_row_is_the_session_it_holds() {
    let row = StoredSession {
        ip: Some(IpAddr::V6(Ipv4Addr::new(198, 51, 100, 4).to_ipv6_mapped())),
        ..valid()
    };
    let session = row.clone().into_session(TABLE).unwrap();
    assert_eq!(session.id.as_uuid(), &row.id);
    assert_eq!(session.account_id.as_uuid(), &row.account_id);
    assert_eq!(session.token_hash.as_bytes().as_slice(), row.token_hash);
    assert_eq!(
        session.created_at,
        datetime!(2026-01-02 03:04:05.123456 UTC)
    );
    assert_eq!(session.revoked_at(), None);
    let metadata = &session.metadata;
    assert_eq!(metadata.user_agent.as_ref().unwrap().as_str(), "curl/8.5");
    assert_eq!(metadata.label.as_ref().unwrap().as_str(), "laptop");
    // An IPv4 client seen through an IPv6 socket is an IPv4 client.
    assert_eq!(
        metadata.ip,
        Some(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 4)))
    );
}
