//! Property tests of the token's text form.

use proptest::prelude::*;
use session_core::SessionToken;
use session_core::token::{TOKEN_LEN, TOKEN_PREFIX, TokenHash, TokenParseError};

/// An independent statement of validity: prefix, length, alphabet, and the
/// last six characters spelling CRC32 of the rest in base62.
fn is_valid(text: &str) -> bool {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    if text.len() != 54 || !text.starts_with("sess_") || !text.is_ascii() {
        return false;
    }
    if !text[5..].chars().all(|c| c.is_ascii_alphanumeric()) {
        return false;
    }
    let mut crc = u64::from(crc32fast::hash(&text.as_bytes()[..48]));
    let mut expected = Vec::new();
    for _ in 0..6 {
        expected.push(ALPHABET[(crc % 62) as usize]);
        crc /= 62;
    }
    expected.reverse();
    expected == text.as_bytes()[48..]
}

fn token_strategy() -> impl Strategy<Value = String> {
    // Generation is random by itself; the strategy only drives the case count.
    any::<u8>().prop_map(|_| SessionToken::generate().expose_secret().to_owned())
}

proptest! {
    #[test]
    fn generated_tokens_round_trip_through_text(text in token_strategy()) {
        prop_assert_eq!(text.len(), TOKEN_LEN);
        prop_assert!(text.starts_with(TOKEN_PREFIX));
        prop_assert!(is_valid(&text));
        let parsed = SessionToken::parse(&text).unwrap();
        prop_assert_eq!(parsed.expose_secret(), text.as_str());
        prop_assert_eq!(parsed.hash(), TokenHash::of_token_text(&text).unwrap());
    }

    #[test]
    fn any_single_character_change_is_rejected(
        text in token_strategy(),
        index in 0..TOKEN_LEN,
        replacement in any::<char>(),
    ) {
        let original = text.as_bytes()[index] as char;
        prop_assume!(replacement != original);
        let mut changed = text.clone();
        changed.replace_range(index..=index, replacement.encode_utf8(&mut [0; 4]));
        prop_assert!(SessionToken::parse(&changed).is_err());
        prop_assert!(TokenHash::of_token_text(&changed).is_err());
    }

    #[test]
    fn a_dropped_or_added_character_is_rejected(text in token_strategy(), index in 0..TOKEN_LEN) {
        let mut shorter = text.clone();
        shorter.remove(index);
        prop_assert_eq!(SessionToken::parse(&shorter).unwrap_err(), TokenParseError::Length);
        let mut longer = text.clone();
        longer.insert(index, 'a');
        prop_assert_eq!(SessionToken::parse(&longer).unwrap_err(), TokenParseError::Length);
    }

    #[test]
    fn arbitrary_strings_are_rejected_unless_valid(text in any::<String>()) {
        prop_assert_eq!(SessionToken::parse(&text).is_ok(), is_valid(&text));
    }

    #[test]
    fn well_shaped_strings_are_accepted_exactly_when_the_checksum_matches(
        body in "[0-9A-Za-z]{49}",
    ) {
        let text = format!("sess_{body}");
        prop_assert_eq!(SessionToken::parse(&text).is_ok(), is_valid(&text));
        prop_assert_eq!(TokenHash::of_token_text(&text).is_ok(), is_valid(&text));
    }

    #[test]
    fn parse_errors_never_echo_the_input(text in "sess_[0-9A-Za-z]{49}") {
        if let Err(err) = SessionToken::parse(&text) {
            prop_assert!(!err.to_string().contains(&text[5..]));
            let debug = format!("{:?}", err);
            prop_assert!(!debug.contains(&text[5..]));
        }
    }
}

#[test]
fn wrong_prefix_and_alphabet_are_named() {
    let token = SessionToken::generate();
    let text = token.expose_secret();
    assert_eq!(
        SessionToken::parse(&format!("sesx_{}", &text[5..])).unwrap_err(),
        TokenParseError::Prefix
    );
    assert_eq!(
        SessionToken::parse(&format!("{}-{}", &text[..20], &text[21..])).unwrap_err(),
        TokenParseError::Alphabet
    );
}

#[test]
fn the_hash_is_sha256_of_the_text() {
    let token = SessionToken::generate();
    let expected: [u8; 32] = {
        use sha2::Digest;
        sha2::Sha256::digest(token.expose_secret().as_bytes()).into()
    };
    assert_eq!(token.hash().as_bytes(), &expected);
    assert_eq!(TokenHash::try_from(&expected[..]).unwrap(), token.hash());
    assert!(TokenHash::try_from(&expected[..31]).is_err());
}
