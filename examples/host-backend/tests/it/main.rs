//! The example backend's whole flow, in-process, over SQLite and PostgreSQL.

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt as _;
use serde_json::Value;
use session_axum::SessionAuth;
use tower::ServiceExt as _;

/// A signed-in browser: its session cookie.
struct Browser {
    cookie: String,
}

struct Answer {
    status: StatusCode,
    set_cookie: Option<String>,
    text: String,
    json: Value,
}

async fn call(
    app: &Router,
    method: &str,
    uri: &str,
    cookie: Option<&str>,
    body: Option<Value>,
) -> Answer {
    let mut request = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::HOST, "app.example")
        // Every request here comes from the app's own pages.
        .header("sec-fetch-site", "same-origin");
    if let Some(cookie) = cookie {
        request = request.header(header::COOKIE, cookie);
    }
    let body = match body {
        Some(json) => {
            request = request.header(header::CONTENT_TYPE, "application/json");
            Body::from(json.to_string())
        }
        None => Body::empty(),
    };
    let response = app
        .clone()
        .oneshot(request.body(body).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let set_cookie = response
        .headers()
        .get(header::SET_COOKIE)
        .map(|v| v.to_str().unwrap().to_owned());
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let text = String::from_utf8_lossy(&bytes).into_owned();
    Answer {
        status,
        set_cookie,
        text,
        json,
    }
}

async fn login(app: &Router, account: &str, device: &str) -> (Browser, String) {
    let answer = call(
        app,
        "POST",
        "/login",
        None,
        Some(serde_json::json!({"account": account, "device": device})),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    let set_cookie = answer.set_cookie.expect("login sets the cookie");
    assert!(
        set_cookie.starts_with("__Host-session=sess_"),
        "{set_cookie}"
    );
    assert!(set_cookie.contains("HttpOnly") && set_cookie.contains("Secure"));
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    let id = answer.json["session_id"].as_str().unwrap().to_owned();
    (Browser { cookie }, id)
}

async fn status(app: &Router, method: &str, uri: &str, browser: &Browser) -> StatusCode {
    call(app, method, uri, Some(&browser.cookie), None)
        .await
        .status
}

async fn whole_flow(database_url: &str) {
    let service = host_backend::open(database_url).await.unwrap();
    service.warm().await.unwrap();
    let app = host_backend::app(SessionAuth::builder(service).build());

    let (laptop, laptop_id) = login(&app, "alice", "laptop").await;
    let (phone, phone_id) = login(&app, "alice", "phone").await;
    let (tablet, _) = login(&app, "alice", "tablet").await;
    let (bob, _) = login(&app, "bob", "desktop").await;

    // /me: the signed-in session; nothing without a cookie.
    let me = call(&app, "GET", "/me", Some(&laptop.cookie), None).await;
    assert_eq!(me.json["session_id"], laptop_id.as_str());
    assert_eq!(
        call(&app, "GET", "/me", None, None).await.status,
        StatusCode::UNAUTHORIZED
    );

    // Alice's devices: three, the laptop marked current; none of Bob's.
    let devices = call(&app, "GET", "/devices", Some(&laptop.cookie), None)
        .await
        .json;
    let devices = devices.as_array().unwrap();
    assert_eq!(devices.len(), 3);
    let current: Vec<_> = devices.iter().filter(|d| d["current"] == true).collect();
    assert_eq!(current.len(), 1);
    assert_eq!(current[0]["device"], "laptop");

    // Bob cannot sign out Alice's phone; Alice can.
    let phone_uri = format!("/devices/{phone_id}");
    assert_eq!(
        status(&app, "DELETE", &phone_uri, &bob).await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(status(&app, "GET", "/me", &phone).await, StatusCode::OK);
    assert_eq!(
        status(&app, "DELETE", &phone_uri, &laptop).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        status(&app, "GET", "/me", &phone).await,
        StatusCode::UNAUTHORIZED
    );

    // A cross-site form post cannot sign anyone out.
    let forged = Request::builder()
        .method("POST")
        .uri("/logout/everywhere")
        .header(header::HOST, "app.example")
        .header("sec-fetch-site", "cross-site")
        .header(header::COOKIE, &laptop.cookie)
        .body(Body::empty())
        .unwrap();
    assert_eq!(
        app.clone().oneshot(forged).await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(status(&app, "GET", "/me", &laptop).await, StatusCode::OK);

    // Everywhere else: the tablet goes, the laptop stays.
    let others = call(&app, "POST", "/logout/others", Some(&laptop.cookie), None).await;
    assert_eq!(others.json, 1);
    assert_eq!(
        status(&app, "GET", "/me", &tablet).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(status(&app, "GET", "/me", &laptop).await, StatusCode::OK);

    // Everywhere: the laptop too, and its cookie is cleared.
    let everywhere = call(
        &app,
        "POST",
        "/logout/everywhere",
        Some(&laptop.cookie),
        None,
    )
    .await;
    assert_eq!(everywhere.status, StatusCode::NO_CONTENT);
    let cleared = everywhere.set_cookie.unwrap();
    assert!(
        cleared.starts_with("__Host-session=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
    assert_eq!(
        status(&app, "GET", "/me", &laptop).await,
        StatusCode::UNAUTHORIZED
    );

    // Bob signs out this device only.
    assert_eq!(
        status(&app, "POST", "/logout", &bob).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        status(&app, "GET", "/me", &bob).await,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn the_whole_flow_over_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    whole_flow(&format!(
        "sqlite://{}",
        dir.path().join("sessions.db").display()
    ))
    .await;
}

#[tokio::test]
async fn the_whole_flow_over_postgres() {
    let database = session_test_postgres::TestDatabase::create();
    whole_flow(database.url()).await;
}

#[tokio::test]
async fn a_bad_login_is_400_sets_no_cookie_and_repeats_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let service = host_backend::open(&format!("sqlite://{}", dir.path().join("s.db").display()))
        .await
        .unwrap();
    service.warm().await.unwrap();
    let app = host_backend::app(SessionAuth::builder(service).build());
    let long = "secretsecret".repeat(6);
    for body in [
        serde_json::json!({"account": ""}),
        serde_json::json!({"account": long}),
        serde_json::json!({"account": "carol", "device": "secret\u{7}secret"}),
        serde_json::json!({"account": ["secret"]}),
        serde_json::json!({"acount": "secret"}),
        serde_json::json!("secret"),
    ] {
        let answer = call(&app, "POST", "/login", None, Some(body)).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.text);
        assert!(answer.set_cookie.is_none());
        assert!(!answer.text.contains("secret"), "{}", answer.text);
    }
}

async fn sqlite_app(dir: &tempfile::TempDir) -> Router {
    let service = host_backend::open(&format!("sqlite://{}", dir.path().join("s.db").display()))
        .await
        .unwrap();
    service.warm().await.unwrap();
    host_backend::app(SessionAuth::builder(service).build())
}

/// A browser sends every cookie of the site in one `Cookie` header, other
/// scripts' included (an analytics campaign in UTF-8, a Latin-1 name): the
/// session cookie is found beside them.
#[tokio::test]
async fn the_session_cookie_is_found_beside_cookies_of_any_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let app = sqlite_app(&dir).await;
    let (browser, id) = login(&app, "alice", "laptop").await;
    for cookies in [
        format!(
            "_ga=GA1.2.1517.1700000000; __utmz=111872281.1.1.1.utmcsr=facebook|\
             utmccn=MinKampagneUnders\u{f8}gelse|utmcmd=social; {}",
            browser.cookie
        ),
        format!("{}; theme=\u{1f319}; =; q=\"a b\"", browser.cookie),
    ] {
        let me = call(&app, "GET", "/me", Some(&cookies), None).await;
        assert_eq!(me.status, StatusCode::OK, "{cookies}: {}", me.text);
        assert_eq!(me.json["session_id"], id.as_str());
    }
    let latin1 = [
        b"name=Unders\xf8gelse; ".as_slice(),
        browser.cookie.as_bytes(),
    ]
    .concat();
    let request = Request::builder()
        .uri("/me")
        .header(header::HOST, "app.example")
        .header(
            header::COOKIE,
            axum::http::HeaderValue::from_bytes(&latin1).unwrap(),
        )
        .body(Body::empty())
        .unwrap();
    assert_eq!(
        app.clone().oneshot(request).await.unwrap().status(),
        StatusCode::OK
    );
}

/// Login CSRF: a page on another site cannot sign the browser in to an
/// account of the attacker's choosing, whatever the request carries.
#[tokio::test]
async fn a_cross_site_login_is_refused_and_sets_no_cookie() {
    let dir = tempfile::tempdir().unwrap();
    let app = sqlite_app(&dir).await;
    for (name, value) in [
        ("sec-fetch-site", "cross-site"),
        ("sec-fetch-site", "same-site"),
        ("origin", "https://evil.example"),
    ] {
        let forged = Request::builder()
            .method("POST")
            .uri("/login")
            .header(header::HOST, "app.example")
            .header(name, value)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(r#"{"account":"mallory","device":"x"}"#))
            .unwrap();
        let response = app.clone().oneshot(forged).await.unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{name}: {value}");
        assert!(response.headers().get(header::SET_COOKIE).is_none());
    }
    // From the app's own page, and from a client that is no browser page.
    let (_, _) = login(&app, "alice", "laptop").await;
    let direct = Request::builder()
        .method("POST")
        .uri("/login")
        .header(header::HOST, "app.example")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(r#"{"account":"alice"}"#))
        .unwrap();
    assert_eq!(
        app.clone().oneshot(direct).await.unwrap().status(),
        StatusCode::OK
    );
}
