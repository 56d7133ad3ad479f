//! Every outcome of the required and the optional extractor.

use axum::body::Body;
use http::StatusCode;
use session_axum::SessionAuth;
use session_core::{SessionService, SessionToken};

use crate::support::{self, Answer, bearer, cookie, login, request, router, send};

async fn get(auth: &SessionAuth, uri: &str, headers: &[(&str, String)]) -> Answer {
    let mut builder = request("GET", uri);
    for (name, value) in headers {
        builder = builder.header(*name, value);
    }
    send(router(auth.clone()), builder.body(Body::empty()).unwrap()).await
}

fn auth(service: SessionService) -> SessionAuth {
    SessionAuth::builder(service).build()
}

/// Checks the parts every rejection shares and returns the answer.
fn assert_refused(answer: &Answer, status: StatusCode, challenge: Option<&str>) {
    assert_eq!(answer.status, status, "{}", answer.body);
    assert_eq!(answer.header("www-authenticate"), challenge);
    assert_eq!(answer.header("cache-control"), Some("no-store"));
    let retry = (status == StatusCode::SERVICE_UNAVAILABLE).then_some("1");
    assert_eq!(answer.header("retry-after"), retry);
}

#[tokio::test]
async fn a_valid_token_from_bearer_or_cookie_gives_the_session() {
    let service = support::service().await;
    let token = login(&service).await;
    let account = service
        .resolve(token.expose_secret())
        .await
        .unwrap()
        .account_id;
    let auth = auth(service);
    for header in [bearer(token.expose_secret()), cookie(token.expose_secret())] {
        let answer = get(&auth, "/me", std::slice::from_ref(&header)).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.body, account.to_string());
        let answer = get(&auth, "/maybe", &[header]).await;
        assert_eq!(answer.body, account.to_string());
    }
    // The same token in both places is one token, and a lower-case scheme
    // is still Bearer (RFC 9110 §11.1).
    let both = [bearer(token.expose_secret()), cookie(token.expose_secret())];
    assert_eq!(get(&auth, "/me", &both).await.status, StatusCode::OK);
    let lower = ("authorization", format!("bearer {}", token.expose_secret()));
    assert_eq!(get(&auth, "/me", &[lower]).await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_missing_token_is_401_without_an_error_code_and_optional_none() {
    let auth = auth(support::service().await);
    let answer = get(&auth, "/me", &[]).await;
    assert_refused(&answer, StatusCode::UNAUTHORIZED, Some("Bearer"));
    // Another scheme's credentials are not a session token.
    let basic = [("authorization", "Basic YWxhZGRpbjpvcGVuc2VzYW1l".to_owned())];
    assert_refused(
        &get(&auth, "/me", &basic).await,
        StatusCode::UNAUTHORIZED,
        Some("Bearer"),
    );
    // Other cookies are not the session cookie.
    let other = [("cookie", "theme=dark; session=x".to_owned())];
    assert_refused(
        &get(&auth, "/me", &other).await,
        StatusCode::UNAUTHORIZED,
        Some("Bearer"),
    );
    assert_eq!(get(&auth, "/maybe", &[]).await.body, "anonymous");
}

#[tokio::test]
async fn malformed_unknown_and_revoked_tokens_are_one_invalid_token_401() {
    let service = support::service().await;
    let revoked = login(&service).await;
    let id = service.resolve(revoked.expose_secret()).await.unwrap().id;
    service
        .revoke(id, session_core::RevocationReason::LOGOUT)
        .await
        .unwrap();
    let unknown = SessionToken::generate();
    let mut flipped = revoked.expose_secret().to_owned();
    flipped.replace_range(10..11, if &flipped[10..11] == "a" { "b" } else { "a" });
    let auth = auth(service);
    let invalid = Some("Bearer error=\"invalid_token\"");
    let mut bodies = Vec::new();
    for text in [
        revoked.expose_secret(),
        unknown.expose_secret(),
        flipped.as_str(),
        "sess_short",
        "not a token at all",
    ] {
        for header in [bearer(text), cookie(text)] {
            let answer = get(&auth, "/me", std::slice::from_ref(&header)).await;
            assert_refused(&answer, StatusCode::UNAUTHORIZED, invalid);
            answer.assert_free_of(text);
            bodies.push(answer.body);
            assert_eq!(get(&auth, "/maybe", &[header]).await.body, "anonymous");
        }
    }
    bodies.dedup();
    assert_eq!(bodies.len(), 1, "one message for every invalid token");
    // A Bearer header with no token after the scheme, or bytes a token
    // cannot hold, was sent and is not valid.
    for value in ["Bearer ", "Bearer", "Bearer    "] {
        let answer = get(&auth, "/me", &[("authorization", value.to_owned())]).await;
        assert_refused(&answer, StatusCode::UNAUTHORIZED, invalid);
    }
    let mut request = request("GET", "/me").body(Body::empty()).unwrap();
    request.headers_mut().insert(
        "authorization",
        http::HeaderValue::from_bytes(b"Bearer sess_\xff\xfe").unwrap(),
    );
    let answer = send(router(auth.clone()), request).await;
    assert_refused(&answer, StatusCode::UNAUTHORIZED, invalid);
}

#[tokio::test]
async fn two_different_tokens_are_400_invalid_request_and_optional_none() {
    let service = support::service().await;
    let first = login(&service).await;
    let second = login(&service).await;
    let (a, b) = (first.expose_secret(), second.expose_secret());
    let auth = auth(service);
    let cases: [Vec<(&str, String)>; 4] = [
        vec![bearer(a), cookie(b)],
        vec![bearer(a), bearer(b)],
        vec![cookie(a), cookie(b)],
        vec![("cookie", format!("__Host-session={a}; __Host-session={b}"))],
    ];
    for headers in cases {
        let answer = get(&auth, "/me", &headers).await;
        assert_refused(
            &answer,
            StatusCode::BAD_REQUEST,
            Some("Bearer error=\"invalid_request\""),
        );
        answer.assert_free_of(a);
        answer.assert_free_of(b);
        assert_eq!(get(&auth, "/maybe", &headers).await.body, "anonymous");
    }
    // A valid token beside a malformed one is still two tokens.
    let answer = get(&auth, "/me", &[bearer(a), cookie("garbage")]).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_service_not_yet_warm_is_503_for_both_extractors() {
    let warm = support::service().await;
    let token = login(&warm).await;
    let cold = SessionService::builder(
        std::sync::Arc::new(session_core::memory::MemoryStore::new()),
        std::sync::Arc::new(session_core::MemoryCache::new()),
    )
    .build();
    let auth = auth(cold);
    for uri in ["/me", "/maybe"] {
        let answer = get(&auth, uri, &[bearer(token.expose_secret())]).await;
        assert_refused(&answer, StatusCode::SERVICE_UNAVAILABLE, None);
        answer.assert_free_of(token.expose_secret());
    }
    // Without a token there is nothing to check: no session, ready or not.
    assert_eq!(
        get(&auth, "/me", &[]).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(get(&auth, "/maybe", &[]).await.body, "anonymous");
}

#[tokio::test]
async fn a_store_down_on_a_miss_is_503_for_both_extractors() {
    let (service, store, _tasks) = support::shared_service().await;
    let known = login(&service).await;
    store.set_unavailable(true);
    let auth = auth(service);
    let unknown = SessionToken::generate();
    for uri in ["/me", "/maybe"] {
        let answer = get(&auth, uri, &[cookie(unknown.expose_secret())]).await;
        assert_refused(&answer, StatusCode::SERVICE_UNAVAILABLE, None);
        answer.assert_free_of(unknown.expose_secret());
    }
    // A cached session still resolves while the store is down.
    let answer = get(&auth, "/me", &[cookie(known.expose_secret())]).await;
    assert_eq!(answer.status, StatusCode::OK);
}

#[tokio::test]
async fn the_realm_is_named_in_every_challenge() {
    let auth = SessionAuth::builder(support::service().await)
        .realm("example app")
        .build();
    let answer = get(&auth, "/me", &[]).await;
    assert_eq!(
        answer.header("www-authenticate"),
        Some("Bearer realm=\"example app\"")
    );
    let answer = get(&auth, "/me", &[bearer("sess_x")]).await;
    assert_eq!(
        answer.header("www-authenticate"),
        Some("Bearer realm=\"example app\", error=\"invalid_token\"")
    );
}

#[test]
#[should_panic(expected = "realm")]
fn a_realm_that_needs_escaping_is_a_configuration_error() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let service = runtime.block_on(support::service());
    let _ = SessionAuth::builder(service).realm("a\"b").build();
}

/// With a compact cache (no record cache), `CurrentSession` needs only the
/// index, and `CurrentSessionRecord` reads the record from the store: a
/// store outage refuses only the latter, and as "retry", never "signed out".
#[tokio::test]
async fn with_a_compact_cache_only_the_record_extractor_needs_the_store() {
    use std::sync::Arc;

    let store = Arc::new(session_core::memory::MemoryStore::new());
    let service =
        SessionService::builder(store.clone(), Arc::new(session_core::CompactCache::new())).build();
    service.warm().await.unwrap();
    let account = session_core::testkit::account();
    let metadata = session_core::ClientMetadata {
        label: session_core::Label::new("phone").ok(),
        ..session_core::ClientMetadata::default()
    };
    let created = service.create(account, metadata).await.unwrap();
    let header = bearer(created.token.expose_secret());
    let auth = auth(service.clone());

    let answer = get(&auth, "/label", std::slice::from_ref(&header)).await;
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (StatusCode::OK, "phone")
    );

    store.set_unavailable(true);
    let answer = get(&auth, "/me", std::slice::from_ref(&header)).await;
    assert_eq!(
        (answer.status, answer.body),
        (StatusCode::OK, account.to_string())
    );
    let answer = get(&auth, "/label", std::slice::from_ref(&header)).await;
    assert_refused(&answer, StatusCode::SERVICE_UNAVAILABLE, None);
    let answer = get(&auth, "/maybe-label", std::slice::from_ref(&header)).await;
    assert_refused(&answer, StatusCode::SERVICE_UNAVAILABLE, None);

    store.set_unavailable(false);
    service
        .revoke(created.session.id, session_core::RevocationReason::LOGOUT)
        .await
        .unwrap();
    let answer = get(&auth, "/maybe-label", std::slice::from_ref(&header)).await;
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (StatusCode::OK, "anonymous")
    );
    let answer = get(&auth, "/label", &[header]).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
}
