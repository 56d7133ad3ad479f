//! Scoped API keys: each route refuses a key without its scope with `403
//! insufficient_scope` and RFC 6750's challenge, a key with it passes,
//! resolve takes any valid key, and a lone key of the old configuration
//! may do everything.

use axum::http::{Method, StatusCode, header};
use serde_json::{Value, json};
use session_http::{ApiKeys, ErrorCode, Scope};
use uuid::Uuid;

use crate::router::{App, app_with, assert_error, scoped_key as key};

const READER: &str = "reader-key-0123456789";
const FEED: &str = "feed-key-0123456789ab";
const WRITER: &str = "writer-key-0123456789";

async fn scoped_app() -> App {
    let keys = ApiKeys::scoped([
        key("reader", &[Scope::Read], READER),
        key("feed", &[Scope::Events], FEED),
        key("writer", &[Scope::Write], WRITER),
    ]);
    app_with(keys, true).await
}

/// Each route, by the scope it needs: what a key without it gets, and what
/// a key with it gets.
#[tokio::test]
async fn each_route_refuses_a_key_without_its_scope() {
    let app = scoped_app().await;
    let account = Uuid::new_v4();
    let (token, session) = app.create_as(WRITER, account).await;
    let id = session["id"].as_str().unwrap().to_owned();

    let one = format!("/v1/sessions/{id}");
    let all = format!("/v1/accounts/{account}/sessions");
    let create = || Some(json!({ "account_id": account }));
    let routes: [(Method, &str, Option<Value>, Scope, StatusCode); 5] = [
        (Method::GET, &one, None, Scope::Read, StatusCode::OK),
        (Method::GET, &all, None, Scope::Read, StatusCode::OK),
        (
            Method::POST,
            "/v1/sessions",
            create(),
            Scope::Write,
            StatusCode::CREATED,
        ),
        (Method::DELETE, &all, None, Scope::Write, StatusCode::OK),
        (
            Method::DELETE,
            &one,
            None,
            Scope::Write,
            StatusCode::NO_CONTENT,
        ),
    ];
    for (method, uri, body, scope, allowed) in routes {
        for (secret, holds) in [
            (READER, Scope::Read),
            (FEED, Scope::Events),
            (WRITER, Scope::Write),
        ] {
            let reply = app.call_as(secret, method.clone(), uri, body.clone()).await;
            if holds == scope {
                assert_eq!(reply.status, allowed, "{method} {uri}: {}", reply.text);
                continue;
            }
            assert_error(&reply, StatusCode::FORBIDDEN, ErrorCode::InsufficientScope);
            assert_eq!(
                reply.headers[header::WWW_AUTHENTICATE],
                format!(
                    r#"Bearer error="insufficient_scope", scope="{}""#,
                    scope.as_str()
                ),
                "{method} {uri}"
            );
            assert!(!reply.text.contains(secret), "{}", reply.text);
        }
    }
    // Resolve keeps its rule: any valid key.
    for secret in [READER, FEED, WRITER] {
        let reply = app
            .call_as(
                secret,
                Method::POST,
                "/v1/sessions/resolve",
                Some(json!({ "token": token })),
            )
            .await;
        assert_error(&reply, StatusCode::UNAUTHORIZED, ErrorCode::InvalidToken);
    }
    // A wrong key is still 401, whatever the route.
    let reply = app
        .call_as("wrong-key-0123456789", Method::GET, &one, None)
        .await;
    assert_error(&reply, StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized);
}

/// A refused write changes nothing.
#[tokio::test]
async fn a_write_refused_for_its_scope_changes_nothing() {
    let app = scoped_app().await;
    let account = Uuid::new_v4();
    let (token, session) = app.create_as(WRITER, account).await;
    let id = session["id"].as_str().unwrap().to_owned();
    let reply = app
        .call_as(READER, Method::DELETE, &format!("/v1/sessions/{id}"), None)
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    let resolved = app
        .call_as(
            READER,
            Method::POST,
            "/v1/sessions/resolve",
            Some(json!({ "token": token })),
        )
        .await;
    assert_eq!(
        resolved.status,
        StatusCode::OK,
        "still active: {}",
        resolved.text
    );
}

/// The configuration from before scopes: a lone key may do everything.
#[tokio::test]
async fn a_lone_key_holds_every_scope() {
    let app = app_with(ApiKeys::new([READER]).unwrap(), true).await;
    let account = Uuid::new_v4();
    let created = app
        .call_as(
            READER,
            Method::POST,
            "/v1/sessions",
            Some(json!({ "account_id": account })),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let id = created.body["session"]["id"].as_str().unwrap();
    let one = format!("/v1/sessions/{id}");
    assert_eq!(
        app.call_as(READER, Method::GET, &one, None).await.status,
        StatusCode::OK
    );
    assert_eq!(
        app.call_as(READER, Method::DELETE, &one, None).await.status,
        StatusCode::NO_CONTENT
    );
}

#[tokio::test]
async fn the_openapi_document_states_each_routes_scope() {
    let app = scoped_app().await;
    let doc = app
        .call_as(READER, Method::GET, "/openapi.json", None)
        .await
        .body;
    for (path, method, scope) in [
        ("/v1/sessions", "post", "write"),
        ("/v1/sessions/{id}", "get", "read"),
        ("/v1/sessions/{id}", "delete", "write"),
        ("/v1/accounts/{account_id}/sessions", "get", "read"),
        ("/v1/accounts/{account_id}/sessions", "delete", "write"),
        ("/v1/not-before", "get", "read"),
        ("/v1/not-before", "put", "write"),
    ] {
        let forbidden = &doc["paths"][path][method]["responses"]["403"]["description"];
        assert!(
            forbidden
                .as_str()
                .is_some_and(|text| text.contains(&format!("`{scope}` scope"))),
            "{method} {path}: {forbidden}"
        );
    }
    assert!(doc["paths"]["/v1/sessions/resolve"]["post"]["responses"]["403"].is_null());
}

/// Each revocation records the name of the key that made it, shown by
/// `GET` and the list: a named key's name, `default` for a lone key, and
/// null without keys.
#[tokio::test]
async fn a_revocation_records_which_key_made_it() {
    let app = scoped_app().await;
    let account = Uuid::new_v4();
    let mut ids = Vec::new();
    for _ in 0..2 {
        let (_, session) = app.create_as(WRITER, account).await;
        ids.push(session["id"].as_str().unwrap().to_owned());
    }
    let one = format!("/v1/sessions/{}", ids[0]);
    let revoked_by = async |uri: &str| {
        app.call_as(READER, Method::GET, uri, None).await.body["session"]["revoked_by"].clone()
    };
    assert_eq!(revoked_by(&one).await, Value::Null, "active");
    app.call_as(WRITER, Method::DELETE, &one, None).await;
    assert_eq!(revoked_by(&one).await, "writer");
    let all = format!("/v1/accounts/{account}/sessions");
    app.call_as(WRITER, Method::DELETE, &all, None).await;
    let list = app
        .call_as(
            READER,
            Method::GET,
            &format!("{all}?include_revoked=true"),
            None,
        )
        .await;
    let names: Vec<&Value> = list.body["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|session| &session["revoked_by"])
        .collect();
    assert_eq!(names, [&json!("writer"), &json!("writer")], "{}", list.text);

    let lone = app_with(ApiKeys::new([READER]).unwrap(), true).await;
    let created = lone
        .call_as(
            READER,
            Method::POST,
            "/v1/sessions",
            Some(json!({ "account_id": account })),
        )
        .await;
    let id = created.body["session"]["id"].as_str().unwrap();
    let uri = format!("/v1/sessions/{id}");
    lone.call_as(READER, Method::DELETE, &uri, None).await;
    let got = lone.call_as(READER, Method::GET, &uri, None).await;
    assert_eq!(got.body["session"]["revoked_by"], "default", "{}", got.text);

    let open = crate::router::app().await;
    let (_, session) = open.create(account, "open").await;
    let uri = format!("/v1/sessions/{}", session["id"].as_str().unwrap());
    open.call(Method::DELETE, &uri, None).await;
    let got = open.call(Method::GET, &uri, None).await;
    assert_eq!(
        got.body["session"]["revoked_by"],
        Value::Null,
        "{}",
        got.text
    );
}
