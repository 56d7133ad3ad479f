//! Traces on the real binary: it exports over OTLP/HTTP to a receiver this
//! test starts, which decodes every `ExportTraceServiceRequest`. The span
//! tree is request → use case → store call, change-log polls are spans on
//! PostgreSQL, and no secret appears anywhere in what is exported. With a
//! collector that is down or stalls, no request is lost and the drops are
//! counted in `/metrics`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::routing::post;
use base64::Engine as _;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use serde_json::json;
use session_test_app::{App, Launch};
use session_test_postgres::TestDatabase;
use sha2::Digest as _;
use uuid::Uuid;

use crate::e2e::{KEY, sqlite_url, temp_dir};

const BIN: &str = env!("CARGO_BIN_EXE_session-app");
/// Bounds on waits, not timing assertions.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
const ARRIVAL_BOUND: Duration = Duration::from_secs(30);

/// An OTLP/HTTP receiver on a free loopback port: every body it was sent,
/// raw and decoded.
struct Receiver {
    address: SocketAddr,
    bodies: Arc<Mutex<Vec<Bytes>>>,
}

impl Receiver {
    async fn start() -> Self {
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&bodies);
        let app = axum::Router::new().route(
            "/v1/traces",
            post(move |body: Bytes| async move {
                // Refuse what is not a valid export, so a wrong encoding fails the test.
                ExportTraceServiceRequest::decode(body.clone()).expect("an OTLP protobuf body");
                kept.lock().unwrap().push(body);
                (
                    [("content-type", "application/x-protobuf")],
                    ExportTraceServiceResponse::default().encode_to_vec(),
                )
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { address, bodies }
    }

    fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    fn raw(&self) -> Vec<Bytes> {
        self.bodies.lock().unwrap().clone()
    }

    fn spans(&self) -> Vec<Span> {
        self.raw()
            .into_iter()
            .flat_map(|body| {
                ExportTraceServiceRequest::decode(body)
                    .unwrap()
                    .resource_spans
            })
            .flat_map(|resource| resource.scope_spans)
            .flat_map(|scope| scope.spans)
            .collect()
    }

    /// Waits, within a bound, until `found` holds of the spans received.
    async fn wait_for(&self, what: &str, found: impl Fn(&[Span]) -> bool) -> Vec<Span> {
        let started = Instant::now();
        loop {
            let spans = self.spans();
            if found(&spans) {
                return spans;
            }
            assert!(
                started.elapsed() < ARRIVAL_BOUND,
                "no {what} within {ARRIVAL_BOUND:?}; received: {:?}",
                spans
                    .iter()
                    .map(|span| (&span.name, &span.span_id, &span.parent_span_id))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn attribute<'a>(span: &'a Span, key: &str) -> Option<&'a any_value::Value> {
    find(&span.attributes, key)
}

fn find<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|value: &AnyValue| value.value.as_ref())
}

fn text<'a>(span: &'a Span, key: &str) -> Option<&'a str> {
    match attribute(span, key) {
        Some(any_value::Value::StringValue(text)) => Some(text),
        _ => None,
    }
}

/// The span named `name` whose parent is `parent`, if any.
fn child<'a>(spans: &'a [Span], parent: &Span, name: &str) -> Option<&'a Span> {
    spans.iter().find(|span| {
        span.name == name
            && span.parent_span_id == parent.span_id
            && span.trace_id == parent.trace_id
    })
}

/// The chain `names[0]` → `names[1]` → …, each the child of the one before,
/// starting from a root (a span without a parent).
fn chain<'a>(spans: &'a [Span], names: &[&str]) -> Option<Vec<&'a Span>> {
    spans
        .iter()
        .filter(|span| span.name == names[0] && span.parent_span_id.is_empty())
        .find_map(|root| {
            let mut found = vec![root];
            for name in &names[1..] {
                found.push(child(spans, found.last().unwrap(), name)?);
            }
            Some(found)
        })
}

fn launch(database_url: &str, endpoint: &str) -> Launch {
    Launch::new(BIN, database_url)
        .args(["--otlp-endpoint", endpoint])
        .env("SESSION_API_KEY", KEY)
        // Export soon after a span ends, so the test need not wait the default 5 s.
        .env("OTEL_BSP_SCHEDULE_DELAY", "50")
}

async fn call(
    http: &reqwest::Client,
    app: &App,
    method: reqwest::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let mut request = http.request(method, app.url(path)).bearer_auth(KEY);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (
        status,
        response.json().await.unwrap_or(serde_json::Value::Null),
    )
}

/// Every way a secret could be spelled in an export: the token, its SHA-256
/// hash in hex and base64, and the API key.
fn secrets(token: &str) -> Vec<(String, String)> {
    let hash = sha2::Sha256::digest(token.as_bytes());
    let hex: String = hash.iter().map(|byte| format!("{byte:02x}")).collect();
    vec![
        ("the token".into(), token.to_owned()),
        ("the token hash in hex".into(), hex.clone()),
        (
            "the token hash in upper-case hex".into(),
            hex.to_uppercase(),
        ),
        (
            "the token hash in base64".into(),
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(hash),
        ),
        (
            "the token hash in URL-safe base64".into(),
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(hash),
        ),
        ("the API key".into(), KEY.to_owned()),
    ]
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

/// Drives every use case, then checks the exported trees and that nothing
/// secret was exported. Returns the spans for store-specific checks.
async fn traces_hold_the_tree_and_no_secret(
    database_url: &str,
    system: &str,
    table: &str,
) -> Vec<Span> {
    let receiver = Receiver::start().await;
    let app = App::start(launch(database_url, &receiver.url())).unwrap();
    app.wait_ready(READY_TIMEOUT).await.unwrap();
    let http = crate::e2e::http_client();
    let account = Uuid::now_v7();

    let (status, created) = call(
        &http,
        &app,
        reqwest::Method::POST,
        "/v1/sessions",
        Some(json!({ "account_id": account })),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let token = created["token"].as_str().unwrap().to_owned();
    let id = created["session"]["id"].as_str().unwrap().to_owned();
    let (status, _) = call(
        &http,
        &app,
        reqwest::Method::POST,
        "/v1/sessions/resolve",
        Some(json!({ "token": token })),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = call(
        &http,
        &app,
        reqwest::Method::GET,
        &format!("/v1/sessions/{id}"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = call(
        &http,
        &app,
        reqwest::Method::GET,
        &format!("/v1/accounts/{account}/sessions"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    // Client input where a careless span would copy it: the token as a path
    // segment, and as a made-up method.
    let (status, _) = call(
        &http,
        &app,
        reqwest::Method::GET,
        &format!("/v1/sessions/{token}"),
        None,
    )
    .await;
    assert_eq!(status, 400);
    let made_up =
        reqwest::Method::from_bytes(token.to_ascii_uppercase().replace('_', "").as_bytes())
            .unwrap();
    let status = http
        .request(made_up, app.url("/v1/sessions/resolve"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 405);
    let (status, _) = call(
        &http,
        &app,
        reqwest::Method::DELETE,
        &format!("/v1/sessions/{id}"),
        None,
    )
    .await;
    assert_eq!(status, 204);
    let (status, _) = call(
        &http,
        &app,
        reqwest::Method::POST,
        "/v1/sessions/resolve",
        Some(json!({ "token": token })),
    )
    .await;
    assert_eq!(status, 401);

    let store_span = |operation: &str| format!("{operation} {table}");
    let trees = [
        vec![
            "POST /v1/sessions".to_owned(),
            "session.create".into(),
            store_span("INSERT"),
        ],
        vec![
            "GET /v1/sessions/{id}".into(),
            "session.get".into(),
            store_span("SELECT"),
        ],
        vec![
            "GET /v1/accounts/{account_id}/sessions".into(),
            "session.list".into(),
            store_span("SELECT"),
        ],
        vec![
            "DELETE /v1/sessions/{id}".into(),
            "session.revoke".into(),
            store_span("UPDATE"),
        ],
        vec!["POST /v1/sessions/resolve".into(), "session.resolve".into()],
    ];
    let spans = receiver
        .wait_for("complete request trees", |spans| {
            trees.iter().all(|names| {
                chain(spans, &names.iter().map(String::as_str).collect::<Vec<_>>()).is_some()
            }) && spans
                .iter()
                .filter(|span| span.name == "POST /v1/sessions/resolve")
                .count()
                == 2
        })
        .await;

    // Attributes after OpenTelemetry's conventions.
    let create = chain(
        &spans,
        &["POST /v1/sessions", "session.create", &store_span("INSERT")],
    )
    .unwrap();
    let [request, use_case, store] = create[..] else {
        unreachable!()
    };
    assert_eq!(
        request.kind,
        opentelemetry_proto::tonic::trace::v1::span::SpanKind::Server as i32
    );
    assert_eq!(text(request, "http.request.method"), Some("POST"));
    assert_eq!(text(request, "http.route"), Some("/v1/sessions"));
    assert_eq!(text(request, "url.scheme"), Some("http"));
    assert!(matches!(
        attribute(request, "http.response.status_code"),
        Some(any_value::Value::IntValue(201))
    ));
    assert_eq!(text(use_case, "session.id"), Some(id.as_str()));
    assert_eq!(
        text(use_case, "account.id"),
        Some(account.to_string().as_str())
    );
    assert_eq!(
        store.kind,
        opentelemetry_proto::tonic::trace::v1::span::SpanKind::Client as i32
    );
    assert_eq!(text(store, "db.system.name"), Some(system));
    assert_eq!(text(store, "db.operation.name"), Some("INSERT"));
    assert_eq!(text(store, "db.collection.name"), Some(table));
    // The token as a path segment and the made-up method leave only templates.
    assert!(spans.iter().any(|span| span.name == "GET /v1/sessions/{id}"
        && matches!(
            attribute(span, "http.response.status_code"),
            Some(any_value::Value::IntValue(400))
        )));
    assert!(
        spans
            .iter()
            .any(|span| span.name == "other /v1/sessions/resolve"
                && text(span, "http.request.method") == Some("other"))
    );
    let resource = ExportTraceServiceRequest::decode(receiver.raw()[0].clone())
        .unwrap()
        .resource_spans[0]
        .resource
        .clone()
        .unwrap();
    assert!(matches!(find(&resource.attributes, "service.name"),
        Some(any_value::Value::StringValue(name)) if name == "session-app"));

    // Not in any attribute, event, name or resource: the raw bytes hold every string.
    let secrets = secrets(&token);
    let made_up_text = token.to_ascii_uppercase().replace('_', "");
    for body in receiver.raw() {
        for (what, secret) in secrets
            .iter()
            .chain([&("the made-up method".to_owned(), made_up_text.clone())])
        {
            assert!(!contains(&body, secret.as_bytes()), "{what} was exported");
        }
    }
    spans
}

#[tokio::test]
async fn sqlite_spans_reach_the_collector_as_a_tree_without_secrets() {
    let directory = temp_dir();
    traces_hold_the_tree_and_no_secret(&sqlite_url(directory.path()), "sqlite", "sessions").await;
}

#[tokio::test]
async fn postgres_spans_reach_the_collector_as_a_tree_and_change_log_polls_are_spans() {
    let database = TestDatabase::create();
    let spans =
        traces_hold_the_tree_and_no_secret(database.url(), "postgresql", "session.sessions").await;
    let poll = spans.iter().find(|span| {
        span.name == "session.change_log.poll"
            && child(&spans, span, "SELECT session.changes").is_some()
    });
    assert!(
        poll.is_some(),
        "no change-log poll span with its read as a child"
    );
}

/// The `session_otlp_spans_dropped_total` counter for `reason`.
async fn dropped(app: &App, reason: &str) -> f64 {
    app.metric(&format!(
        "session_otlp_spans_dropped_total{{reason=\"{reason}\"}}"
    ))
    .await
    .unwrap()
}

/// Resolves `count` times, 16 at once, each answered with the right session.
async fn load(http: &reqwest::Client, app: &App, count: usize) {
    let (status, created) = call(
        http,
        app,
        reqwest::Method::POST,
        "/v1/sessions",
        Some(json!({ "account_id": Uuid::now_v7() })),
    )
    .await;
    assert_eq!(status, 201);
    let body = json!({ "token": created["token"] });
    let id = created["session"]["id"].clone();
    let url = app.url("/v1/sessions/resolve");
    let mut answered = 0;
    for _ in 0..count / 16 {
        let mut batch = tokio::task::JoinSet::new();
        for _ in 0..16 {
            let request = http.post(&url).bearer_auth(KEY).json(&body);
            batch.spawn(async move {
                let response = request.send().await.expect("every request answered");
                (
                    response.status().as_u16(),
                    response.json::<serde_json::Value>().await.unwrap(),
                )
            });
        }
        for (status, body) in batch.join_all().await {
            assert_eq!(status, 200, "{body}");
            assert_eq!(body["session"]["id"], id);
            answered += 1;
        }
    }
    assert_eq!(answered, count / 16 * 16);
}

#[tokio::test]
async fn an_unreachable_collector_loses_no_request_and_counts_failed_exports() {
    // A port nothing listens on: every export is refused at once.
    let port = session_test_process::free_port().unwrap();
    let directory = temp_dir();
    let app = App::start(launch(
        &sqlite_url(directory.path()),
        &format!("http://127.0.0.1:{port}"),
    ))
    .unwrap();
    app.wait_ready(READY_TIMEOUT).await.unwrap();
    let http = crate::e2e::http_client();
    load(&http, &app, 320).await;
    session_test_process::until_async("a failed export is counted", ARRIVAL_BOUND, async || {
        dropped(&app, "export_failed").await > 0.0
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_stalled_collector_loses_no_request_and_counts_dropped_spans() {
    // Accepts connections and never answers: the one export in flight
    // waits out its timeout while the bounded queue fills.
    let stalled = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = stalled.local_addr().unwrap();
    let accepted = Arc::new(Mutex::new(HashMap::new()));
    std::thread::spawn({
        let accepted = Arc::clone(&accepted);
        move || {
            for (index, stream) in stalled.incoming().enumerate() {
                accepted.lock().unwrap().insert(index, stream);
            }
        }
    });
    let directory = temp_dir();
    let app = App::start(
        launch(&sqlite_url(directory.path()), &format!("http://{address}"))
            .env("OTEL_BSP_MAX_QUEUE_SIZE", "64")
            .env("OTEL_EXPORTER_OTLP_TIMEOUT", "60000"),
    )
    .unwrap();
    app.wait_ready(READY_TIMEOUT).await.unwrap();
    let http = crate::e2e::http_client();
    load(&http, &app, 320).await;
    assert!(
        dropped(&app, "queue_full").await > 0.0,
        "no span was counted as dropped"
    );
}

/// Spans still queued at SIGTERM are flushed on the way out: with a batch
/// delay far longer than the test, they can only arrive by that flush.
#[tokio::test]
async fn shutdown_flushes_the_queued_spans() {
    let receiver = Receiver::start().await;
    let directory = temp_dir();
    let app = App::start(
        launch(&sqlite_url(directory.path()), &receiver.url())
            .env("OTEL_BSP_SCHEDULE_DELAY", "600000"),
    )
    .unwrap();
    app.wait_ready(READY_TIMEOUT).await.unwrap();
    let http = crate::e2e::http_client();
    let (status, _) = call(
        &http,
        &app,
        reqwest::Method::POST,
        "/v1/sessions",
        Some(json!({ "account_id": Uuid::now_v7() })),
    )
    .await;
    assert_eq!(status, 201);
    assert!(
        receiver.spans().is_empty(),
        "exported before the batch delay"
    );
    let exit = tokio::task::spawn_blocking(move || app.terminate())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "{exit:?}");
    receiver
        .wait_for("flushed request tree", |spans| {
            chain(
                spans,
                &["POST /v1/sessions", "session.create", "INSERT sessions"],
            )
            .is_some()
        })
        .await;
}
