//! Unsafe requests authenticated by the cookie alone must be same-origin.

use axum::body::Body;
use http::StatusCode;
use session_axum::{CrossSiteCheck, SessionAuth};

use crate::support::{self, Answer, bearer, cookie, login, request, router, send};

async fn post(auth: &SessionAuth, uri: &str, headers: &[(&str, String)]) -> Answer {
    let mut builder = request("POST", uri);
    for (name, value) in headers {
        builder = builder.header(*name, value);
    }
    send(router(auth.clone()), builder.body(Body::empty()).unwrap()).await
}

fn with(
    mut headers: Vec<(&'static str, String)>,
    extra: &[(&'static str, &str)],
) -> Vec<(&'static str, String)> {
    headers.extend(extra.iter().map(|(n, v)| (*n, (*v).to_owned())));
    headers
}

#[tokio::test]
async fn a_cross_site_cookie_post_is_403_and_the_optional_extractor_ignores_the_cookie() {
    let service = support::service().await;
    let token = login(&service).await;
    let auth = SessionAuth::builder(service).build();
    let t = token.expose_secret();
    let refused: [&[(&str, &str)]; 6] = [
        &[("sec-fetch-site", "cross-site")],
        &[("sec-fetch-site", "same-site")],
        // Sec-Fetch-Site decides when present, whatever Origin says.
        &[
            ("sec-fetch-site", "cross-site"),
            ("origin", "https://app.example"),
        ],
        &[("origin", "https://evil.example")],
        &[("origin", "null")],
        // Same host, another port: another origin.
        &[("origin", "https://app.example:8443")],
    ];
    for extra in refused {
        let answer = post(&auth, "/me", &with(vec![cookie(t)], extra)).await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{extra:?}");
        assert_eq!(answer.header("cache-control"), Some("no-store"));
        assert_eq!(answer.header("www-authenticate"), None);
        answer.assert_free_of(t);
        let answer = post(&auth, "/maybe", &with(vec![cookie(t)], extra)).await;
        assert_eq!(answer.body, "anonymous", "{extra:?}");
    }
}

#[tokio::test]
async fn same_origin_user_initiated_and_non_browser_cookie_posts_pass() {
    let service = support::service().await;
    let token = login(&service).await;
    let auth = SessionAuth::builder(service).build();
    let t = token.expose_secret();
    let allowed: [&[(&str, &str)]; 5] = [
        &[("sec-fetch-site", "same-origin")],
        &[("sec-fetch-site", "none")],
        &[("origin", "https://app.example")],
        &[("origin", "https://APP.example")],
        // Neither header: not a browser page, so no ambient cookie to abuse.
        &[],
    ];
    for extra in allowed {
        let answer = post(&auth, "/me", &with(vec![cookie(t)], extra)).await;
        assert_eq!(answer.status, StatusCode::OK, "{extra:?}: {}", answer.body);
    }
}

#[tokio::test]
async fn safe_methods_and_bearer_requests_are_exempt() {
    let service = support::service().await;
    let token = login(&service).await;
    let auth = SessionAuth::builder(service).build();
    let t = token.expose_secret();
    let cross = [
        ("sec-fetch-site", "cross-site"),
        ("origin", "https://evil.example"),
    ];
    // A cross-site GET with the cookie is a link followed: allowed.
    let mut builder = request("GET", "/me");
    for (name, value) in with(vec![cookie(t)], &cross) {
        builder = builder.header(name, value);
    }
    let answer = send(router(auth.clone()), builder.body(Body::empty()).unwrap()).await;
    assert_eq!(answer.status, StatusCode::OK);
    // Bearer: a page cannot make a browser send it cross-site without CORS.
    let answer = post(&auth, "/me", &with(vec![bearer(t)], &cross)).await;
    assert_eq!(answer.status, StatusCode::OK);
    // Bearer and the same cookie: the Bearer header vouches for the request.
    let answer = post(&auth, "/me", &with(vec![bearer(t), cookie(t)], &cross)).await;
    assert_eq!(answer.status, StatusCode::OK);
    // DELETE is unsafe too.
    let mut builder = request("DELETE", "/me");
    for (name, value) in with(vec![cookie(t)], &cross) {
        builder = builder.header(name, value);
    }
    let answer = send(router(auth), builder.body(Body::empty()).unwrap()).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_trusted_origin_may_post_cross_site() {
    let service = support::service().await;
    let token = login(&service).await;
    let check = CrossSiteCheck::default()
        .trust_origin("https://front.example")
        .unwrap();
    let auth = SessionAuth::builder(service).cross_site(check).build();
    let t = token.expose_secret();
    let trusted = [
        ("sec-fetch-site", "cross-site"),
        ("origin", "https://front.example"),
    ];
    assert_eq!(
        post(&auth, "/me", &with(vec![cookie(t)], &trusted))
            .await
            .status,
        StatusCode::OK
    );
    let other = [
        ("sec-fetch-site", "cross-site"),
        ("origin", "https://front.example:444"),
    ];
    assert_eq!(
        post(&auth, "/me", &with(vec![cookie(t)], &other))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
}

#[test]
fn a_trusted_origin_must_be_a_serialised_origin() {
    for bad in [
        "front.example",
        "https://front.example/",
        "https://front.example/path",
        "null",
        "",
    ] {
        assert!(
            CrossSiteCheck::default().trust_origin(bad).is_err(),
            "{bad}"
        );
    }
    assert!(
        CrossSiteCheck::default()
            .trust_origin("http://localhost:3000")
            .is_ok()
    );
}

#[tokio::test]
async fn http2_authority_stands_in_for_a_missing_host() {
    let service = support::service().await;
    let token = login(&service).await;
    let auth = SessionAuth::builder(service).build();
    let request = http::Request::builder()
        .method("POST")
        .uri("https://app.example/me")
        .header("origin", "https://app.example")
        .header(
            "cookie",
            format!("__Host-session={}", token.expose_secret()),
        )
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(router(auth), request).await.status, StatusCode::OK);
}

/// The layer holds every unsafe request to the rule, with no session at
/// all (a login form), before the handler runs; safe methods, the host's
/// own pages, trusted origins and clients that are no browser page pass.
#[tokio::test]
async fn the_layer_refuses_every_unsafe_cross_site_request_before_the_handler() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let reached = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&reached);
    let check = CrossSiteCheck::default()
        .trust_origin("https://front.example")
        .unwrap();
    let app = axum::Router::new()
        .route(
            "/login",
            axum::routing::any(move || {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                async { "signed in" }
            }),
        )
        .layer(check.layer());
    let call = |method: &str, extra: &[(&str, &str)]| {
        let mut builder = request(method, "/login");
        for (name, value) in extra {
            builder = builder.header(*name, *value);
        }
        send(app.clone(), builder.body(Body::empty()).unwrap())
    };
    for extra in [
        &[("sec-fetch-site", "cross-site")][..],
        &[("sec-fetch-site", "same-site")][..],
        &[("origin", "https://evil.example")][..],
        &[("origin", "null")][..],
    ] {
        let answer = call("POST", extra).await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{extra:?}");
        assert_eq!(answer.header("cache-control"), Some("no-store"));
    }
    assert_eq!(
        reached.load(Ordering::SeqCst),
        0,
        "refused before the handler"
    );
    for (method, extra) in [
        ("GET", &[("sec-fetch-site", "cross-site")][..]),
        ("POST", &[("sec-fetch-site", "same-origin")][..]),
        ("POST", &[("sec-fetch-site", "none")][..]),
        ("POST", &[("origin", "https://app.example")][..]),
        ("POST", &[("origin", "https://front.example")][..]),
        ("POST", &[][..]),
    ] {
        let answer = call(method, extra).await;
        assert_eq!(answer.status, StatusCode::OK, "{method} {extra:?}");
    }
    assert_eq!(reached.load(Ordering::SeqCst), 6);
}
