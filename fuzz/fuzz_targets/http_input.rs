//! The JSON bodies, query strings and path ids of the HTTP API, decoded as
//! the handlers decode them, up to the call into the service.
//!
//! The first byte picks the input (`Input::ALL`), the rest is what the
//! client sent. Invariants: no panic; a refusal is `400 invalid_request`
//! (`401 invalid_token` for a token); and its message is one of the API's
//! own sentences, filled only with numbers and the API's own field names,
//! so it can never repeat what the client sent (session-http's input.rs).

#![no_main]

use libfuzzer_sys::fuzz_target;
use session_http::fuzzing::{Input, Outcome, decode};

fuzz_target!(|data: &[u8]| {
    let Some((&pick, bytes)) = data.split_first() else {
        return;
    };
    let input = Input::ALL[usize::from(pick) % Input::ALL.len()];
    let Outcome::Rejected {
        status,
        code,
        message,
    } = decode(input, bytes)
    else {
        return;
    };
    match code {
        "invalid_request" => assert_eq!(status, 400),
        "invalid_token" => assert_eq!((status, input), (401, Input::ResolveBody)),
        other => panic!("unexpected error code {other} for {input:?}"),
    }
    assert!(
        is_api_sentence(&message, input),
        "{input:?}: message {message:?} is not one of the API's sentences"
    );
});

/// Messages about one field: `{field}: {reason}`.
const FIELD_REASONS: &[&str] = &[
    "required",
    "given more than once",
    "wrong type or value (see the OpenAPI document)",
    "must not be empty (omit the field instead)",
    "must be at most # bytes, got #",
    "must not contain control characters",
    "must be a UUID",
    "must not be the nil UUID",
    "must be an IPv4 or IPv6 address",
    "must be `true` or `false`",
    "must be a whole number from # to #",
    "must be a lowercase identifier: a letter a-z, then up to # of a-z, #-# and _",
    "not a cursor of this listing; use `next_cursor` as given, with the same account and \
     `include_revoked`, or start again without one",
];

/// Messages about no one field.
const WHOLE: &[&str] = &[
    "the request body is not valid JSON (line #, column #)",
    "the request body must be a JSON object",
    "the request body does not match the API: one of its fields is missing or malformed",
    "the query string does not match the API: one of its parameters is missing or malformed",
    "the session token is malformed, unknown or revoked",
];

/// Whether `message`, with every run of digits read as `#`, is one of the
/// API's sentences about `input`, naming only `input`'s fields.
fn is_api_sentence(message: &str, input: Input) -> bool {
    let shape = digits_as_hash(message);
    let known = |texts: &[&str], text: &str| texts.iter().any(|t| digits_as_hash(t) == text);
    if known(WHOLE, &shape) {
        return true;
    }
    if let Some((field, reason)) = shape.split_once(": ") {
        return input.fields().contains(&field) && known(FIELD_REASONS, reason);
    }
    for (container, fields) in [
        ("the request body", "fields"),
        ("the query string", "parameters"),
    ] {
        let prefix =
            format!("{container} holds a name this API does not define; the {fields} are ");
        if let Some(list) = shape.strip_prefix(&prefix) {
            return list == "none"
                || list.split(", ").all(|name| {
                    name.strip_prefix('`')
                        .and_then(|name| name.strip_suffix('`'))
                        .is_some_and(|name| input.fields().contains(&name))
                });
        }
    }
    false
}

fn digits_as_hash(text: &str) -> String {
    let mut shape = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_ascii_digit() {
            if !shape.ends_with('#') {
                shape.push('#');
            }
        } else {
            shape.push(c);
        }
    }
    shape
}
