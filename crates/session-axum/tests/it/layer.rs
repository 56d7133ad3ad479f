//! The layer: one resolve per request, optionally refusing.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use http::StatusCode;
use session_axum::{CurrentSession, SessionAuth};
use session_core::SessionToken;

use crate::support::{self, bearer, login, request, send};

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
    let layer_auth = SessionAuth::builder(service).build();
    // The state's service never warms: resolving through it would answer
    // 503, so a 200 shows the extractor took the layer's outcome.
    let cold = session_core::SessionService::builder(
        Arc::new(session_core::memory::MemoryStore::new()),
        Arc::new(session_core::MemoryCache::new()),
    )
    .build();
    async fn me(CurrentSession(session): CurrentSession) -> String {
        session.id.to_string()
    }
    let app: Router = Router::new()
        .route("/me", get(me))
        .layer(layer_auth.layer())
        .with_state(SessionAuth::builder(cold).build());
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
    // The layer's refusal is the extractor's refusal too.
    let answer = send(app, request("GET", "/me").body(Body::empty()).unwrap()).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
}
