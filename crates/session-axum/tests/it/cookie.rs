//! The session cookie's attributes, at login and at logout.

use cookie::{Cookie, SameSite};
use session_axum::{DEFAULT_COOKIE_NAME, MAX_COOKIE_AGE_SECS, SessionCookie};
use session_core::SessionToken;

fn parse(value: &http::HeaderValue) -> Cookie<'static> {
    Cookie::parse(value.to_str().unwrap().to_owned()).unwrap()
}

#[test]
fn the_session_cookie_has_the_safe_defaults() {
    let token = SessionToken::generate();
    let value = SessionCookie::default().set_cookie(&token);
    assert!(value.is_sensitive());
    let cookie = parse(&value);
    assert_eq!(cookie.name(), DEFAULT_COOKIE_NAME);
    assert!(cookie.name().starts_with("__Host-"));
    assert_eq!(cookie.value(), token.expose_secret());
    assert_eq!(cookie.secure(), Some(true));
    assert_eq!(cookie.http_only(), Some(true));
    assert_eq!(cookie.same_site(), Some(SameSite::Lax));
    assert_eq!(cookie.path(), Some("/"));
    assert_eq!(cookie.domain(), None, "a __Host- cookie has no Domain");
    assert_eq!(
        cookie.max_age(),
        Some(cookie::time::Duration::seconds(MAX_COOKIE_AGE_SECS))
    );
    let browser_session = SessionCookie::default()
        .until_browser_closes()
        .with_token(&token);
    assert_eq!(browser_session.max_age(), None);
    assert_eq!(browser_session.expires(), None);
}

#[test]
fn the_removal_cookie_matches_name_and_path_and_expires_now() {
    let set = SessionCookie::named("__Host-app").with_token(&SessionToken::generate());
    let value = SessionCookie::named("__Host-app").clear_cookie();
    let removal = parse(&value);
    assert_eq!(removal.name(), set.name());
    assert_eq!(removal.path(), set.path());
    assert_eq!(removal.domain(), None);
    assert_eq!(
        removal.secure(),
        Some(true),
        "__Host- needs Secure to be accepted"
    );
    assert_eq!(removal.value(), "");
    assert_eq!(removal.max_age(), Some(cookie::time::Duration::ZERO));
    let expires = removal.expires_datetime().expect("an Expires date");
    assert!(expires < cookie::time::OffsetDateTime::now_utc());
}

#[test]
#[should_panic(expected = "RFC 6265 token")]
fn a_cookie_name_that_is_not_a_token_is_a_configuration_error() {
    let _ = SessionCookie::named("a=b");
}
