//! Revocation reasons through the API: the `reason` parameter of both
//! revoke routes, `revocation_reason` in `GET` and the list, refusals that
//! never repeat the value, and the OpenAPI document stating the grammar.

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};
use session_http::ErrorCode;
use uuid::Uuid;

use crate::router::{App, app, assert_error};

async fn reason_of(app: &App, id: &str) -> Value {
    let reply = app
        .call(Method::GET, &format!("/v1/sessions/{id}"), None)
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    reply.body["session"]["revocation_reason"].clone()
}

#[tokio::test]
async fn a_revoke_records_logout_by_default_or_the_reason_given_and_keeps_the_first() {
    let app = app().await;
    let account = Uuid::new_v4();
    let (_, plain) = app.create(account, "plain").await;
    let (_, changed) = app.create(account, "changed").await;
    let (plain, changed) = (
        plain["id"].as_str().unwrap(),
        changed["id"].as_str().unwrap(),
    );
    assert_eq!(reason_of(&app, plain).await, Value::Null, "active: none");

    let reply = app
        .call(Method::DELETE, &format!("/v1/sessions/{plain}"), None)
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.text);
    assert_eq!(reason_of(&app, plain).await, "logout");

    let path = format!("/v1/sessions/{changed}?reason=password_change");
    assert_eq!(
        app.call(Method::DELETE, &path, None).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(reason_of(&app, changed).await, "password_change");
    // Idempotent: a second revoke succeeds and changes nothing.
    let again = format!("/v1/sessions/{changed}?reason=admin");
    assert_eq!(
        app.call(Method::DELETE, &again, None).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(reason_of(&app, changed).await, "password_change");

    let list = app
        .call(
            Method::GET,
            &format!("/v1/accounts/{account}/sessions?include_revoked=true"),
            None,
        )
        .await;
    let reasons: Vec<(&str, &Value)> = list.body["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["label"].as_str().unwrap(), &s["revocation_reason"]))
        .collect();
    assert_eq!(
        reasons,
        [
            ("changed", &json!("password_change")),
            ("plain", &json!("logout"))
        ]
    );
}

#[tokio::test]
async fn a_revoke_all_records_its_reason_and_the_kept_session_has_none() {
    let app = app().await;
    let account = Uuid::new_v4();
    let mut ids = Vec::new();
    for label in ["a", "b", "c"] {
        let (_, session) = app.create(account, label).await;
        ids.push(session["id"].as_str().unwrap().to_owned());
    }
    let base = format!("/v1/accounts/{account}/sessions");
    let reply = app
        .call(
            Method::DELETE,
            &format!("{base}?except={}&reason=admin", ids[1]),
            None,
        )
        .await;
    assert_eq!(reply.body, json!({ "revoked": 2 }), "{}", reply.text);
    assert_eq!(reason_of(&app, &ids[0]).await, "admin");
    assert_eq!(reason_of(&app, &ids[1]).await, Value::Null, "kept: active");
    assert_eq!(reason_of(&app, &ids[2]).await, "admin");

    let reply = app.call(Method::DELETE, &base, None).await;
    assert_eq!(reply.body, json!({ "revoked": 1 }));
    assert_eq!(reason_of(&app, &ids[1]).await, "logout", "the default");
    assert_eq!(reason_of(&app, &ids[0]).await, "admin", "the first stays");
}

#[tokio::test]
async fn an_invalid_reason_is_400_names_the_parameter_never_its_value_and_revokes_nothing() {
    let app = app().await;
    let account = Uuid::new_v4();
    let (token, session) = app.create(account, "kept").await;
    let id = session["id"].as_str().unwrap();
    let too_long = "toolongreason".repeat(3);
    let values = [
        ("Logout", "Logout"),
        ("pass%20word", "pass word"),
        ("Secret%0Aline", "Secret\nline"),
        ("%3Cscript%3E", "<script>"),
        ("1st", "1st"),
        ("", "reason="),
        (too_long.as_str(), too_long.as_str()),
        ("d%C3%A9connexion", "déconnexion"),
    ];
    for (sent, decoded) in values {
        for uri in [
            format!("/v1/sessions/{id}?reason={sent}"),
            format!("/v1/accounts/{account}/sessions?reason={sent}"),
        ] {
            let reply = app.call(Method::DELETE, &uri, None).await;
            assert_error(&reply, StatusCode::BAD_REQUEST, ErrorCode::InvalidRequest);
            assert!(reply.text.contains("reason"), "{uri}: {}", reply.text);
            if !sent.is_empty() {
                assert!(
                    !reply.text.contains(decoded) && !reply.text.contains(sent),
                    "{uri} echoed: {}",
                    reply.text
                );
            }
        }
    }
    let twice = format!("/v1/sessions/{id}?reason=idle&reason=admin");
    let reply = app.call(Method::DELETE, &twice, None).await;
    assert_error(&reply, StatusCode::BAD_REQUEST, ErrorCode::InvalidRequest);

    assert_eq!(
        app.resolve(&token).await.status,
        StatusCode::OK,
        "nothing revoked"
    );
    assert_eq!(reason_of(&app, id).await, Value::Null);
}

#[tokio::test]
async fn the_openapi_document_states_the_reason_grammar() {
    let app = app().await;
    let doc = app.call(Method::GET, "/openapi.json", None).await.body;
    for path in ["/v1/sessions/{id}", "/v1/accounts/{account_id}/sessions"] {
        let parameters = doc["paths"][path]["delete"]["parameters"]
            .as_array()
            .unwrap();
        let reason = parameters
            .iter()
            .find(|p| p["name"] == "reason")
            .unwrap_or_else(|| panic!("{path}: no reason parameter"));
        assert_eq!(reason["in"], "query");
        assert_eq!(reason["required"], false);
        assert_eq!(
            reason["schema"]["pattern"], "^[a-z][a-z0-9_]{0,31}$",
            "{path}"
        );
        assert_eq!(reason["schema"]["maxLength"], 32, "{path}");
        assert_eq!(reason["schema"]["minLength"], 1, "{path}");
    }
    // The stored view is the session's own fields and its own, `allOf`.
    let field = doc["components"]["schemas"]["StoredSessionView"]["allOf"]
        .as_array()
        .unwrap()
        .iter()
        .map(|part| &part["properties"]["revocation_reason"])
        .find(|field| !field.is_null())
        .expect("revocation_reason in the stored view");
    assert_eq!(field["pattern"], "^[a-z][a-z0-9_]{0,31}$", "{field}");
    assert_eq!(field["maxLength"], 32, "{field}");
    assert!(
        field["type"]
            .as_array()
            .is_some_and(|types| types.contains(&json!("null"))),
        "nullable: {field}"
    );
}
