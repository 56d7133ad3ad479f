//! What a request leaves in the log: its own line (`request finished`),
//! and, for a failure whose cause the client is not told, one line with
//! that cause, written by the request layer. Error conversions log
//! nothing, so a cause is never logged twice.

use std::io;
use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use session_core::memory::MemoryStore;
use session_core::port::store::{SessionStore, StoreDecorator, StoreError};
use session_core::{MemoryCache, Session, SessionService};
use session_http::{ApiState, router};
use tower::ServiceExt;
use tracing_subscriber::fmt::MakeWriter;
use uuid::Uuid;

/// The lines a JSON formatter wrote, shared with the test.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Self;

    fn make_writer(&'a self) -> Self {
        self.clone()
    }
}

/// What one request was answered, and every line logged meanwhile.
struct Logged {
    status: StatusCode,
    body: String,
    lines: Vec<Value>,
}

impl Logged {
    /// The lines that carry an `error` field: causes.
    fn causes(&self) -> Vec<&Value> {
        self.lines
            .iter()
            .filter(|line| line.get("error").is_some())
            .collect()
    }

    /// How many lines hold `text` anywhere.
    fn lines_holding(&self, text: &str) -> usize {
        self.lines
            .iter()
            .filter(|line| line.to_string().contains(text))
            .count()
    }
}

/// Installs, once per process, a global subscriber that records nothing.
///
/// tracing caches each callsite's interest process-wide when the callsite
/// is first hit, and while only one subscriber is registered it asks the
/// hitting thread's own. A sibling test on a thread with no subscriber
/// would cache the request span as never wanted, and the lines captured
/// here would lack their span (tokio-rs/tracing#3611). With a global
/// subscriber every thread has one; installing it also rebuilds what was
/// cached before.
fn keep_every_callsite_enabled() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        // Fails only if one is set already, which serves as well.
        let _ = tracing::subscriber::set_global_default(tracing_subscriber::registry());
    });
}

/// Sends a create of `body` to a router over `store`, with a subscriber of
/// the test's own installed for the request (every task of the test's
/// runtime runs on this thread).
async fn create_logged(store: Arc<dyn SessionStore>, body: Value) -> Logged {
    // Not warmed: a create needs no warm cache, and a store set
    // unavailable could not warm one.
    let service = SessionService::builder(store, Arc::new(MemoryCache::new())).build();
    let app: Router = router(ApiState::builder(service).build());
    let request = Request::post("/v1/sessions")
        .header(header::HOST, "localhost")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    keep_every_callsite_enabled();
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_writer(captured.clone())
        .finish();
    let (status, body) = {
        let _default = tracing::subscriber::set_default(subscriber);
        let response = app.oneshot(request).await.unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    };
    let text = String::from_utf8(
        captured
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone(),
    )
    .unwrap();
    let lines = text
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect();
    Logged {
        status,
        body,
        lines,
    }
}

/// Each line of a request carries its span, with the request id.
fn assert_in_the_request_span(line: &Value) {
    assert_eq!(line["span"]["name"], "request", "{line}");
    assert!(line["span"]["request_id"].is_string(), "{line}");
}

/// A store the client may retry: 503, and one `warn` line with the store's
/// error, the request's own line beside it, and the error nowhere else.
/// A conversion (`From<StoreError>` or `From<session_core::Error>`) that
/// logged too would make two.
#[tokio::test]
async fn an_unavailable_store_is_logged_once_as_a_warning() {
    let store = Arc::new(MemoryStore::new());
    store.set_unavailable(true);
    let logged = create_logged(store, account()).await;
    assert_eq!(logged.status, StatusCode::SERVICE_UNAVAILABLE);
    let causes = logged.causes();
    assert_eq!(causes.len(), 1, "{:#?}", logged.lines);
    let cause = causes[0];
    assert_eq!(cause["level"], "WARN");
    assert_eq!(cause["message"], "session store unavailable");
    assert_in_the_request_span(cause);
    let error = cause["error"].as_str().unwrap();
    assert_eq!(logged.lines_holding(error), 1, "{:#?}", logged.lines);
    assert!(!logged.body.contains(error), "{}", logged.body);
    let finished: Vec<_> = logged
        .lines
        .iter()
        .filter(|line| line["message"] == "request finished")
        .collect();
    assert_eq!(finished.len(), 1, "{:#?}", logged.lines);
    assert_eq!(finished[0]["status"], 503);
    assert_in_the_request_span(finished[0]);
}

/// A store whose inserts fail for good, as a full disk would.
struct FailingInserts {
    inner: MemoryStore,
}

/// What [`FailingInserts`] fails with: it names no secret, but the client
/// must never see it.
const DISK_FULL: &str = "database or disk is full (/var/lib/session/sessions.db)";

impl StoreDecorator for FailingInserts {
    fn inner_store(&self) -> &dyn SessionStore {
        &self.inner
    }

    async fn insert(&self, _session: &Session) -> Result<(), StoreError> {
        Err(StoreError::Failed(DISK_FULL.into()))
    }
}

/// A failure retrying will not fix: 500 with a fixed message, and one
/// `error` line holding the cause.
#[tokio::test]
async fn a_failed_store_is_logged_once_as_an_error_and_never_answered() {
    let store = Arc::new(FailingInserts {
        inner: MemoryStore::new(),
    });
    let logged = create_logged(store, account()).await;
    assert_eq!(logged.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(!logged.body.contains("disk"), "{}", logged.body);
    let causes = logged.causes();
    assert_eq!(causes.len(), 1, "{:#?}", logged.lines);
    assert_eq!(causes[0]["level"], "ERROR");
    assert_eq!(causes[0]["message"], "session store failed");
    assert_in_the_request_span(causes[0]);
    assert_eq!(logged.lines_holding(DISK_FULL), 1, "{:#?}", logged.lines);
}

/// A success, and a refusal that is the client's, have no cause to log:
/// the request's own line only.
#[tokio::test]
async fn an_answer_without_a_hidden_cause_logs_only_its_own_line() {
    for (body, status) in [
        (account(), StatusCode::CREATED),
        (json!({ "account_id": "nobody" }), StatusCode::BAD_REQUEST),
    ] {
        let logged = create_logged(Arc::new(MemoryStore::new()), body).await;
        assert_eq!(logged.status, status);
        assert!(logged.causes().is_empty(), "{:#?}", logged.lines);
        assert_eq!(logged.lines.len(), 1, "{:#?}", logged.lines);
        assert_eq!(logged.lines[0]["message"], "request finished");
        assert_in_the_request_span(&logged.lines[0]);
    }
}

/// A create's body for a new account.
fn account() -> Value {
    json!({ "account_id": Uuid::new_v4() })
}
