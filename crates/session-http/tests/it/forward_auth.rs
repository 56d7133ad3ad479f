//! `/v1/forward-auth` in process: what a gateway is told for each request.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use axum::body::{Body, Bytes, HttpBody};
use axum::http::{Method, Request, StatusCode, header};
use session_http::{ApiKeys, ErrorCode};
use uuid::Uuid;

use crate::router::{App, KEY, Reply, app, app_with, assert_error};

/// A GET of `path` with the given headers, addressed to `host`.
fn checking(method: Method, path: &str, host: &str, headers: &[(&str, &str)]) -> Request<Body> {
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, host);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.body(Body::empty()).unwrap()
}

async fn check(app: &App, headers: &[(&str, &str)]) -> Reply {
    app.send(checking(
        Method::GET,
        "/v1/forward-auth",
        "localhost",
        headers,
    ))
    .await
}

/// Asserts a 401 that a gateway turns into a refusal, with no identity.
fn assert_refused(reply: &Reply, code: ErrorCode, challenge: &str) {
    assert_error(reply, StatusCode::UNAUTHORIZED, code);
    assert_eq!(reply.headers[header::WWW_AUTHENTICATE], challenge);
    assert_eq!(reply.headers[header::CACHE_CONTROL], "no-store");
    assert!(!reply.headers.contains_key("x-session-id"));
    assert!(!reply.headers.contains_key("x-account-id"));
}

#[tokio::test]
async fn an_active_session_is_answered_with_its_identity_and_the_resolve_body() {
    let app = app().await;
    let account = Uuid::new_v4();
    let (token, session) = app.create(account, "laptop").await;
    let resolved = app.resolve(&token).await;
    let bearer = format!("Bearer {token}");
    let cookie = format!("theme=dark; __Host-session={token}");
    let places: [(&str, &str); 3] = [
        ("authorization", &bearer),
        ("cookie", &cookie),
        ("x-session-token", &token),
    ];
    // Envoy keeps the original method and path; Oathkeeper may append the path.
    for method in [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
        Method::OPTIONS,
        Method::HEAD,
    ] {
        for path in [
            "/v1/forward-auth",
            "/v1/forward-auth/",
            "/v1/forward-auth/api/orders/7?page=2",
        ] {
            for place in places {
                let case = format!("{method} {path} {}", place.0);
                let reply = app
                    .send(checking(method.clone(), path, "localhost", &[place]))
                    .await;
                assert_eq!(reply.status, StatusCode::OK, "{case}: {}", reply.text);
                assert_eq!(
                    reply.headers["x-session-id"],
                    session["id"].as_str().unwrap()
                );
                assert_eq!(reply.headers["x-account-id"], account.to_string().as_str());
                assert_eq!(reply.headers[header::CACHE_CONTROL], "no-store", "{case}");
                if method != Method::HEAD {
                    assert_eq!(reply.body, resolved.body, "{case}: the resolve JSON");
                }
                assert!(!reply.text.contains(&token[5..]), "{case}");
                for value in reply.headers.values() {
                    assert!(
                        !value.to_str().unwrap_or("").contains(&token[5..]),
                        "{case}"
                    );
                }
            }
        }
    }
}

#[tokio::test]
async fn every_token_that_is_not_an_active_session_is_the_same_401() {
    let app = app().await;
    let (token, session) = app.create(Uuid::new_v4(), "phone").await;
    let (other, _) = app.create(Uuid::new_v4(), "tablet").await;

    let missing = [
        check(&app, &[]).await,
        check(&app, &[("authorization", "Basic dXNlcjpwYXNz")]).await,
        check(&app, &[("cookie", &format!("session={token}"))]).await,
    ];
    for reply in &missing {
        assert_refused(reply, ErrorCode::MissingToken, "Bearer");
    }

    let unknown = session_core::SessionToken::generate();
    let two_tokens = [
        check(
            &app,
            &[
                ("authorization", &format!("Bearer {token}")),
                ("cookie", &format!("__Host-session={other}")),
            ],
        )
        .await,
        check(
            &app,
            &[
                ("cookie", &format!("__Host-session={token}")),
                ("x-session-token", &other),
            ],
        )
        .await,
        check(
            &app,
            &[
                ("authorization", &format!("Bearer {token}")),
                ("authorization", &format!("Bearer {other}")),
            ],
        )
        .await,
    ];
    let mut invalid = vec![
        check(&app, &[("authorization", "Bearer garbage")]).await,
        check(&app, &[("authorization", "Bearer")]).await,
        check(
            &app,
            &[("cookie", &format!("__Host-session={}", &token[..20]))],
        )
        .await,
        check(&app, &[("x-session-token", unknown.expose_secret())]).await,
    ];
    invalid.extend(two_tokens);
    let revoked = app
        .call(
            Method::DELETE,
            &format!("/v1/sessions/{}", session["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT);
    invalid.push(check(&app, &[("authorization", &format!("Bearer {token}"))]).await);
    for reply in &invalid {
        assert_refused(
            reply,
            ErrorCode::InvalidToken,
            r#"Bearer error="invalid_token""#,
        );
        assert_eq!(reply.body, invalid[0].body, "no oracle between the cases");
    }
    // The other session was never touched by being sent beside the first.
    let reply = check(&app, &[("x-session-token", &other)]).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
}

#[tokio::test]
async fn before_the_warm_it_is_503_never_a_verdict() {
    let app = app_with(ApiKeys::none(), false).await;
    let token = session_core::SessionToken::generate();
    let reply = check(
        &app,
        &[(
            "authorization",
            &format!("Bearer {}", token.expose_secret()),
        )],
    )
    .await;
    assert_error(&reply, StatusCode::SERVICE_UNAVAILABLE, ErrorCode::NotReady);
    assert_eq!(reply.headers[header::RETRY_AFTER], "1");
    assert_eq!(reply.headers[header::CACHE_CONTROL], "no-store");
    assert!(!reply.headers.contains_key(header::WWW_AUTHENTICATE));
}

#[tokio::test]
async fn it_needs_no_api_key_and_answers_under_the_name_a_gateway_forwards() {
    // With a key: the `Authorization` a gateway forwards is the client's
    // session token, never the API key.
    let keyed = app_with(ApiKeys::new([KEY]).unwrap(), true).await;
    let created = keyed
        .send(
            Request::post("/v1/sessions")
                .header(header::HOST, "localhost")
                .header(header::AUTHORIZATION, format!("Bearer {KEY}"))
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(format!(
                    r#"{{"account_id": "{}"}}"#,
                    Uuid::new_v4()
                )))
                .unwrap(),
        )
        .await;
    let token = created.body["token"].as_str().unwrap().to_owned();
    let reply = check(&keyed, &[("authorization", &format!("Bearer {token}"))]).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let reply = check(&keyed, &[("authorization", &format!("Bearer {KEY}"))]).await;
    assert_refused(
        &reply,
        ErrorCode::InvalidToken,
        r#"Bearer error="invalid_token""#,
    );

    // Without a key: Caddy and Traefik forward the client's Host.
    let keyless = app().await;
    let (token, _) = keyless.create(Uuid::new_v4(), "web").await;
    for host in ["app.example.com", "app.example.com:443", "10.0.0.7:8080"] {
        let reply = keyless
            .send(checking(
                Method::GET,
                "/v1/forward-auth/orders",
                host,
                &[("cookie", &format!("__Host-session={token}"))],
            ))
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{host}: {}", reply.text);
        // Every other route keeps the rule.
        let reply = keyless
            .send(checking(Method::GET, "/healthz", host, &[]))
            .await;
        assert_error(
            &reply,
            StatusCode::MISDIRECTED_REQUEST,
            ErrorCode::MisdirectedRequest,
        );
    }
}

/// A body that records being read, as an upload a gateway forwarded would be.
struct Watched(Arc<AtomicBool>);

impl HttpBody for Watched {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
        self.0.store(true, Ordering::SeqCst);
        Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::from_static(
            &[0; 1024],
        )))))
    }
}

#[tokio::test]
async fn the_body_is_never_read_whatever_its_declared_size() {
    let app = app().await;
    let (token, _) = app.create(Uuid::new_v4(), "upload").await;
    let read = Arc::new(AtomicBool::new(false));
    let request = Request::post("/v1/forward-auth/upload")
        .header(header::HOST, "localhost")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_LENGTH, "10000000000")
        .header(header::EXPECT, "100-continue")
        .body(Body::new(Watched(Arc::clone(&read))))
        .unwrap();
    let reply = app.send(request).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert!(!read.load(Ordering::SeqCst), "the body was read");
}

#[tokio::test]
async fn outcomes_are_counted_by_kind_and_route() {
    let app = app().await;
    let (token, _) = app.create(Uuid::new_v4(), "metered").await;
    check(&app, &[("x-session-token", &token)]).await;
    check(&app, &[("x-session-token", &token)]).await;
    check(&app, &[]).await;
    check(&app, &[("x-session-token", "garbage")]).await;
    app.send(checking(
        Method::POST,
        "/v1/forward-auth/orders/12345",
        "localhost",
        &[],
    ))
    .await;
    let metrics = app.call(Method::GET, "/metrics", None).await;
    for line in [
        "session_forward_auths_total{outcome=\"active\"} 2",
        "session_forward_auths_total{outcome=\"missing\"} 2",
        "session_forward_auths_total{outcome=\"invalid\"} 1",
        // Forward auth's resolves are counted with every other.
        "session_resolves_total{outcome=\"hit\"} 2",
        "http_server_request_duration_seconds_count{http_request_method=\"GET\",http_route=\"/v1/forward-auth\",http_response_status_code=\"200\"} 2",
        "http_server_request_duration_seconds_count{http_request_method=\"POST\",http_route=\"/v1/forward-auth/{*path}\",http_response_status_code=\"401\"} 1",
    ] {
        assert!(
            metrics.text.contains(line),
            "missing {line:?} in\n{}",
            metrics.text
        );
    }
    assert!(
        !metrics.text.contains("12345"),
        "labels never come from the path"
    );
    assert!(!metrics.text.contains(&token[5..]));
}
