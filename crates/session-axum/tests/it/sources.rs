//! Where a token is found, over a plain `HeaderMap`.

use http::{HeaderMap, HeaderName, HeaderValue};
use session_axum::{Presented, SessionAuth, SessionCookie, SourceKind, TokenSources};

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    map
}

fn all() -> TokenSources {
    TokenSources::new()
        .bearer()
        .cookie("__Host-session")
        .header(HeaderName::from_static("x-session-token"))
}

fn token(presented: Presented<'_>) -> (&str, SourceKind, bool) {
    match presented {
        Presented::Token(t) => (t.expose_secret(), t.origin(), t.is_cookie_only()),
        other => panic!("expected a token, got {other:?}"),
    }
}

#[test]
fn each_source_is_read_and_reported() {
    let h = headers(&[("authorization", "Bearer abc")]);
    assert_eq!(token(all().find(&h)), ("abc", SourceKind::Bearer, false));
    let h = headers(&[("cookie", "a=1; __Host-session=abc; b=2")]);
    assert_eq!(token(all().find(&h)), ("abc", SourceKind::Cookie, true));
    let h = headers(&[("x-session-token", "abc")]);
    assert_eq!(token(all().find(&h)), ("abc", SourceKind::Header, false));
    // The same token in every source is one token, reported from the first.
    let h = headers(&[
        ("x-session-token", "abc"),
        ("cookie", "__Host-session=abc"),
        ("authorization", "Bearer abc"),
    ]);
    assert_eq!(token(all().find(&h)), ("abc", SourceKind::Bearer, false));
    let cookie_first = TokenSources::new().cookie("__Host-session").bearer();
    assert_eq!(
        token(cookie_first.find(&h)),
        ("abc", SourceKind::Cookie, false),
        "a Bearer header beside the cookie vouches for the request"
    );
}

#[test]
fn an_unconfigured_source_is_not_read() {
    let bearer_only = TokenSources::new().bearer();
    let h = headers(&[("cookie", "__Host-session=abc"), ("x-session-token", "def")]);
    assert_eq!(bearer_only.find(&h), Presented::Missing);
    // Nor are they compared: a conflict needs two configured sources.
    let h = headers(&[
        ("authorization", "Bearer abc"),
        ("cookie", "__Host-session=def"),
    ]);
    assert_eq!(token(bearer_only.find(&h)).0, "abc");
}

#[test]
fn different_values_anywhere_conflict() {
    for pairs in [
        &[("authorization", "Bearer abc"), ("x-session-token", "def")][..],
        &[
            ("cookie", "__Host-session=abc"),
            ("cookie", "__Host-session=def"),
        ][..],
        &[("x-session-token", "abc"), ("x-session-token", "def")][..],
        &[
            ("authorization", "Bearer abc"),
            ("authorization", "Bearer def"),
        ][..],
    ] {
        assert_eq!(
            all().find(&headers(pairs)),
            Presented::Conflicting,
            "{pairs:?}"
        );
    }
}

/// RFC 6265 §5.4, as browsers write `Cookie`: the session cookie is found
/// by its name's bytes, whatever the other cookies hold.
#[test]
fn the_session_cookie_is_found_beside_cookies_of_any_bytes() {
    let cookie = |field: &[u8]| {
        let mut map = HeaderMap::new();
        map.append("cookie", HeaderValue::from_bytes(field).unwrap());
        map
    };
    for field in [
        "utm=Unders\u{f8}gelse; __Host-session=abc".as_bytes(),
        b"a=\xff\xfe; __Host-session=abc",
        b"__Host-session=abc; x=\"; ;=; novalue;\t__Host-session\t=\tabc\t",
        b"__host-session=zzz; __Host-sessionx=zzz; x__Host-session=zzz; __Host-session=abc",
    ] {
        let h = cookie(field);
        assert_eq!(
            token(all().find(&h)),
            ("abc", SourceKind::Cookie, true),
            "{}",
            String::from_utf8_lossy(field)
        );
    }
    assert_eq!(all().find(&cookie(b"a=\xff; b")), Presented::Missing);
    assert_eq!(
        all().find(&cookie(b"a=\xff; __Host-session=\xf8")),
        Presented::Malformed
    );
    assert_eq!(
        all().find(&cookie(b"__Host-session=abc; a=\xff; __Host-session=def")),
        Presented::Conflicting
    );
}

#[test]
fn a_broken_bearer_header_is_malformed_not_missing() {
    for value in ["Bearer", "Bearer ", "bearer   "] {
        let h = headers(&[("authorization", value)]);
        assert_eq!(all().find(&h), Presented::Malformed, "{value:?}");
    }
    let h = headers(&[("authorization", "Basic abc")]);
    assert_eq!(all().find(&h), Presented::Missing);
}

#[test]
fn a_presented_token_never_prints_its_text() {
    let h = headers(&[("authorization", "Bearer sess_secret")]);
    let printed = format!("{:?}", all().find(&h));
    assert!(!printed.contains("sess_secret"), "{printed}");
}

#[test]
#[should_panic(expected = "session cookie")]
fn reading_a_cookie_other_than_the_one_set_is_a_configuration_error() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let service = runtime.block_on(crate::support::service());
    let _ = SessionAuth::builder(service)
        .cookie(SessionCookie::named("__Host-a"))
        .sources(TokenSources::new().cookie("__Host-b"))
        .build();
}
