//! The opaque `cursor` of a paginated list: where the next page starts.
//!
//! A cursor is client input, so it is decoded strictly and trusted for
//! nothing but the position it names. It carries the account and the scope
//! (`include_revoked`) of the listing it came from, and is refused with one
//! fixed message under any other: a cursor cannot move a listing to another
//! account, and the account in the path alone decides which rows are read.
//! It is not signed: all it can name is a place in a list the caller may
//! read from the start anyway.
//!
//! Layout (version 1, 50 bytes, then base64url without padding): the
//! version, the scope, the account id (16 bytes), the position's
//! `created_at` in Unix nanoseconds (big-endian `i128`), and its session id
//! (16 bytes).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use session_core::port::store::stored_instant;
use session_core::{AccountId, ListPosition, ListScope, SessionId};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::ApiError;

const VERSION: u8 = 1;
const LEN: usize = 1 + 1 + 16 + 16 + 16;
/// The longest text a valid cursor can be: anything longer is refused
/// before decoding.
const MAX_TEXT_LEN: usize = LEN.div_ceil(3) * 4;

/// The cursor of the page after `position` in `account`'s list of `scope`.
pub(crate) fn encode(account: AccountId, scope: ListScope, position: ListPosition) -> String {
    let mut bytes = [0; LEN];
    bytes[0] = VERSION;
    bytes[1] = scope_byte(scope);
    bytes[2..18].copy_from_slice(account.as_uuid().as_bytes());
    bytes[18..34].copy_from_slice(&position.created_at.unix_timestamp_nanos().to_be_bytes());
    bytes[34..50].copy_from_slice(position.id.as_uuid().as_bytes());
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The position `text` names, if it is a cursor of `account`'s list of
/// `scope`.
///
/// # Errors
///
/// 400 `invalid_request` with one fixed message, whatever is wrong: not
/// base64url, the wrong length or version, an instant no stored session
/// can have (see [`stored_position`]), or another listing's cursor. The
/// message never repeats the text.
pub(crate) fn decode(
    text: &str,
    account: AccountId,
    scope: ListScope,
) -> Result<ListPosition, ApiError> {
    let refused = || {
        ApiError::invalid_request(
            "cursor: not a cursor of this listing; use `next_cursor` as given, with the same \
             account and `include_revoked`, or start again without one",
        )
    };
    if text.len() > MAX_TEXT_LEN {
        return Err(refused());
    }
    // The standard engine refuses padding, non-canonical trailing bits and
    // any character outside the URL-safe alphabet.
    let bytes: [u8; LEN] = URL_SAFE_NO_PAD
        .decode(text)
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or_else(refused)?;
    if bytes[0] != VERSION
        || bytes[1] != scope_byte(scope)
        || bytes[2..18] != *account.as_uuid().as_bytes()
    {
        return Err(refused());
    }
    let nanos = i128::from_be_bytes(bytes[18..34].try_into().map_err(|_| refused())?);
    let created_at = stored_position(nanos).ok_or_else(refused)?;
    let id = Uuid::from_slice(&bytes[34..50]).map_err(|_| refused())?;
    Ok(ListPosition {
        created_at,
        id: SessionId::from_uuid(id),
    })
}

/// The instant `nanos` after the Unix epoch, if a session can have been
/// created then: a whole microsecond that every store can hold
/// (session-core's [`stored_instant`], years 0001 to 9999). A cursor is
/// only ever made from a stored session's `created_at`, so any other
/// instant is forged, and is refused here, at the edge: PostgreSQL would
/// fail the query on an instant it cannot represent (a 500), and SQLite
/// would answer a page that cannot exist.
fn stored_position(nanos: i128) -> Option<OffsetDateTime> {
    if nanos % 1_000 != 0 {
        return None;
    }
    stored_instant(i64::try_from(nanos / 1_000).ok()?)
}

fn scope_byte(scope: ListScope) -> u8 {
    match scope {
        ListScope::Active => 0,
        ListScope::IncludeRevoked => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn position() -> ListPosition {
        ListPosition {
            created_at: time::macros::datetime!(2026-01-02 03:04:05.123456 UTC),
            id: SessionId::from_uuid(Uuid::now_v7()),
        }
    }

    #[test]
    fn a_cursor_names_its_position_only_in_its_own_listing() {
        let account = AccountId::new(Uuid::new_v4()).unwrap();
        let position = position();
        let cursor = encode(account, ListScope::IncludeRevoked, position);
        assert_eq!(
            decode(&cursor, account, ListScope::IncludeRevoked).unwrap(),
            position
        );
        assert!(decode(&cursor, account, ListScope::Active).is_err());
        let other = AccountId::new(Uuid::new_v4()).unwrap();
        assert!(decode(&cursor, other, ListScope::IncludeRevoked).is_err());
    }

    #[test]
    fn anything_but_an_exact_cursor_is_refused() {
        let account = AccountId::new(Uuid::new_v4()).unwrap();
        let scope = ListScope::Active;
        let cursor = encode(account, scope, position());
        let mut bytes = URL_SAFE_NO_PAD.decode(&cursor).unwrap();
        let reencode = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
        let mut versioned = bytes.clone();
        versioned[0] = 2;
        let mut far = bytes.clone();
        far[18..34].copy_from_slice(&i128::MAX.to_be_bytes());
        let instant = |nanos: i128| {
            let mut forged = bytes.clone();
            forged[18..34].copy_from_slice(&nanos.to_be_bytes());
            forged
        };
        // Year -5000, which `time` holds and PostgreSQL does not; the instant
        // before 0001-01-01; one nanosecond past a stored microsecond.
        let ancient = instant(-220_000_000_000 * 1_000_000_000);
        let before_year_one = instant(-62_135_596_800_000_000_001);
        let fraction = instant(1_767_323_045_123_456_001);
        bytes.push(0);
        for bad in [
            String::new(),
            format!("{cursor}="),
            format!("{cursor}A"),
            cursor[..cursor.len() - 1].to_owned(),
            cursor.replace(|c: char| c.is_ascii_alphabetic(), "+"),
            reencode(&versioned),
            reencode(&far),
            reencode(&ancient),
            reencode(&before_year_one),
            reencode(&fraction),
            reencode(&bytes),
            "x".repeat(10_000),
        ] {
            assert!(decode(&bad, account, scope).is_err(), "{bad:?}");
        }
    }
}
