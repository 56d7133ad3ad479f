//! Revocation reasons: the grammar every reason keeps, and how a stored one reads.

use proptest::prelude::*;
use session_core::SessionId;
use session_core::port::store::{RowId, StoredSession};
use session_core::validation::{Field, Reason, ValidationError};
use session_core::{RevocationReason, Revoker};
use uuid::Uuid;

#[test]
fn the_built_in_reasons_are_their_names() {
    let names = ["logout", "admin", "idle", "limit"];
    for (reason, name) in RevocationReason::BUILT_IN.iter().zip(names) {
        assert_eq!(reason.as_str(), name);
        assert_eq!(&RevocationReason::new(name).unwrap(), reason);
        assert!(reason.is_built_in());
    }
}

#[test]
fn a_callers_own_reason_is_a_lowercase_identifier_of_at_most_32_bytes() {
    let longest = format!("a{}", "b_9".repeat(10) + "z");
    assert_eq!(longest.len(), RevocationReason::MAX_LEN);
    for text in ["password_change", "a", "mfa_reset_2", longest.as_str()] {
        let reason = RevocationReason::new(text).unwrap();
        assert_eq!(reason.as_str(), text);
        assert!(!reason.is_built_in());
        assert_eq!(text.parse::<RevocationReason>().unwrap(), reason);
    }
}

#[test]
fn anything_else_is_refused_by_name_without_echoing_it() {
    let too_long = "a".repeat(RevocationReason::MAX_LEN + 1);
    let cases = [
        ("", Reason::Empty),
        (
            too_long.as_str(),
            Reason::TooLong {
                max: 32,
                actual: 33,
            },
        ),
        ("Logout", Reason::NotAnIdentifier),
        ("LOGOUT", Reason::NotAnIdentifier),
        ("1st", Reason::NotAnIdentifier),
        ("_hidden", Reason::NotAnIdentifier),
        ("password change", Reason::NotAnIdentifier),
        ("pass-word", Reason::NotAnIdentifier),
        ("idle\n", Reason::NotAnIdentifier),
        ("logout\u{0}", Reason::NotAnIdentifier),
        ("déconnexion", Reason::NotAnIdentifier),
        ("x\"y", Reason::NotAnIdentifier),
    ];
    for (text, reason) in cases {
        let err = RevocationReason::new(text).expect_err(text);
        assert_eq!(
            err,
            ValidationError::new(Field::RevocationReason, reason),
            "{text:?}"
        );
        let message = err.to_string();
        assert!(message.starts_with("reason: "), "{message}");
        if !text.is_empty() {
            assert!(!message.contains(text), "{message} echoes {text:?}");
        }
    }
}

proptest! {
    /// The check and the published pattern agree on every input.
    #[test]
    fn the_check_is_the_pattern(text in "[a-z][a-z0-9_]{0,31}|\\PC{0,40}|[a-zA-Z0-9_ -]{0,34}") {
        let bytes = text.as_bytes();
        let matches = !bytes.is_empty()
            && bytes.len() <= 32
            && bytes[0].is_ascii_lowercase()
            && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_');
        prop_assert_eq!(RevocationReason::new(text.as_str()).is_ok(), matches);
    }
}

fn revoked_row(reason: Option<&[u8]>) -> StoredSession {
    StoredSession {
        id: Uuid::now_v7(),
        account_id: Uuid::new_v4(),
        token_hash: vec![7; 32],
        created_at: 0,
        revoked_at: Some(60_000_000),
        user_agent: None,
        ip: None,
        label: None,
        revocation_reason: reason.map(<[u8]>::to_vec),
        revoked_by: None,
    }
}

#[test]
fn a_stored_reason_reads_back_and_an_old_revocation_reads_as_none() {
    let session = revoked_row(Some(b"password_change"))
        .into_session("sessions")
        .unwrap();
    assert_eq!(
        session.revocation_reason().cloned(),
        Some(RevocationReason::new("password_change").unwrap())
    );
    let old = revoked_row(None).into_session("sessions").unwrap();
    assert!(old.revoked_at().is_some());
    assert_eq!(
        old.revocation_reason(),
        None,
        "revoked before reasons were recorded"
    );
}

#[test]
fn a_stored_reason_the_domain_refuses_names_the_column_not_the_value() {
    let rows = [
        (revoked_row(Some(b"Not Allowed")), Reason::NotAnIdentifier),
        (revoked_row(Some(b"\xff\xfe")), Reason::NotUtf8),
        (
            StoredSession {
                revoked_at: None,
                ..revoked_row(Some(b"logout"))
            },
            Reason::ReasonWithoutRevocation,
        ),
    ];
    for (row, reason) in rows {
        let id = SessionId::from_uuid(row.id);
        let invalid = row.into_session("sessions").expect_err("rejected");
        assert_eq!(invalid.column, "revocation_reason");
        assert_eq!(invalid.row, RowId::Session(id));
        let source = invalid
            .reason
            .downcast_ref::<ValidationError>()
            .expect("a validation error");
        assert_eq!(source.reason, reason);
        assert!(!invalid.to_string().contains("Not Allowed"));
    }
}

#[test]
fn a_stored_revoker_reads_back_and_one_the_domain_refuses_names_its_column() {
    let session = StoredSession {
        revoked_by: Some(b"writer".to_vec()),
        ..revoked_row(Some(b"logout"))
    }
    .into_session("sessions")
    .unwrap();
    assert_eq!(
        session.revoked_by().cloned(),
        Some(Revoker::new("writer").unwrap())
    );
    for (row, reason) in [
        (
            StoredSession {
                revoked_by: Some(b"Key One".to_vec()),
                ..revoked_row(Some(b"logout"))
            },
            Reason::NotAnIdentifier,
        ),
        (
            StoredSession {
                revoked_at: None,
                revoked_by: Some(b"writer".to_vec()),
                ..revoked_row(None)
            },
            Reason::ReasonWithoutRevocation,
        ),
    ] {
        let invalid = row.into_session("sessions").expect_err("rejected");
        assert_eq!(invalid.column, "revoked_by");
        let source = invalid
            .reason
            .downcast_ref::<ValidationError>()
            .expect("a validation error");
        assert_eq!(*source, ValidationError::new(Field::RevokedBy, reason));
        assert!(!invalid.to_string().contains("Key One"), "{invalid}");
    }
}
