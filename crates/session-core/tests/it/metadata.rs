//! Client metadata as gateways forward it: what is normalised, what refused.

use proptest::prelude::*;
use session_core::UserAgent;
use session_core::validation::{Field, Reason, ValidationError};

fn normalized(text: &str) -> Option<String> {
    UserAgent::normalize(text)
        .unwrap()
        .map(|agent| agent.as_str().to_owned())
}

#[test]
fn whitespace_in_a_user_agent_is_collapsed_and_trimmed() {
    for (sent, stored) in [
        ("Mozilla/5.0\t(X11; Linux)", "Mozilla/5.0 (X11; Linux)"),
        ("  curl/8.5  ", "curl/8.5"),
        ("a\r\n b\u{b}\u{c}c", "a b c"),
        ("a\u{85}b\u{a0}c\u{2028}d\u{3000}e", "a b c d e"),
        ("already normal", "already normal"),
    ] {
        assert_eq!(normalized(sent).as_deref(), Some(stored), "{sent:?}");
    }
}

#[test]
fn an_empty_or_blank_user_agent_is_absent() {
    for sent in ["", " ", "\t", "\r\n", " \u{a0} "] {
        assert_eq!(normalized(sent), None, "{sent:?}");
    }
}

#[test]
fn a_long_user_agent_is_cut_at_a_character_boundary() {
    let ascii = "u".repeat(2 * UserAgent::MAX_LEN);
    assert_eq!(normalized(&ascii).unwrap(), ascii[..UserAgent::MAX_LEN]);
    // 511 bytes, then a 2-byte character that would end past the limit.
    let straddling = format!("{}ü tail", "u".repeat(UserAgent::MAX_LEN - 1));
    assert_eq!(
        normalized(&straddling).unwrap(),
        "u".repeat(UserAgent::MAX_LEN - 1)
    );
    // A cut that lands after a space leaves no trailing space.
    let spaced = format!("{} tail", "u".repeat(UserAgent::MAX_LEN - 1));
    assert_eq!(
        normalized(&spaced).unwrap(),
        "u".repeat(UserAgent::MAX_LEN - 1)
    );
}

#[test]
fn control_characters_that_are_not_whitespace_are_refused() {
    for sent in ["a\0b", "a\u{1b}[31mb", "a\u{7f}", "\u{9b}x", "\u{1f}"] {
        assert_eq!(
            UserAgent::normalize(sent).unwrap_err(),
            ValidationError::new(Field::UserAgent, Reason::ControlCharacter),
            "{sent:?}"
        );
    }
}

#[test]
fn the_strict_constructor_still_refuses_what_normalize_repairs() {
    for sent in ["a\tb", "", &"u".repeat(UserAgent::MAX_LEN + 1)] {
        assert!(UserAgent::new(sent).is_err(), "{sent:?}");
        assert!(UserAgent::normalize(sent).is_ok(), "{sent:?}");
    }
}

proptest! {
    #[test]
    fn normalized_user_agents_are_storable_and_stable(text in "[ \t\r\na-zü\u{a0}\u{2028}]{0,700}") {
        let Some(agent) = UserAgent::normalize(&text).unwrap() else {
            prop_assert!(text.trim().is_empty());
            return Ok(());
        };
        let stored = agent.as_str();
        prop_assert!(stored.len() <= UserAgent::MAX_LEN);
        prop_assert_eq!(stored, stored.trim());
        prop_assert!(!stored.contains("  "));
        prop_assert!(stored.chars().all(|c| c == ' ' || !c.is_whitespace()));
        let words: Vec<&str> = text.split_whitespace().collect();
        prop_assert!(words.join(" ").starts_with(stored));
        prop_assert_eq!(&UserAgent::new(stored).unwrap(), &agent);
        prop_assert_eq!(UserAgent::normalize(stored).unwrap(), Some(agent.clone()));
    }
}
