//! A service over the memory adapters, a router using the extractor, and
//! request helpers.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt as _;
use session_axum::{CurrentSession, CurrentSessionRecord, SessionAuth};
use session_core::memory::MemoryStore;
use session_core::{
    AccountId, BackgroundTasks, ClientMetadata, MemoryCache, SessionService, SessionToken,
};
use tower::ServiceExt as _;

/// A warm service over a fresh memory store with no change log.
pub(crate) async fn service() -> SessionService {
    let service =
        SessionService::builder(Arc::new(MemoryStore::new()), Arc::new(MemoryCache::new())).build();
    service.warm().await.expect("warm");
    service
}

/// A ready service whose memory store is also its change log, as a shared
/// PostgreSQL store is: a miss waits (at most 100 ms) for the cache to
/// catch up with the log. Keep the tasks for as long as the service is used.
pub(crate) async fn shared_service() -> (SessionService, Arc<MemoryStore>, BackgroundTasks) {
    let store = Arc::new(MemoryStore::new());
    let service = SessionService::builder(store.clone(), Arc::new(MemoryCache::new()))
        .change_log(store.clone())
        .max_staleness(std::time::Duration::from_millis(100))
        .build();
    let tasks = service.start();
    while !service.status().cache_ready() {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    (service, store, tasks)
}

/// Creates a session and returns its token.
pub(crate) async fn login(service: &SessionService) -> SessionToken {
    service
        .create(
            AccountId::new(uuid()).expect("account"),
            ClientMetadata::default(),
        )
        .await
        .expect("create")
        .token
}

fn uuid() -> uuid::Uuid {
    uuid::Uuid::now_v7()
}

/// `/me` requires a session and answers its account id; `/maybe` takes an
/// optional one and answers `anonymous` or the account id; `/label`
/// requires the session's record and answers its label, `/maybe-label` an
/// optional one. Every route answers any method.
pub(crate) fn router(auth: SessionAuth) -> Router {
    async fn me(CurrentSession(session): CurrentSession) -> String {
        session.account_id.to_string()
    }
    async fn maybe(session: Option<CurrentSession>) -> String {
        session.map_or_else(|| "anonymous".to_owned(), |s| s.0.account_id.to_string())
    }
    async fn label(CurrentSessionRecord(session): CurrentSessionRecord) -> String {
        session
            .metadata
            .label
            .as_ref()
            .map_or("", |l| l.as_str())
            .to_owned()
    }
    async fn maybe_label(session: Option<CurrentSessionRecord>) -> String {
        session.map_or_else(
            || "anonymous".to_owned(),
            |s| format!("{:?}", s.0.metadata.label),
        )
    }
    Router::new()
        .route("/me", get(me).post(me).delete(me))
        .route("/label", get(label))
        .route("/maybe-label", get(maybe_label))
        .route("/maybe", get(maybe).post(maybe))
        .with_state(auth)
}

/// A response's status, headers and body text.
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) headers: http::HeaderMap,
    pub(crate) body: String,
}

impl Answer {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().expect("ascii"))
    }

    /// Fails if the token appears anywhere in the response.
    pub(crate) fn assert_free_of(&self, secret: &str) {
        assert!(!self.body.contains(secret), "the body repeats the token");
        for (name, value) in &self.headers {
            assert!(
                !String::from_utf8_lossy(value.as_bytes()).contains(secret),
                "header {name} repeats the token"
            );
        }
    }
}

/// Sends `request` through `router`.
pub(crate) async fn send(router: Router, request: Request<Body>) -> Answer {
    let response: Response<Body> = router.oneshot(request).await.expect("infallible");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8(body.to_vec()).expect("utf-8"),
    }
}

/// A request builder for `method` `uri` on host `app.example`.
pub(crate) fn request(method: &str, uri: &str) -> http::request::Builder {
    Request::builder()
        .method(method)
        .uri(uri)
        .header("host", "app.example")
}

/// `Cookie: __Host-session=<token>`.
pub(crate) fn cookie(token: &str) -> (&'static str, String) {
    ("cookie", format!("__Host-session={token}"))
}

/// `Authorization: Bearer <token>`.
pub(crate) fn bearer(token: &str) -> (&'static str, String) {
    ("authorization", format!("Bearer {token}"))
}
