//! Every route and every error, in process: no socket, no database.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, Version, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use session_core::memory::MemoryStore;
use session_core::port::store::{SessionStore, StoreDecorator, StoreError};
use session_core::{
    AccountId, ListScope, MemoryCache, Revoker, Session, SessionService, SessionServiceBuilder,
    SessionToken,
};
use session_http::{
    ApiKey, ApiKeys, ApiState, ErrorCode, MAX_BODY_BYTES, STORE_CHECK_INTERVAL, Scope, Scopes,
    StoreMetrics, router,
};
use tower::ServiceExt;
use uuid::Uuid;

pub(crate) const KEY: &str = "test-api-key-0123456789";

/// A configured key named `name` holding `scopes`, presented as `secret`.
pub(crate) fn scoped_key(name: &str, scopes: &[Scope], secret: &str) -> ApiKey {
    ApiKey::new(Revoker::new(name).unwrap(), Scopes::of(scopes), secret).unwrap()
}

/// A request addressed to `localhost` that presents `secret` as its
/// `Authorization: Bearer` key.
pub(crate) fn keyed(secret: &str, method: Method, uri: &str) -> axum::http::request::Builder {
    Request::builder()
        .method(method)
        .uri(uri)
        .header(header::HOST, "localhost")
        .header(header::AUTHORIZATION, format!("Bearer {secret}"))
}

/// `request` with `body` as its JSON body, or with none.
pub(crate) fn with_json(
    mut request: axum::http::request::Builder,
    body: Option<Value>,
) -> Request<Body> {
    let body = match body {
        Some(body) => {
            request = request.header(header::CONTENT_TYPE, "application/json");
            Body::from(body.to_string())
        }
        None => Body::empty(),
    };
    request.body(body).unwrap()
}

pub(crate) struct App {
    router: Router,
    pub(crate) store: Arc<MemoryStore>,
    pub(crate) service: SessionService,
}

pub(crate) async fn app_with(keys: ApiKeys, warm: bool) -> App {
    app_over(Arc::new(MemoryCache::new()), keys, warm).await
}

pub(crate) async fn app_over(
    cache: Arc<dyn session_core::port::cache::SessionCache>,
    keys: ApiKeys,
    warm: bool,
) -> App {
    app_built(cache, keys, warm, |builder| builder).await
}

/// As [`app_over`], with the service's settings adjusted by `build`.
pub(crate) async fn app_built(
    cache: Arc<dyn session_core::port::cache::SessionCache>,
    keys: ApiKeys,
    warm: bool,
    build: impl FnOnce(SessionServiceBuilder) -> SessionServiceBuilder,
) -> App {
    let store = Arc::new(MemoryStore::new());
    let service = build(SessionService::builder(store.clone(), cache)).build();
    if warm {
        service.warm().await.unwrap();
    }
    let router = router(ApiState::builder(service.clone()).api_keys(keys).build());
    App {
        router,
        store,
        service,
    }
}

pub(crate) async fn app() -> App {
    app_with(ApiKeys::none(), true).await
}

pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Value,
    pub(crate) text: String,
}

impl App {
    pub(crate) async fn send(&self, request: Request<Body>) -> Reply {
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8(bytes.to_vec()).unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            body,
            text,
        }
    }

    /// Sends a request addressed to `localhost`, as a local client would.
    pub(crate) async fn call(&self, method: Method, uri: &str, body: Option<Value>) -> Reply {
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::HOST, "localhost");
        self.send(with_json(request, body)).await
    }

    /// As [`call`](Self::call), presenting the API key `secret`.
    pub(crate) async fn call_as(
        &self,
        secret: &str,
        method: Method,
        uri: &str,
        body: Option<Value>,
    ) -> Reply {
        self.send(with_json(keyed(secret, method, uri), body)).await
    }

    async fn raw(&self, uri: &str, content_type: Option<&str>, body: impl Into<Body>) -> Reply {
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(uri)
            .header(header::HOST, "localhost");
        if let Some(content_type) = content_type {
            request = request.header(header::CONTENT_TYPE, content_type);
        }
        self.send(request.body(body.into()).unwrap()).await
    }

    pub(crate) async fn create(&self, account: Uuid, label: &str) -> (String, Value) {
        let reply = self
            .call(
                Method::POST,
                "/v1/sessions",
                Some(json!({ "account_id": account, "label": label })),
            )
            .await;
        created(&reply)
    }

    /// As [`create`](Self::create), unlabelled, presenting the API key `secret`.
    pub(crate) async fn create_as(&self, secret: &str, account: Uuid) -> (String, Value) {
        let reply = self
            .call_as(
                secret,
                Method::POST,
                "/v1/sessions",
                Some(json!({ "account_id": account })),
            )
            .await;
        created(&reply)
    }

    pub(crate) async fn resolve(&self, token: &str) -> Reply {
        self.call(
            Method::POST,
            "/v1/sessions/resolve",
            Some(json!({ "token": token })),
        )
        .await
    }

    fn sessions_stored(&self) -> usize {
        self.service.status().cached_sessions
    }
}

/// The token and session of a `201 Created` reply to a create.
fn created(reply: &Reply) -> (String, Value) {
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let token = reply.body["token"].as_str().unwrap().to_owned();
    (token, reply.body["session"].clone())
}

pub(crate) fn assert_error(reply: &Reply, status: StatusCode, code: ErrorCode) {
    assert_eq!(reply.status, status, "{}", reply.text);
    assert_eq!(code.status(), status, "one status per code");
    let answered: ErrorCode = serde_json::from_value(reply.body["error"]["code"].clone())
        .unwrap_or_else(|err| panic!("{err}: {}", reply.text));
    assert_eq!(answered, code, "{}", reply.text);
    assert!(
        reply.body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{}",
        reply.text
    );
}

#[tokio::test]
async fn create_returns_the_token_once_and_the_session() {
    let app = app().await;
    let account = Uuid::new_v4();
    let reply = app
        .call(
            Method::POST,
            "/v1/sessions",
            Some(json!({
                "account_id": account,
                "user_agent": "curl/8.5",
                "ip": "::ffff:192.0.2.7",
                "label": "laptop",
            })),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    assert!(reply.body["token"].as_str().unwrap().starts_with("sess_"));
    let session = &reply.body["session"];
    assert_eq!(session["account_id"], account.to_string());
    assert_eq!(session["user_agent"], "curl/8.5");
    assert_eq!(
        session["ip"], "192.0.2.7",
        "IPv4-mapped addresses are stored as IPv4"
    );
    assert_eq!(session["label"], "laptop");
    assert_eq!(session["revoked_at"], Value::Null);
    let created_at = session["created_at"].as_str().unwrap();
    time::OffsetDateTime::parse(created_at, &time::format_description::well_known::Rfc3339)
        .unwrap();
    let keys: Vec<&str> = session
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys.len(),
        7,
        "exactly id, account_id, created_at, revoked_at, user_agent, ip, label: {keys:?}"
    );
    assert_eq!(reply.headers[header::CACHE_CONTROL], "no-store");
    assert!(reply.headers.contains_key("x-request-id"));

    // Optional fields may be absent or null.
    let reply = app
        .call(
            Method::POST,
            "/v1/sessions",
            Some(json!({ "account_id": account, "label": null })),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED);
    assert_eq!(reply.body["session"]["label"], Value::Null);

    let reply = app
        .raw(
            "/v1/sessions",
            Some("Application/Merge-Patch+JSON; charset=utf-8"),
            json!({ "account_id": account }).to_string(),
        )
        .await;
    assert_eq!(
        reply.status,
        StatusCode::CREATED,
        "a +json type is JSON: {}",
        reply.text
    );
}

#[tokio::test]
async fn create_rejects_bad_input_by_field_and_changes_nothing() {
    let app = app().await;
    let account = Uuid::new_v4().to_string();
    let cases = [
        (json!({}), "account_id"),
        (json!({ "account_id": "not-a-uuid" }), "account_id"),
        (json!({ "account_id": Uuid::nil() }), "account_id"),
        (json!({ "account_id": 42 }), "account_id"),
        (json!({ "account_id": account, "ip": "300.1.1.1" }), "ip"),
        (
            json!({ "account_id": account, "label": "x".repeat(129) }),
            "label",
        ),
        (json!({ "account_id": account, "label": "" }), "label"),
        (
            json!({ "account_id": account, "label": "a\u{7}b" }),
            "label",
        ),
        (
            json!({ "account_id": account, "user_agent": "curl\u{0}/8" }),
            "user_agent",
        ),
        (
            json!({ "account_id": account, "user_agent": "\u{1b}[2J" }),
            "user_agent",
        ),
        (
            json!({ "account_id": account, "colour": "red" }),
            "`account_id`, `user_agent`, `ip`, `label`",
        ),
        (json!({ "account_id": [account] }), "account_id"),
    ];
    for (body, field) in cases {
        let reply = app
            .call(Method::POST, "/v1/sessions", Some(body.clone()))
            .await;
        assert_error(&reply, StatusCode::BAD_REQUEST, ErrorCode::InvalidRequest);
        let message = reply.body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(field),
            "{body}: {message:?} should name {field}"
        );
    }
    let reply = app
        .raw("/v1/sessions", Some("application/json"), "{\"account_id\":")
        .await;
    assert_error(&reply, StatusCode::BAD_REQUEST, ErrorCode::InvalidRequest);
    assert!(reply.text.contains("line 1, column 14"), "{}", reply.text);
    for body in ["[]", "\"x\"", "null"] {
        let reply = app
            .raw("/v1/sessions", Some("application/json"), body)
            .await;
        assert_error(&reply, StatusCode::BAD_REQUEST, ErrorCode::InvalidRequest);
        assert!(reply.text.contains("JSON object"), "{body}: {}", reply.text);
    }
    let duplicate = format!("{{\"account_id\":\"{account}\",\"account_id\":\"{account}\"}}");
    let reply = app
        .raw("/v1/sessions", Some("application/json"), duplicate)
        .await;
    assert_error(&reply, StatusCode::BAD_REQUEST, ErrorCode::InvalidRequest);
    assert!(
        reply.text.contains("account_id: given more than once"),
        "{}",
        reply.text
    );
    let reply = app
        .raw(
            "/v1/sessions",
            Some("text/plain"),
            json!({ "account_id": account }).to_string(),
        )
        .await;
    assert_error(
        &reply,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ErrorCode::UnsupportedMediaType,
    );
    let reply = app
        .raw(
            "/v1/sessions",
            None,
            json!({ "account_id": account }).to_string(),
        )
        .await;
    assert_error(
        &reply,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ErrorCode::UnsupportedMediaType,
    );
    let huge = json!({ "account_id": account, "label": "x".repeat(MAX_BODY_BYTES) }).to_string();
    let reply = app
        .raw("/v1/sessions", Some("application/json"), huge)
        .await;
    assert_error(
        &reply,
        StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::PayloadTooLarge,
    );
    assert_eq!(
        app.sessions_stored(),
        0,
        "no rejected request created anything"
    );
}

#[tokio::test]
async fn a_user_agent_as_browsers_send_it_never_fails_a_login() {
    let app = app().await;
    let long = "Mozilla/5.0 ".repeat(60);
    for (sent, stored) in [
        (
            json!("Mozilla/5.0\t(X11; Linux x86_64)"),
            json!("Mozilla/5.0 (X11; Linux x86_64)"),
        ),
        (json!("  curl/8.5\r\n"), json!("curl/8.5")),
        (json!(""), Value::Null),
        (json!(" \t "), Value::Null),
        (json!(long), json!(long[..512].trim_end())),
    ] {
        let reply = app
            .call(
                Method::POST,
                "/v1/sessions",
                Some(json!({ "account_id": Uuid::new_v4(), "user_agent": sent })),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{sent}: {}", reply.text);
        assert_eq!(reply.body["session"]["user_agent"], stored, "{sent}");
        let id = reply.body["session"]["id"].as_str().unwrap();
        let read = app
            .call(Method::GET, &format!("/v1/sessions/{id}"), None)
            .await;
        assert_eq!(
            read.body["session"]["user_agent"], stored,
            "stored as shown"
        );
    }
}

#[tokio::test]
async fn resolve_accepts_active_tokens_and_rejects_the_rest_alike() {
    let app = app().await;
    let account = Uuid::new_v4();
    let (token, session) = app.create(account, "phone").await;
    let reply = app.resolve(&token).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.body["session"], session);
    assert!(
        !reply.text.contains(&token),
        "resolve never echoes the token"
    );

    let reply = app
        .call(
            Method::DELETE,
            &format!("/v1/sessions/{}", session["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    let unknown = session_core::SessionToken::generate();
    let revoked = app.resolve(&token).await;
    let mut rejected = vec![revoked];
    for other in ["garbage", "", &token[..20], unknown.expose_secret()] {
        rejected.push(app.resolve(other).await);
    }
    for reply in &rejected {
        assert_error(reply, StatusCode::UNAUTHORIZED, ErrorCode::InvalidToken);
        assert_eq!(reply.body, rejected[0].body, "no oracle between the cases");
    }
    let reply = app
        .call(Method::POST, "/v1/sessions/resolve", Some(json!({})))
        .await;
    assert_error(&reply, StatusCode::BAD_REQUEST, ErrorCode::InvalidRequest);
    assert!(reply.text.contains("token"));
}

#[tokio::test]
async fn resolve_before_warm_is_503_not_ready_never_401() {
    let app = app_with(ApiKeys::none(), false).await;
    for token in [
        "garbage",
        session_core::SessionToken::generate().expose_secret(),
    ] {
        let reply = app.resolve(token).await;
        assert_error(&reply, StatusCode::SERVICE_UNAVAILABLE, ErrorCode::NotReady);
        assert_eq!(reply.headers[header::RETRY_AFTER], "1");
    }
    let reply = app.call(Method::GET, "/readyz", None).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.body["status"], "not_ready");
    assert_eq!(reply.body["checks"]["cache"]["status"], "warming");
    assert_eq!(reply.body["checks"]["store"]["status"], "ok");
    app.service.warm().await.unwrap();
    let reply = app.call(Method::GET, "/readyz", None).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body["status"], "ready");
}

#[tokio::test]
async fn get_and_revoke_by_id() {
    let app = app().await;
    let (_, session) = app.create(Uuid::new_v4(), "tablet").await;
    let path = format!("/v1/sessions/{}", session["id"].as_str().unwrap());
    let reply = app.call(Method::GET, &path, None).await;
    assert_eq!(reply.status, StatusCode::OK);
    // As created, and never seen (last-seen activity is off here).
    let mut expected = session.clone();
    expected["last_seen_at"] = serde_json::Value::Null;
    expected["revocation_reason"] = serde_json::Value::Null;
    expected["revoked_by"] = serde_json::Value::Null;
    assert_eq!(reply.body["session"], expected);

    for _ in 0..2 {
        let reply = app.call(Method::DELETE, &path, None).await;
        assert_eq!(
            reply.status,
            StatusCode::NO_CONTENT,
            "idempotent: {}",
            reply.text
        );
        assert!(reply.text.is_empty());
    }
    let reply = app.call(Method::GET, &path, None).await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "revoked sessions stay readable"
    );
    assert!(reply.body["session"]["revoked_at"].is_string());

    let missing = format!("/v1/sessions/{}", Uuid::now_v7());
    assert_error(
        &app.call(Method::GET, &missing, None).await,
        StatusCode::NOT_FOUND,
        ErrorCode::NotFound,
    );
    assert_error(
        &app.call(Method::DELETE, &missing, None).await,
        StatusCode::NOT_FOUND,
        ErrorCode::NotFound,
    );
    for method in [Method::GET, Method::DELETE] {
        let reply = app.call(method, "/v1/sessions/12345", None).await;
        assert_error(&reply, StatusCode::BAD_REQUEST, ErrorCode::InvalidRequest);
        assert!(reply.text.contains("session_id"), "{}", reply.text);
    }
}

#[tokio::test]
async fn list_and_revoke_all_for_an_account() {
    let app = app().await;
    let account = Uuid::new_v4();
    let mut ids = Vec::new();
    for label in ["first", "second", "third"] {
        let (_, session) = app.create(account, label).await;
        ids.push(session["id"].as_str().unwrap().to_owned());
    }
    let (other_token, _) = app.create(Uuid::new_v4(), "someone else").await;
    let base = format!("/v1/accounts/{account}/sessions");

    let reply = app.call(Method::GET, &base, None).await;
    assert_eq!(reply.status, StatusCode::OK);
    let labels: Vec<&str> = reply.body["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["label"].as_str().unwrap())
        .collect();
    assert_eq!(labels, ["third", "second", "first"], "newest first");

    let reply = app
        .call(Method::DELETE, &format!("{base}?except={}", ids[1]), None)
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.body, json!({ "revoked": 2 }));
    let active = app.call(Method::GET, &base, None).await;
    assert_eq!(active.body["sessions"].as_array().unwrap().len(), 1);
    assert_eq!(active.body["sessions"][0]["id"], ids[1]);
    let all = app
        .call(Method::GET, &format!("{base}?include_revoked=true"), None)
        .await;
    assert_eq!(all.body["sessions"].as_array().unwrap().len(), 3);
    let reply = app.call(Method::DELETE, &base, None).await;
    assert_eq!(reply.body, json!({ "revoked": 1 }));
    assert_eq!(app.resolve(&other_token).await.status, StatusCode::OK);

    for (uri, field) in [
        (format!("{base}?include_revoked=yes"), "include_revoked"),
        ("/v1/accounts/nope/sessions".to_owned(), "account_id"),
        (format!("{base}?colour=red"), "`include_revoked`"),
        (
            format!("{base}?include_revoked=true&include_revoked=false"),
            "include_revoked: given more than once",
        ),
    ] {
        let reply = app.call(Method::GET, &uri, None).await;
        assert_error(&reply, StatusCode::BAD_REQUEST, ErrorCode::InvalidRequest);
        assert!(reply.text.contains(field), "{uri}: {}", reply.text);
    }
    let reply = app
        .call(Method::DELETE, &format!("{base}?except=nope"), None)
        .await;
    assert_error(&reply, StatusCode::BAD_REQUEST, ErrorCode::InvalidRequest);
    assert!(reply.text.contains("except"));
}

#[tokio::test]
async fn a_store_outage_fails_writes_with_503_and_resolves_keep_working() {
    let app = app().await;
    let account = Uuid::new_v4();
    let (token, session) = app.create(account, "before outage").await;
    app.store.set_unavailable(true);
    let reply = app
        .call(
            Method::POST,
            "/v1/sessions",
            Some(json!({ "account_id": account })),
        )
        .await;
    assert_error(
        &reply,
        StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Unavailable,
    );
    let path = format!("/v1/sessions/{}", session["id"].as_str().unwrap());
    assert_error(
        &app.call(Method::DELETE, &path, None).await,
        StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Unavailable,
    );
    assert_eq!(app.resolve(&token).await.status, StatusCode::OK);
    let reply = app.call(Method::GET, "/readyz", None).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        reply.body["checks"]["store"],
        json!({ "status": "error", "reason": "unavailable" })
    );
    assert!(!reply.text.contains("memory store"), "{}", reply.text);
    assert_eq!(reply.body["checks"]["cache"]["status"], "ok");
    app.store.set_unavailable(false);
    assert_eq!(
        app.sessions_stored(),
        1,
        "the failed create left nothing behind"
    );
    assert_eq!(
        app.resolve(&token).await.status,
        StatusCode::OK,
        "the failed revoke changed nothing"
    );
}

#[tokio::test]
async fn unknown_routes_and_wrong_methods_get_json_errors() {
    let app = app().await;
    assert_error(
        &app.call(Method::GET, "/nope", None).await,
        StatusCode::NOT_FOUND,
        ErrorCode::NotFound,
    );
    assert_error(
        &app.call(Method::GET, "/v1/nope", None).await,
        StatusCode::NOT_FOUND,
        ErrorCode::NotFound,
    );
    let reply = app.call(Method::PUT, "/v1/sessions", None).await;
    assert_error(
        &reply,
        StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::MethodNotAllowed,
    );
    assert_error(
        &app.call(Method::POST, "/healthz", None).await,
        StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::MethodNotAllowed,
    );
}

#[tokio::test]
async fn the_api_key_guards_v1_and_only_v1() {
    let app = app_with(ApiKeys::new([KEY]).unwrap(), true).await;
    let account = Uuid::new_v4();
    let body = json!({ "account_id": account }).to_string();
    let request = |auth: Option<&str>| {
        let mut request =
            Request::post("/v1/sessions").header(header::CONTENT_TYPE, "application/json");
        if let Some(auth) = auth {
            request = request.header(header::AUTHORIZATION, auth);
        }
        request.body(Body::from(body.clone())).unwrap()
    };
    for auth in [
        None,
        Some("Bearer wrong-key-0123456789"),
        Some(KEY),
        Some("Basic dGVzdA=="),
    ] {
        let reply = app.send(request(auth)).await;
        assert_error(&reply, StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized);
        assert_eq!(reply.headers[header::WWW_AUTHENTICATE], "Bearer");
    }
    assert_eq!(app.sessions_stored(), 0);
    let reply = app.send(request(Some(&format!("Bearer {KEY}")))).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let reply = app.send(request(Some(&format!("bearer {KEY}")))).await;
    assert_eq!(reply.status, StatusCode::CREATED);
    for open in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
        assert_eq!(
            app.call(Method::GET, open, None).await.status,
            StatusCode::OK,
            "{open}"
        );
    }
}

#[tokio::test]
async fn health_metrics_and_openapi() {
    let app = app().await;
    let reply = app.call(Method::GET, "/healthz", None).await;
    assert_eq!(
        (reply.status, reply.body.clone()),
        (StatusCode::OK, json!({ "status": "ok" }))
    );

    let (token, _) = app.create(Uuid::new_v4(), "metered").await;
    app.resolve(&token).await;
    app.resolve("garbage").await;
    let metrics = app.call(Method::GET, "/metrics", None).await;
    assert_eq!(metrics.status, StatusCode::OK);
    for line in [
        "session_resolves_total{outcome=\"hit\"} 1",
        "session_resolves_total{outcome=\"malformed\"} 1",
        "session_cache_sessions 1",
        "session_cache_bytes ",
        "session_cache_warm 1",
        "session_cache_warm_duration_seconds ",
        "session_miss_waits_total 0",
        "http_server_request_duration_seconds_count{http_request_method=\"POST\",http_route=\"/v1/sessions/resolve\",http_response_status_code=\"200\"} 1",
        "http_server_request_duration_seconds_count{http_request_method=\"POST\",http_route=\"/v1/sessions/resolve\",http_response_status_code=\"401\"} 1",
        "http_server_request_duration_seconds_count{http_request_method=\"POST\",http_route=\"/v1/sessions\",http_response_status_code=\"201\"} 1",
    ] {
        assert!(
            metrics.text.contains(line),
            "missing {line:?} in\n{}",
            metrics.text
        );
    }
    assert!(!metrics.text.contains(&token[5..]), "no token in metrics");
    app.call(Method::GET, "/no/such/route/12345", None).await;
    let metrics = app.call(Method::GET, "/metrics", None).await;
    assert!(metrics.text.contains("route=\"unmatched\""));
    assert!(
        !metrics.text.contains("12345"),
        "labels never come from the path"
    );

    let doc = app.call(Method::GET, "/openapi.json", None).await;
    assert_eq!(doc.status, StatusCode::OK);
    assert!(doc.body["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/v1/sessions",
        "/v1/sessions/resolve",
        "/v1/sessions/{id}",
        "/v1/accounts/{account_id}/sessions",
        "/readyz",
        "/v1/forward-auth",
    ] {
        assert!(
            doc.body["paths"][path].is_object(),
            "{path} missing from the OpenAPI document"
        );
    }
    assert!(doc.body["components"]["securitySchemes"]["api_key"].is_object());
}

/// A request to create a session with the given `Host` headers, version and
/// target (a path, or an absolute URI as HTTP/2 and proxies send).
fn addressed(hosts: &[&str], version: Version, uri: &str, key: Option<&str>) -> Request<Body> {
    let mut request = Request::post(uri)
        .version(version)
        .header(header::CONTENT_TYPE, "application/json");
    for host in hosts {
        request = request.header(header::HOST, *host);
    }
    if let Some(key) = key {
        request = request.header(header::AUTHORIZATION, format!("Bearer {key}"));
    }
    let body = json!({ "account_id": Uuid::new_v4() }).to_string();
    request.body(Body::from(body)).unwrap()
}

#[tokio::test]
async fn without_a_key_loopback_names_are_accepted_in_every_form() {
    let app = app().await;
    let mut accepted = Vec::new();
    for host in [
        "localhost",
        "LocalHost",
        "LOCALHOST:8080",
        "localhost:8080",
        "127.0.0.1",
        "127.0.0.1:8080",
        "[::1]",
        "[::1]:8080",
        // Every address a keyless service may listen on.
        "127.0.0.2",
        "127.255.255.254:8080",
        "[0:0:0:0:0:0:0:1]:8080",
    ] {
        accepted.push((
            host.to_owned(),
            addressed(&[host], Version::HTTP_11, "/v1/sessions", None),
        ));
    }
    // HTTP/1.0 may omit Host; HTTP/2 names the target in `:authority`, which
    // reaches the router as the URI's authority.
    accepted.push((
        "HTTP/1.0 without Host".to_owned(),
        addressed(&[], Version::HTTP_10, "/v1/sessions", None),
    ));
    for authority in ["localhost:8080", "127.0.0.1", "[::1]:8080"] {
        accepted.push((
            format!("HTTP/2 :authority {authority}"),
            addressed(
                &[],
                Version::HTTP_2,
                &format!("http://{authority}/v1/sessions"),
                None,
            ),
        ));
    }
    for (case, request) in accepted {
        let reply = app.send(request).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{case}: {}", reply.text);
    }
}

#[tokio::test]
async fn without_a_key_other_names_get_421_on_every_route_and_change_nothing() {
    let app = app().await;
    let mut refused = Vec::new();
    for host in [
        "evil.example",
        "evil.example:8080",
        "localhost.evil.example",
        "127.0.0.1.nip.io",
        "localhost.",
        "127.1",
        "2130706433",
        "128.0.0.1",
        "0.0.0.0",
        "[::]",
        "[::2]",
        "[::ffff:127.0.0.1]",
        "user@localhost",
        "",
        "[::1",
        "local host",
    ] {
        refused.push((
            format!("Host {host:?}"),
            addressed(&[host], Version::HTTP_11, "/v1/sessions", None),
        ));
    }
    refused.push((
        "HTTP/1.1 without Host".to_owned(),
        addressed(&[], Version::HTTP_11, "/v1/sessions", None),
    ));
    refused.push((
        "a second Host that is not loopback".to_owned(),
        addressed(
            &["localhost", "evil.example"],
            Version::HTTP_11,
            "/v1/sessions",
            None,
        ),
    ));
    refused.push((
        "HTTP/2 :authority evil.example".to_owned(),
        addressed(
            &[],
            Version::HTTP_2,
            "http://evil.example/v1/sessions",
            None,
        ),
    ));
    refused.push((
        "absolute target evil.example with Host localhost".to_owned(),
        addressed(
            &["localhost"],
            Version::HTTP_11,
            "http://evil.example/v1/sessions",
            None,
        ),
    ));
    for (case, request) in refused {
        let reply = app.send(request).await;
        assert_error(
            &reply,
            StatusCode::MISDIRECTED_REQUEST,
            ErrorCode::MisdirectedRequest,
        );
        assert!(!reply.text.contains("evil"), "{case}: {}", reply.text);
        assert_eq!(reply.headers[header::CACHE_CONTROL], "no-store", "{case}");
    }
    assert_eq!(
        app.sessions_stored(),
        0,
        "no refused request created anything"
    );

    for path in [
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
        "/no/such/route",
        // Only forward auth itself is exempt, not names that begin like it.
        "/v1/forward-authx",
        "/v1/forward-auth.json",
        "/v1//forward-auth",
        "/v1/Forward-Auth",
    ] {
        let request = Request::get(path)
            .header(header::HOST, "evil.example")
            .body(Body::empty())
            .unwrap();
        let reply = app.send(request).await;
        assert_error(
            &reply,
            StatusCode::MISDIRECTED_REQUEST,
            ErrorCode::MisdirectedRequest,
        );
    }
}

#[tokio::test]
async fn with_a_key_any_name_is_served() {
    let app = app_with(ApiKeys::new([KEY]).unwrap(), true).await;
    for hosts in [&["sessions.internal.example:8080"][..], &[]] {
        let reply = app
            .send(addressed(
                hosts,
                Version::HTTP_11,
                "/v1/sessions",
                Some(KEY),
            ))
            .await;
        assert_eq!(
            reply.status,
            StatusCode::CREATED,
            "{hosts:?}: {}",
            reply.text
        );
        let reply = app
            .send(addressed(hosts, Version::HTTP_11, "/v1/sessions", None))
            .await;
        assert_error(&reply, StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized);
    }
    let request = Request::get("/healthz")
        .header(header::HOST, "sessions.internal.example")
        .body(Body::empty())
        .unwrap();
    assert_eq!(app.send(request).await.status, StatusCode::OK);
}

/// Every request here puts `sentinel` (a real token's text) somewhere a
/// client controls: a query name or value, a path segment, a JSON name, value
/// or broken syntax, a header. None may come back, in a body or a header.
#[tokio::test]
async fn no_response_repeats_what_the_client_sent() {
    let keyless = app().await;
    let keyed = app_with(ApiKeys::new([KEY]).unwrap(), true).await;
    let sentinel = session_core::SessionToken::generate();
    let s = sentinel.expose_secret();
    let account = Uuid::new_v4();
    let accounts = format!("/v1/accounts/{account}/sessions");
    let request = |method: Method, uri: &str| {
        Request::builder()
            .method(method)
            .uri(uri)
            .header(header::HOST, "localhost")
    };
    let mut requests = Vec::new();

    for query in [
        format!("{s}=1"),
        s.to_owned(),
        format!("include_revoked={s}"),
        format!("include_revoked=true&{s}=true"),
        format!("include_revoked=true&include_revoked={s}"),
        format!("except={s}"),
        format!("except={account}&{s}="),
        format!("except={s}&except={s}"),
        format!("%FF{s}=%FF"),
    ] {
        for method in [Method::GET, Method::DELETE] {
            let uri = format!("{accounts}?{query}");
            requests.push((uri.clone(), request(method, &uri).body(Body::empty())));
        }
    }
    for path in [
        format!("/v1/sessions/{s}"),
        format!("/v1/sessions/%FF{s}"),
        format!("/v1/accounts/{s}/sessions"),
        format!("/v1/accounts/%FF{s}/sessions"),
        format!("/v1/{s}"),
        format!("/{s}"),
    ] {
        for method in [Method::GET, Method::DELETE, Method::PUT] {
            requests.push((path.clone(), request(method, &path).body(Body::empty())));
        }
    }
    for body in [
        format!(r#"{{"{s}": true}}"#),
        format!(r#"{{"account_id": "{account}", "{s}": "x"}}"#),
        format!(r#"{{"token": "x", "{s}": "x"}}"#),
        format!(r#"{{"account_id": "{s}"}}"#),
        format!(r#"{{"account_id": {{"{s}": 1}}}}"#),
        format!(r#"{{"account_id": ["{s}"], "token": ["{s}"]}}"#),
        format!(r#"{{"account_id": "{account}", "ip": "{s}"}}"#),
        format!(r#"{{"account_id": "{account}", "label": "{s}\u0007"}}"#),
        format!(r#"{{"account_id": "{account}", "label": "{s}{s}{s}"}}"#),
        format!(r#"{{"account_id": "{account}", "user_agent": "{s}\u0000"}}"#),
        format!(r#"{{"account_id": "{account}", "user_agent": {s}}}"#),
        format!(r#"{{"token": {s}}}"#),
        format!(r#"{{"token": "{s}", "token": "{s}"}}"#),
        format!(r#"{{"token": "{s}"}}"#),
        format!(r#"{{"token": "{s}"#),
        format!(r#"{{"{s}"#),
        format!(r#"{{"{s}": 1,}}"#),
        format!(r#""{s}""#),
        format!(r#"["{s}"]"#),
        format!(r#"{{}} {s}"#),
        s.to_owned(),
    ] {
        for uri in ["/v1/sessions", "/v1/sessions/resolve"] {
            let content =
                request(Method::POST, uri).header(header::CONTENT_TYPE, "application/json");
            requests.push((
                format!("{uri} {body}"),
                content.body(Body::from(body.clone())),
            ));
        }
    }
    let body = json!({ "token": s }).to_string();
    for content_type in [
        format!("application/{s}"),
        s.to_owned(),
        format!("{s}/json"),
    ] {
        let content = request(Method::POST, "/v1/sessions/resolve")
            .header(header::CONTENT_TYPE, content_type.as_str());
        requests.push((content_type, content.body(Body::from(body.clone()))));
    }
    for host in [
        s.to_owned(),
        format!("{s}.localhost"),
        format!("{s}@localhost"),
    ] {
        let misdirected = Request::get("/healthz").header(header::HOST, host.as_str());
        requests.push((format!("Host {host}"), misdirected.body(Body::empty())));
    }
    for (name, value) in [
        ("authorization", format!("Bearer {s}")),
        ("authorization", format!("Bearer {s}{s}")),
        ("cookie", format!("__Host-session={s}x")),
        (
            "cookie",
            format!("__Host-session={s}; __Host-session={}", &s[1..]),
        ),
        ("x-session-token", s.to_owned()),
        ("x-session-token", format!("{s}\u{e9}")),
    ] {
        for path in [
            "/v1/forward-auth".to_owned(),
            format!("/v1/forward-auth/{s}?{s}"),
        ] {
            let forward = request(Method::GET, &path).header(
                name,
                axum::http::HeaderValue::from_bytes(value.as_bytes()).unwrap(),
            );
            requests.push((
                format!("forward auth {name} {value}"),
                forward.body(Body::empty()),
            ));
        }
    }
    for id in [s.to_owned(), format!("{}{s}", Uuid::new_v4())] {
        let traced = request(Method::GET, "/healthz").header("x-request-id", id.as_str());
        requests.push((format!("X-Request-Id {id}"), traced.body(Body::empty())));
    }
    let mut replies = Vec::new();
    for (case, request) in requests {
        replies.push((case, keyless.send(request.unwrap()).await));
    }
    for auth in [format!("Bearer {s}"), s.to_owned(), format!("{s} {s}")] {
        let request = request(Method::POST, "/v1/sessions/resolve")
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::AUTHORIZATION, auth.as_str())
            .body(Body::from(body.clone()))
            .unwrap();
        replies.push((format!("Authorization {auth}"), keyed.send(request).await));
    }

    let random_part = &s[session_core::token::TOKEN_PREFIX.len()..];
    for (case, reply) in &replies {
        assert!(!reply.text.contains(random_part), "{case}: {}", reply.text);
        for (name, value) in &reply.headers {
            assert!(
                !String::from_utf8_lossy(value.as_bytes()).contains(random_part),
                "{case}: header {name}: {value:?}"
            );
        }
        if !case.starts_with("X-Request-Id") {
            assert!(
                reply.status.is_client_error(),
                "{case}: {} {}",
                reply.status,
                reply.text
            );
        }
    }
    assert_eq!(keyless.sessions_stored(), 0);
}

#[tokio::test]
async fn a_uuid_request_id_is_kept_and_anything_else_replaced() {
    let app = app().await;
    let id = Uuid::new_v4().to_string();
    let request = Request::get("/healthz")
        .header(header::HOST, "localhost")
        .header("x-request-id", id.as_str())
        .body(Body::empty())
        .unwrap();
    assert_eq!(app.send(request).await.headers["x-request-id"], id.as_str());
    let request = Request::get("/healthz")
        .header(header::HOST, "localhost")
        .header("x-request-id", "not a uuid")
        .body(Body::empty())
        .unwrap();
    let replaced = app.send(request).await.headers["x-request-id"].clone();
    let replaced = Uuid::try_parse(replaced.to_str().unwrap()).unwrap();
    assert_eq!(replaced.get_version_num(), 4, "a random UUID");
    // Two ids are not one id: both are replaced, by a fresh id each time.
    let request = Request::get("/healthz")
        .header(header::HOST, "localhost")
        .header("x-request-id", id.as_str())
        .header("x-request-id", id.as_str())
        .body(Body::empty())
        .unwrap();
    let again = app.send(request).await.headers["x-request-id"].clone();
    assert_ne!(again, id.as_str());
    assert_ne!(again, replaced.to_string().as_str());
}

/// With a change log, a miss the cache cannot catch up to decide (the log
/// cannot be read) is answered 503 `unavailable` with `Retry-After`, and
/// counted as that by the resolve, by forward auth and by the failed log
/// reads: never as an invalid token.
#[tokio::test]
async fn a_miss_the_change_log_cannot_decide_is_counted_as_the_503_it_answers() {
    let store = Arc::new(MemoryStore::new());
    let metered = StoreMetrics::default();
    let service =
        SessionService::builder(metered.store(store.clone()), Arc::new(MemoryCache::new()))
            .change_log(metered.change_log(store.clone()))
            .max_staleness(std::time::Duration::from_millis(100))
            .build();
    let _tasks = service.start();
    for _ in 0..10_000 {
        if service.status().cache_ready() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    let app = App {
        router: router(
            ApiState::builder(service.clone())
                .store_metrics(&metered)
                .build(),
        ),
        store,
        service,
    };
    let unknown = SessionToken::generate();
    let reply = app.resolve(unknown.expose_secret()).await;
    assert_error(&reply, StatusCode::UNAUTHORIZED, ErrorCode::InvalidToken);

    app.store.set_unavailable(true);
    let reply = app.resolve(SessionToken::generate().expose_secret()).await;
    assert_error(
        &reply,
        StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Unavailable,
    );
    assert_eq!(reply.headers[header::RETRY_AFTER], "1");
    let request = Request::get("/v1/forward-auth")
        .header(header::HOST, "localhost")
        .header("x-session-token", SessionToken::generate().expose_secret())
        .body(Body::empty())
        .unwrap();
    assert_eq!(
        app.send(request).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    // Malformed: still invalid, whatever the log does.
    let reply = app.resolve("garbage").await;
    assert_error(&reply, StatusCode::UNAUTHORIZED, ErrorCode::InvalidToken);
    let metrics = app.call(Method::GET, "/metrics", None).await;
    for line in [
        "session_resolves_total{outcome=\"store_unavailable\"} 2",
        "session_resolves_total{outcome=\"caught_up_inactive\"} 1",
        "session_resolves_total{outcome=\"malformed\"} 1",
        "session_forward_auths_total{outcome=\"unavailable\"} 1",
        "session_miss_waits_total 3",
        "session_store_errors_total{operation=\"log_read\",kind=\"unavailable\"}",
    ] {
        assert!(
            metrics.text.contains(line),
            "missing {line:?} in\n{}",
            metrics.text
        );
    }
    let doc = app.call(Method::GET, "/openapi.json", None).await;
    let resolve = &doc.body["paths"]["/v1/sessions/resolve"]["post"]["responses"]["503"];
    assert!(
        resolve["description"]
            .as_str()
            .unwrap()
            .contains("`unavailable`"),
        "{resolve}"
    );
}

/// A `MemoryStore` that counts health checks, each taking 50 ms, so
/// concurrent probes overlap one.
struct SlowHealthChecks {
    inner: MemoryStore,
    health_checks: std::sync::atomic::AtomicUsize,
}

impl StoreDecorator for SlowHealthChecks {
    fn inner_store(&self) -> &dyn SessionStore {
        &self.inner
    }

    async fn health_check(&self) -> Result<(), StoreError> {
        self.health_checks
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        self.inner.health_check().await
    }
}

/// `/readyz` is open: however many probes arrive, the store sees at most one
/// health check per interval, and its error text stays in the log.
#[tokio::test(start_paused = true)]
async fn readiness_probes_share_one_store_check_per_interval_and_hide_its_error() {
    let store = Arc::new(SlowHealthChecks {
        inner: MemoryStore::new(),
        health_checks: 0.into(),
    });
    let service = SessionService::builder(store.clone(), Arc::new(MemoryCache::new())).build();
    service.warm().await.unwrap();
    let router = router(ApiState::builder(service).build());
    let checks = || {
        store
            .health_checks
            .load(std::sync::atomic::Ordering::SeqCst)
    };
    let probes = |count: usize| {
        let probes: Vec<_> = (0..count)
            .map(|_| {
                let router = router.clone();
                tokio::spawn(async move {
                    let request = Request::get("/readyz")
                        .header(header::HOST, "localhost")
                        .body(Body::empty())
                        .unwrap();
                    let response = router.oneshot(request).await.unwrap();
                    let status = response.status();
                    let bytes = response.into_body().collect().await.unwrap().to_bytes();
                    (status, String::from_utf8(bytes.to_vec()).unwrap())
                })
            })
            .collect();
        async move {
            let mut replies = Vec::new();
            for probe in probes {
                replies.push(probe.await.unwrap());
            }
            replies
        }
    };

    for (status, _) in probes(100).await {
        assert_eq!(status, StatusCode::OK);
    }
    assert_eq!(checks(), 1, "100 concurrent probes, one store check");
    probes(100).await;
    assert_eq!(checks(), 1, "within the interval the result is reused");

    store.inner.set_unavailable(true);
    tokio::time::advance(STORE_CHECK_INTERVAL).await;
    let replies = probes(100).await;
    assert_eq!(checks(), 2, "one new check once the interval has passed");
    for (status, text) in replies {
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        let body: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            body["checks"]["store"],
            json!({ "status": "error", "reason": "unavailable" }),
            "{text}"
        );
        assert!(!text.contains("memory store"), "no driver text: {text}");
        assert!(!text.contains("set unavailable"), "no driver text: {text}");
    }
    store.inner.set_unavailable(false);
    tokio::time::advance(STORE_CHECK_INTERVAL).await;
    assert_eq!(probes(1).await[0].0, StatusCode::OK);
    assert_eq!(checks(), 3);
}

/// Every route with an id in its path, as the OpenAPI document lists them,
/// answers a malformed id the same way: 400 `invalid_request`, naming the
/// id, never repeating the segment. Read from the document, so a new route
/// is covered as soon as it is documented.
#[tokio::test]
async fn every_route_with_an_id_refuses_a_malformed_one_alike_without_echoing_it() {
    let app = app().await;
    let document = serde_json::to_value(session_http::openapi()).unwrap();
    let paths = document["paths"].as_object().unwrap();
    let malformed = [
        "12345",
        "secret-token-Zm9vYmFyYmF6cXV4",
        "0190c3a4-7e2b-7c1d-9a5b-3f2e1d0c9b8aX",
        "%FF%FE",
        "%F0%9F%94%91-key",
        "0190c3a4-7e2b-7c1d-9a5b-3f2e1d0c9b8",
    ];
    let mut routes = 0;
    for (template, operations) in paths {
        let Some(start) = template.find('{') else {
            continue;
        };
        let end = template.find('}').unwrap();
        let name = match &template[start + 1..end] {
            "id" => "session_id",
            other => other,
        };
        for (method, _) in operations.as_object().unwrap() {
            let method: Method = method.to_uppercase().parse().unwrap();
            routes += 1;
            for segment in malformed {
                let uri = format!("{}{segment}{}", &template[..start], &template[end + 1..]);
                let reply = app.call(method.clone(), &uri, None).await;
                assert_error(&reply, StatusCode::BAD_REQUEST, ErrorCode::InvalidRequest);
                assert_eq!(
                    reply.body["error"]["message"],
                    format!("{name} in the path: must be a UUID"),
                    "{method} {uri}"
                );
                let decoded = form_urlencoded::parse(segment.as_bytes())
                    .next()
                    .map(|(text, _)| text.into_owned())
                    .unwrap_or_default();
                for echoed in [segment, decoded.as_str()] {
                    assert!(
                        !reply.text.contains(echoed),
                        "{method} {uri}: {}",
                        reply.text
                    );
                }
            }
        }
    }
    assert_eq!(
        routes, 4,
        "GET and DELETE of a session and of an account's sessions"
    );
}

/// Lists come a page at a time: `limit` bounds a page (50 by default, 200 at
/// most), `next_cursor` is given exactly while more follow, and following
/// it while sessions are created yields each older session once.
#[tokio::test]
async fn lists_are_paginated_by_limit_and_cursor() {
    let app = app().await;
    let account = Uuid::new_v4();
    let mut ids = Vec::new();
    for i in 0..51 {
        let (_, session) = app.create(account, &format!("s{i}")).await;
        ids.push(session["id"].as_str().unwrap().to_owned());
    }
    ids.reverse();
    let base = format!("/v1/accounts/{account}/sessions");
    let page_ids = |reply: &Reply| -> Vec<String> {
        reply.body["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_owned())
            .collect()
    };

    let first = app.call(Method::GET, &base, None).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    assert_eq!(page_ids(&first), ids[..50], "50 by default, newest first");
    let all = app
        .call(Method::GET, &format!("{base}?limit=200"), None)
        .await;
    assert_eq!(page_ids(&all), ids);
    assert!(all.body.get("next_cursor").is_none(), "{}", all.text);

    let mut seen = Vec::new();
    let mut uri = format!("{base}?limit=20");
    loop {
        let reply = app.call(Method::GET, &uri, None).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        seen.extend(page_ids(&reply));
        app.create(account, "meanwhile").await;
        match reply.body["next_cursor"].as_str() {
            Some(cursor) => uri = format!("{base}?limit=20&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen, ids, "each once, none of those created meanwhile");

    for limit in ["0", "201", "-1", "ten", "1.5", ""] {
        let reply = app
            .call(Method::GET, &format!("{base}?limit={limit}"), None)
            .await;
        assert_error(&reply, StatusCode::BAD_REQUEST, ErrorCode::InvalidRequest);
        assert_eq!(
            reply.body["error"]["message"],
            "limit: must be a whole number from 1 to 200"
        );
    }
}

/// A cursor is honoured only by the listing it came from: another account,
/// the other `include_revoked`, or anything altered gets one fixed 400
/// that repeats nothing, and nothing of another account is ever shown.
#[tokio::test]
async fn a_cursor_from_elsewhere_or_altered_is_refused_without_echo() {
    let app = app().await;
    let account = Uuid::new_v4();
    let other = Uuid::new_v4();
    for owner in [account, account, other, other] {
        app.create(owner, "x").await;
    }
    let list = |owner: Uuid, query: &str| format!("/v1/accounts/{owner}/sessions?{query}");
    let first = app.call(Method::GET, &list(account, "limit=1"), None).await;
    let cursor = first.body["next_cursor"].as_str().unwrap().to_owned();
    let next = app
        .call(
            Method::GET,
            &list(account, &format!("limit=1&cursor={cursor}")),
            None,
        )
        .await;
    assert_eq!(next.status, StatusCode::OK, "{}", next.text);

    let token_like = "sess_c2VjcmV0LXRva2VuLXNob3VsZC1uZXZlci1lY2hv";
    let mut flipped = cursor.clone().into_bytes();
    flipped[10] = if flipped[10] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).unwrap();
    for query in [
        format!("cursor={cursor}&include_revoked=true"),
        format!("cursor={token_like}"),
        format!("cursor={flipped}"),
        format!("cursor={cursor}%3D"),
    ] {
        let reply = app.call(Method::GET, &list(account, &query), None).await;
        assert_error(&reply, StatusCode::BAD_REQUEST, ErrorCode::InvalidRequest);
        assert!(
            reply.text.contains("cursor: not a cursor of this listing"),
            "{}",
            reply.text
        );
        assert!(!reply.text.contains(token_like), "{}", reply.text);
        assert!(!reply.text.contains(&cursor[..20]), "{}", reply.text);
    }
    let foreign = app
        .call(Method::GET, &list(other, &format!("cursor={cursor}")), None)
        .await;
    assert_error(&foreign, StatusCode::BAD_REQUEST, ErrorCode::InvalidRequest);
    // An empty cursor is none: the first page.
    let empty = app
        .call(Method::GET, &list(account, "limit=1&cursor="), None)
        .await;
    assert_eq!(empty.status, StatusCode::OK, "{}", empty.text);
    assert_eq!(empty.body["sessions"], first.body["sessions"]);
}

/// A stored row the domain rejects does not fail the list: it is left out,
/// counted in `session_store_rows_skipped` and the other sessions are shown.
#[tokio::test]
async fn a_rejected_row_is_left_out_of_a_list_and_counted() {
    let store = Arc::new(RejectingStore {
        inner: MemoryStore::new(),
    });
    let service = SessionService::builder(store.clone(), Arc::new(MemoryCache::new())).build();
    service.warm().await.unwrap();
    let app = App {
        router: router(ApiState::builder(service.clone()).build()),
        store: Arc::new(MemoryStore::new()),
        service,
    };
    let account = Uuid::new_v4();
    for label in ["kept", "poison"] {
        app.create(account, label).await;
    }
    let reply = app
        .call(
            Method::GET,
            &format!("/v1/accounts/{account}/sessions"),
            None,
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let sessions = reply.body["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 1, "{}", reply.text);
    assert_eq!(sessions[0]["label"], "kept");
    let metrics = app.call(Method::GET, "/metrics", None).await;
    assert!(
        metrics.text.contains("session_store_rows_skipped_total 1"),
        "{}",
        metrics.text
    );
}

/// A `MemoryStore` whose lists report every session labelled `poison` as a
/// row the domain rejects, as a store does with a row written by other SQL.
struct RejectingStore {
    inner: MemoryStore,
}

impl StoreDecorator for RejectingStore {
    fn inner_store(&self) -> &dyn SessionStore {
        &self.inner
    }

    async fn list_for_account(
        &self,
        account: AccountId,
        scope: ListScope,
        page: session_core::PageRequest,
    ) -> Result<session_core::AccountPage, StoreError> {
        let mut page = self.inner.list_for_account(account, scope, page).await?;
        let (poison, kept) = std::mem::take(&mut page.sessions)
            .into_iter()
            .partition(|s| {
                s.metadata
                    .label
                    .as_ref()
                    .is_some_and(|l| l.as_str() == "poison")
            });
        page.sessions = kept;
        page.rejected = poison
            .into_iter()
            .map(|s: Session| {
                session_core::port::store::InvalidRow::new(
                    "sessions",
                    "label",
                    session_core::port::store::RowId::Session(s.id),
                    "a control character",
                )
            })
            .collect();
        Ok(page)
    }
}

/// The document describes what the layers answer on every route (413, 421;
/// 401, 500 and 503 behind the API key; 415 with a body), the key as a
/// bearer security scheme rather than a parameter, and query options as
/// query parameters. `cargo xtask ci` checks the rest with schemathesis.
#[tokio::test]
async fn the_openapi_document_describes_every_answer_of_the_layers() {
    let document = serde_json::to_value(session_http::openapi()).unwrap();
    assert_eq!(
        document["components"]["securitySchemes"]["api_key"],
        json!({ "type": "http", "scheme": "bearer" })
    );
    let mut operations = 0;
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            operations += 1;
            let responses = operation["responses"].as_object().unwrap();
            if path.starts_with("/v1/forward-auth") {
                // Outside the Host and body layers: neither answer is given.
                for status in ["413", "421"] {
                    assert!(!responses.contains_key(status), "{method} {path}: {status}");
                }
                continue;
            }
            let mut expected = vec!["413", "421"];
            if operation.get("security").is_some() {
                expected.extend(["401", "500", "503"]);
            }
            if operation.get("requestBody").is_some() {
                expected.push("415");
            }
            for status in expected {
                assert!(responses.contains_key(status), "{method} {path}: {status}");
            }
            for parameter in operation["parameters"].as_array().into_iter().flatten() {
                let name = parameter["name"].as_str().unwrap();
                assert!(
                    !name.eq_ignore_ascii_case("authorization"),
                    "{method} {path}"
                );
                let place = if path.contains(&format!("{{{name}}}")) {
                    "path"
                } else if name == "Last-Event-ID" {
                    // The events feed's resume header, as EventSource sends it.
                    "header"
                } else {
                    "query"
                };
                assert_eq!(parameter["in"], place, "{method} {path}: {name}");
            }
        }
    }
    // Eleven operations, and forward auth under each of its eight methods.
    assert_eq!(operations, 19);
}

/// In compact mode, resolve and forward auth answer exactly the session's
/// id and account id, whether or not a record cache holds its record, while
/// `GET` and the list keep the whole record; the OpenAPI document requires
/// only those two fields of resolve's answer and describes every other one
/// a full-mode answer holds.
#[tokio::test]
async fn compact_mode_resolves_to_exactly_the_identity_as_documented() {
    let records = Arc::new(session_core::testkit::FifoRecords::new(10));
    let cache = session_core::CompactCache::new().with_records(records);
    let compact = app_over(Arc::new(cache), ApiKeys::none(), true).await;
    let account = Uuid::new_v4();
    let (token, session) = compact.create(account, "phone").await;
    let identity =
        json!({ "session": { "id": session["id"], "account_id": session["account_id"] } });
    // The record cache holds the new session's record: the answer is the same.
    let reply = compact.resolve(&token).await;
    assert_eq!(
        (reply.status, &reply.body),
        (StatusCode::OK, &identity),
        "{}",
        reply.text
    );
    let forwarded = compact
        .send(
            Request::builder()
                .uri("/v1/forward-auth")
                .header(header::AUTHORIZATION, format!("Bearer {token}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(
        (forwarded.status, &forwarded.body),
        (StatusCode::OK, &identity)
    );
    let id = session["id"].as_str().unwrap();
    let read = compact
        .call(Method::GET, &format!("/v1/sessions/{id}"), None)
        .await;
    assert_eq!(read.body["session"]["label"], "phone");
    let list = compact
        .call(
            Method::GET,
            &format!("/v1/accounts/{account}/sessions"),
            None,
        )
        .await;
    assert_eq!(list.body["sessions"][0]["label"], "phone");

    let full = app().await;
    let (token, _) = full.create(account, "laptop").await;
    let full_body = full.resolve(&token).await.body;
    let document = serde_json::to_value(session_http::openapi()).unwrap();
    let schema = &document["components"]["schemas"]["ResolvedView"];
    assert_eq!(schema["required"], json!(["id", "account_id"]));
    let documented: Vec<&String> = schema["properties"].as_object().unwrap().keys().collect();
    let answered: Vec<&String> = full_body["session"].as_object().unwrap().keys().collect();
    assert_eq!(answered.len(), 7, "{full_body}");
    assert!(
        answered.iter().all(|key| documented.contains(key)),
        "{documented:?}"
    );
    for path in ["/v1/sessions/resolve", "/v1/forward-auth"] {
        let operations = document["paths"][path].as_object().unwrap();
        let (_, operation) = operations.iter().next().unwrap();
        let ok = &operation["responses"]["200"];
        assert_eq!(
            ok["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/ResolvedEnvelope",
            "{path}"
        );
    }
}
