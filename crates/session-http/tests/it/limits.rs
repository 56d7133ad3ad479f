//! The per-account limit through the API: a refused login is `409
//! session_limit_reached`, stated in the OpenAPI document, and an evicted
//! session answers `401 invalid_token`.

use std::num::NonZeroU32;
use std::sync::Arc;

use axum::http::{Method, StatusCode};
use serde_json::json;
use session_core::MemoryCache;
use session_core::config::{LimitPolicy, SessionLimit};
use session_http::{ApiKeys, ErrorCode};
use uuid::Uuid;

use crate::router::{App, app, app_built, assert_error};

async fn limited(max: u32, policy: LimitPolicy) -> App {
    let limit = SessionLimit {
        max: NonZeroU32::new(max).unwrap(),
        policy,
    };
    app_built(
        Arc::new(MemoryCache::new()),
        ApiKeys::none(),
        true,
        |builder| builder.session_limit(limit),
    )
    .await
}

#[tokio::test]
async fn a_login_past_a_refusing_limit_is_409_and_creates_nothing() {
    let app = limited(1, LimitPolicy::Refuse).await;
    let account = Uuid::new_v4();
    let (token, _) = app.create(account, "first").await;
    let reply = app
        .call(
            Method::POST,
            "/v1/sessions",
            Some(json!({ "account_id": account, "label": "second" })),
        )
        .await;
    assert_error(&reply, StatusCode::CONFLICT, ErrorCode::SessionLimitReached);
    assert!(!reply.text.contains(&account.to_string()), "{}", reply.text);
    assert_eq!(reply.body["error"]["code"], "session_limit_reached");
    let list = app
        .call(
            Method::GET,
            &format!("/v1/accounts/{account}/sessions?include_revoked=true"),
            None,
        )
        .await;
    assert_eq!(
        list.body["sessions"].as_array().unwrap().len(),
        1,
        "{}",
        list.text
    );
    assert_eq!(app.resolve(&token).await.status, StatusCode::OK);
}

#[tokio::test]
async fn an_evicted_session_answers_401_and_shows_reason_limit() {
    let app = limited(1, LimitPolicy::EvictLeastRecentlySeen).await;
    let account = Uuid::new_v4();
    let (evicted, first) = app.create(account, "first").await;
    let (kept, _) = app.create(account, "second").await;
    assert_error(
        &app.resolve(&evicted).await,
        StatusCode::UNAUTHORIZED,
        ErrorCode::InvalidToken,
    );
    assert_eq!(app.resolve(&kept).await.status, StatusCode::OK);
    let id = first["id"].as_str().unwrap();
    let got = app
        .call(Method::GET, &format!("/v1/sessions/{id}"), None)
        .await;
    assert_eq!(
        got.body["session"]["revocation_reason"], "limit",
        "{}",
        got.text
    );
}

#[tokio::test]
async fn the_openapi_document_states_the_409() {
    let doc = app()
        .await
        .call(Method::GET, "/openapi.json", None)
        .await
        .body;
    let conflict = &doc["paths"]["/v1/sessions"]["post"]["responses"]["409"];
    assert!(
        conflict["description"]
            .as_str()
            .is_some_and(|text| text.contains("session_limit_reached")),
        "{conflict}"
    );
    let codes = &doc["components"]["schemas"]["ErrorCode"]["enum"];
    assert!(
        codes
            .as_array()
            .unwrap()
            .contains(&json!("session_limit_reached")),
        "{codes}"
    );
}
