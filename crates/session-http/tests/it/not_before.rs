//! `/v1/not-before`: reading and raising the fleet-wide mark, refusals
//! that change nothing, and the key that raised it recorded as revoker.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use serde_json::{Value, json};
use session_http::{ApiKeys, ErrorCode, MAX_BODY_BYTES, Scope};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use crate::router::{App, Reply, app, app_with, assert_error, keyed, scoped_key};

const READER: &str = "reader-key-0123456789";
const WRITER: &str = "writer-key-0123456789";

fn time(value: &Value) -> OffsetDateTime {
    OffsetDateTime::parse(value.as_str().unwrap(), &Rfc3339).unwrap()
}

fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&Rfc3339).unwrap()
}

/// Waits until the clock is past the millisecond `mark` falls in: a
/// session id holds its creation to the millisecond, so one minted in the
/// mark's own millisecond counts as created before it.
fn past_the_marks_millisecond(mark: OffsetDateTime) {
    let next = mark.unix_timestamp_nanos().div_euclid(1_000_000) * 1_000_000 + 1_000_000;
    while OffsetDateTime::now_utc().unix_timestamp_nanos() < next {
        std::thread::yield_now();
    }
}

async fn raise(app: &App, body: Value) -> Reply {
    app.call(Method::PUT, "/v1/not-before", Some(body)).await
}

async fn read(app: &App) -> Value {
    let reply = app.call(Method::GET, "/v1/not-before", None).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    reply.body
}

/// Without a mark, GET answers null; a raise without a time marks now,
/// refuses the sessions created before it at once, and leaves later ones
/// alone; an earlier raise changes nothing.
#[tokio::test]
async fn a_raise_refuses_the_sessions_created_before_it_at_once() {
    let app = app().await;
    assert_eq!(
        read(&app).await,
        json!({ "not_before": null, "raised_by": null, "swept_through": null, "swept": true })
    );
    let account = Uuid::new_v4();
    let (old, _) = app.create(account, "before").await;

    let reply = raise(&app, json!({})).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let mark = time(&reply.body["not_before"]);
    past_the_marks_millisecond(mark);
    assert_error(
        &app.resolve(&old).await,
        StatusCode::UNAUTHORIZED,
        ErrorCode::InvalidToken,
    );
    let (new, _) = app.create(account, "after").await;
    assert_eq!(app.resolve(&new).await.status, StatusCode::OK);

    let state = read(&app).await;
    assert_eq!(time(&state["not_before"]), mark, "{state}");
    assert_eq!(state["swept"], json!(false), "not swept yet: {state}");

    let earlier = raise(
        &app,
        json!({ "not_before": rfc3339(mark - time::Duration::hours(1)) }),
    )
    .await;
    assert_eq!(earlier.status, StatusCode::OK, "{}", earlier.text);
    assert_eq!(
        time(&earlier.body["not_before"]),
        mark,
        "the mark only rises"
    );
    assert_eq!(app.resolve(&new).await.status, StatusCode::OK);
    let null = raise(&app, json!({ "not_before": null })).await;
    assert!(time(&null.body["not_before"]) >= mark, "{}", null.text);
}

/// A future time, a malformed body or time, another content type and an
/// oversized body are refused, each with its code, and leave no mark.
#[tokio::test]
async fn a_refused_raise_changes_nothing_and_repeats_nothing() {
    let app = app().await;
    let (token, _) = app.create(Uuid::new_v4(), "kept").await;
    let future = rfc3339(OffsetDateTime::now_utc() + time::Duration::hours(1));
    let reply = raise(&app, json!({ "not_before": future })).await;
    assert_error(
        &reply,
        StatusCode::BAD_REQUEST,
        ErrorCode::NotBeforeInFuture,
    );
    assert!(!reply.text.contains(&future), "{}", reply.text);

    for (body, secret) in [
        (
            json!({ "not_before": "yesterday-secret" }),
            "yesterday-secret",
        ),
        (json!({ "not_before": 1_700_000_000 }), "1700000000"),
        (json!({ "not_before": "2026-12-07 01:00:00" }), "2026-12-07"),
        (json!({ "not_before_secret": null }), "not_before_secret"),
        (json!(["secret-array"]), "secret-array"),
        // The fields in order, as serde fills a struct from an array.
        (json!([]), "[]"),
        (json!([null]), "[null]"),
    ] {
        let reply = raise(&app, body.clone()).await;
        assert_error(&reply, StatusCode::BAD_REQUEST, ErrorCode::InvalidRequest);
        assert!(!reply.text.contains(secret), "{body}: {}", reply.text);
    }
    let put = |content_type: &str, body: Body| {
        Request::put("/v1/not-before")
            .header(header::HOST, "localhost")
            .header(header::CONTENT_TYPE, content_type)
            .body(body)
            .unwrap()
    };
    assert_error(
        &app.send(put("text/plain", Body::from("{}"))).await,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ErrorCode::UnsupportedMediaType,
    );
    let huge = format!(r#"{{"not_before":"{}"}}"#, "x".repeat(MAX_BODY_BYTES));
    assert_error(
        &app.send(put("application/json", Body::from(huge))).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::PayloadTooLarge,
    );
    assert_error(
        &app.send(put("application/json", Body::empty())).await,
        StatusCode::BAD_REQUEST,
        ErrorCode::InvalidRequest,
    );
    assert_eq!(read(&app).await["not_before"], Value::Null);
    assert_eq!(app.resolve(&token).await.status, StatusCode::OK);
}

/// A raise the store does not commit answers 503 and applies nothing here.
#[tokio::test]
async fn a_raise_the_store_refuses_is_503_and_applies_nothing() {
    let app = app().await;
    let (token, _) = app.create(Uuid::new_v4(), "kept").await;
    app.store.set_unavailable(true);
    assert_error(
        &raise(&app, json!({})).await,
        StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Unavailable,
    );
    assert_error(
        &app.call(Method::GET, "/v1/not-before", None).await,
        StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Unavailable,
    );
    app.store.set_unavailable(false);
    assert_eq!(app.resolve(&token).await.status, StatusCode::OK);
    assert_eq!(read(&app).await["not_before"], Value::Null);
}

/// The key that raised the mark is shown by GET and recorded as the
/// revoker of the sessions the sweep revokes, with reason `admin`; GET
/// shows the sweep done.
#[tokio::test]
async fn the_raising_key_is_recorded_and_the_sweep_shown() {
    let app = app_with(
        ApiKeys::scoped([
            scoped_key("reader", &[Scope::Read], READER),
            scoped_key("writer", &[Scope::Write], WRITER),
        ]),
        true,
    )
    .await;
    let (_, session) = app.create_as(WRITER, Uuid::new_v4()).await;
    let id = session["id"].as_str().unwrap().to_owned();
    let raised = app
        .call_as(WRITER, Method::PUT, "/v1/not-before", Some(json!({})))
        .await;
    assert_eq!(raised.status, StatusCode::OK, "{}", raised.text);
    let state = app
        .call_as(READER, Method::GET, "/v1/not-before", None)
        .await
        .body;
    assert_eq!(state["raised_by"], "writer", "{state}");
    assert_eq!(state["swept"], json!(false), "{state}");

    let round = app.service.sweep_not_before().await;
    assert_eq!(round.total(), 1, "{round:?}");
    let state = app
        .call_as(READER, Method::GET, "/v1/not-before", None)
        .await
        .body;
    assert_eq!(state["swept"], json!(true), "{state}");
    assert_eq!(state["swept_through"], raised.body["not_before"], "{state}");
    let session = app
        .call_as(READER, Method::GET, &format!("/v1/sessions/{id}"), None)
        .await
        .body;
    assert_eq!(
        session["session"]["revocation_reason"], "admin",
        "{session}"
    );
    assert_eq!(session["session"]["revoked_by"], "writer", "{session}");

    let metrics = app
        .call_as(READER, Method::GET, "/metrics", None)
        .await
        .text;
    let sample = |name: &str| {
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} in {metrics}"))
            .parse::<f64>()
            .unwrap()
    };
    assert_eq!(sample("session_not_before_revoked_total"), 1.0);
    assert_eq!(sample("session_not_before_rounds_total"), 1.0);
    assert_eq!(sample("session_not_before_rounds_failed_total"), 0.0);
    let mark = time(&raised.body["not_before"]);
    let gauge = sample("session_not_before_mark_timestamp_seconds");
    assert!(
        (gauge - mark.unix_timestamp_nanos() as f64 / 1e9).abs() < 1e-3,
        "{gauge} for {mark}"
    );
}

/// Reading needs `read`, raising `write`; a refused raise leaves no mark.
#[tokio::test]
async fn each_not_before_route_refuses_a_key_without_its_scope() {
    let app = app_with(
        ApiKeys::scoped([
            scoped_key("reader", &[Scope::Read], READER),
            scoped_key("writer", &[Scope::Write], WRITER),
            scoped_key("feed", &[Scope::Events], "feed-key-0123456789ab"),
        ]),
        true,
    )
    .await;
    for (secret, method, scope) in [
        (WRITER, Method::GET, "read"),
        ("feed-key-0123456789ab", Method::GET, "read"),
        (READER, Method::PUT, "write"),
        ("feed-key-0123456789ab", Method::PUT, "write"),
    ] {
        let body = (method == Method::PUT).then(|| json!({}));
        let reply = app
            .send(crate::router::with_json(
                keyed(secret, method.clone(), "/v1/not-before"),
                body,
            ))
            .await;
        assert_error(&reply, StatusCode::FORBIDDEN, ErrorCode::InsufficientScope);
        assert_eq!(
            reply.headers[header::WWW_AUTHENTICATE],
            format!(r#"Bearer error="insufficient_scope", scope="{scope}""#),
            "{method}"
        );
    }
    let reply = app
        .call_as(READER, Method::GET, "/v1/not-before", None)
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(
        reply.body["not_before"],
        Value::Null,
        "no raise went through"
    );
}
