//! The layer: one resolve per request, optionally refusing.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use http::StatusCode;
use session_axum::{CurrentSession, SessionAuth};
use session_core::SessionToken;

use crate::support::{self, bearer, cookie, login, request, send};

#[tokio::test]
async fn the_required_layer_guards_a_whole_router() {
    let service = support::service().await;
    let token = login(&service).await;
    let auth = SessionAuth::builder(service).build();
    let reached = Arc::new(AtomicUsize::new(0));
    let counter = reached.clone();
    // A handler that takes no extractor at all: the layer alone guards it.
    let app: Router = Router::new()
        .route(
            "/private",
            get(move || {
                counter.fetch_add(1, Ordering::SeqCst);
                async { "secret" }
            }),
        )
        .layer(auth.require_layer());
    let unknown = SessionToken::generate();
    for header in [None, Some(bearer(unknown.expose_secret()))] {
        let mut builder = request("GET", "/private");
        if let Some((name, value)) = &header {
            builder = builder.header(*name, value);
        }
        let answer = send(app.clone(), builder.body(Body::empty()).unwrap()).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
        assert!(answer.header("www-authenticate").is_some());
    }
    assert_eq!(
        reached.load(Ordering::SeqCst),
        0,
        "refused before the handler"
    );
    let (name, value) = bearer(token.expose_secret());
    let answer = send(
        app,
        request("GET", "/private")
            .header(name, value)
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(reached.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn the_extractor_uses_what_the_layer_resolved() {
    let service = support::service().await;
    let token = login(&service).await;
    let id = service.resolve(token.expose_secret()).await.unwrap().id;
    let auth = SessionAuth::builder(service.clone()).build();
    async fn me(CurrentSession(session): CurrentSession) -> String {
        session.id.to_string()
    }
    let app: Router = Router::new()
        .route("/me", get(me))
        .layer(auth.layer())
        .with_state(auth);
    let hits = || {
        service
            .status()
            .resolves
            .get(session_core::status::ResolveOutcome::Hit)
    };
    let before = hits();
    let (name, value) = bearer(token.expose_secret());
    let answer = send(
        app.clone(),
        request("GET", "/me")
            .header(name, value)
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body, id.to_string());
    assert_eq!(hits(), before + 1, "resolved once, by the layer");
    // The layer's refusal is the extractor's refusal too.
    let answer = send(app, request("GET", "/me").body(Body::empty()).unwrap()).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
}

/// A layer of one `SessionAuth` (the user realm's cookie) around a router
/// whose extractor has another (the admin realm's): the extractor ignores
/// the outcome the other left and decides by its own rules, so an admin
/// route never receives a user session.
#[tokio::test]
async fn the_extractor_ignores_what_another_auth_resolved() {
    let service = support::service().await;
    let token = login(&service).await;
    let users = SessionAuth::builder(service.clone()).realm("users").build();
    let admins = SessionAuth::builder(service)
        .cookie(session_axum::SessionCookie::named("__Host-admin"))
        .realm("admins")
        .build();
    async fn me(CurrentSession(session): CurrentSession) -> String {
        session.id.to_string()
    }
    let admin: Router = Router::new().route("/admin", get(me)).with_state(admins);
    let app: Router = Router::new().merge(admin).layer(users.layer());
    let (name, value) = cookie(token.expose_secret());
    let answer = send(
        app.clone(),
        request("GET", "/admin")
            .header(name, &value)
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{}", answer.body);
    assert_eq!(
        answer.header("www-authenticate"),
        Some(r#"Bearer realm="admins""#),
        "refused by the admin realm's own rules"
    );
    // Under the admin cookie, the same session is the admin route's.
    let answer = send(
        app,
        request("GET", "/admin")
            .header("cookie", format!("__Host-admin={}", token.expose_secret()))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
}
