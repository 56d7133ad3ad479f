//! Everything that parses an id a client sends: the session token
//! (`SessionToken::parse`, and `TokenHash::of_token_text` on the resolve hot
//! path) and the `SessionId` and `AccountId` of paths and parameters.
//!
//! Invariants: no panic; the two token parsers agree; an accepted token is
//! exactly the text given and has the documented shape; an accepted id
//! prints back to the same UUID; every error's text is one made without
//! the input, so none can carry it.

#![no_main]

use libfuzzer_sys::fuzz_target;
use session_core::token::{TOKEN_LEN, TOKEN_PREFIX, TokenHash, TokenParseError};
use session_core::validation::{Field, Reason, ValidationError};
use session_core::{AccountId, SessionId, SessionToken};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };

    let token = SessionToken::parse(text);
    let hash = TokenHash::of_token_text(text);
    match (&token, &hash) {
        (Ok(token), Ok(hash)) => {
            assert_eq!(token.expose_secret(), text);
            assert_eq!(token.hash(), *hash);
            assert_eq!(text.len(), TOKEN_LEN);
            assert!(text.starts_with(TOKEN_PREFIX));
            assert!(
                text[TOKEN_PREFIX.len()..]
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric())
            );
            // Neither form of a token may show its secret part.
            let secret = &text[TOKEN_PREFIX.len()..];
            assert!(!format!("{token:?}").contains(secret));
            assert!(!format!("{token}").contains(secret));
        }
        (Err(a), Err(b)) => {
            assert_eq!(a, b, "the two token parsers disagree on why");
            assert_fixed(&a.to_string(), &TOKEN_ERRORS.map(|err| err.to_string()));
        }
        _ => panic!("SessionToken::parse and TokenHash::of_token_text disagree"),
    }

    match text.parse::<SessionId>() {
        Ok(id) => assert_eq!(id.to_string().parse::<SessionId>().ok(), Some(id)),
        Err(err) => assert_fixed(
            &err.to_string(),
            &[id_error(Field::SessionId, Reason::NotAUuid)],
        ),
    }
    match text.parse::<AccountId>() {
        Ok(id) => {
            assert!(!id.as_uuid().is_nil());
            assert_eq!(id.to_string().parse::<AccountId>().ok(), Some(id));
        }
        Err(err) => assert_fixed(
            &err.to_string(),
            &[
                id_error(Field::AccountId, Reason::NotAUuid),
                id_error(Field::AccountId, Reason::NilUuid),
            ],
        ),
    }
});

/// Every way a token can be refused.
const TOKEN_ERRORS: [TokenParseError; 4] = [
    TokenParseError::Length,
    TokenParseError::Prefix,
    TokenParseError::Alphabet,
    TokenParseError::Checksum,
];

fn id_error(field: Field, reason: Reason) -> String {
    ValidationError::new(field, reason).to_string()
}

/// An error's text is one of the texts made without any input, so it
/// cannot carry any part of the input.
fn assert_fixed(message: &str, fixed: &[String]) {
    assert!(
        fixed.iter().any(|text| text == message),
        "error {message:?} is not a fixed text"
    );
}
