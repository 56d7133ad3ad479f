//! The metrics decorator the service runs in production: the store and
//! change-log contracts hold through it, and it labels each port method as
//! the README documents.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use session_core::config::{LimitPolicy, SessionLimit};
use session_core::memory::MemoryStore;
use session_core::port::change_log::{ChangeLog, ChangeLogDecorator, LogCursor};
use session_core::port::store::{RetentionAction, SeenAt, SessionStore, StoreDecorator};
use session_core::testkit::{account, epoch, session_at};
use session_core::{ListScope, MemoryCache, PageRequest, SessionService};
use session_http::{ApiState, StoreMetrics, router};
use tower::ServiceExt;

/// A memory store and its change log through [`StoreMetrics`], as
/// session-app wraps the real ones. The suites take one value that is both
/// ports; the metrics hand out each as an `Arc<dyn _>`, so this holds both.
struct Measured {
    store: Arc<dyn SessionStore>,
    log: Arc<dyn ChangeLog>,
}

impl Measured {
    fn new(metrics: &StoreMetrics) -> Self {
        let memory = Arc::new(MemoryStore::new());
        Self {
            store: metrics.store(memory.clone()),
            log: metrics.change_log(memory),
        }
    }
}

impl StoreDecorator for Measured {
    fn inner_store(&self) -> &dyn SessionStore {
        &*self.store
    }
}

impl ChangeLogDecorator for Measured {
    fn inner_log(&self) -> &dyn ChangeLog {
        &*self.log
    }
}

async fn measured_memory() -> Measured {
    Measured::new(&StoreMetrics::default())
}

mod store {
    session_core::store_contract_tests!(super::measured_memory());
}

mod change_log {
    session_core::change_log_contract_tests!(super::measured_memory());
}

/// One call of each port method is counted once, under the method's own
/// label: the names the README lists, which dashboards depend on.
#[tokio::test]
async fn each_port_method_is_timed_under_its_documented_label() {
    let metrics = StoreMetrics::default();
    let measured = Measured::new(&metrics);
    let (store, log) = (&measured.store, &measured.log);
    let (_, session) = session_at(account(), epoch());
    store.insert(&session).await.unwrap();
    let (_, limited) = session_at(account(), epoch());
    let limit = SessionLimit {
        max: std::num::NonZeroU32::MIN,
        policy: LimitPolicy::Refuse,
    };
    store.insert_within_limit(&limited, limit).await.unwrap();
    store
        .find_active_by_hash(&session.token_hash)
        .await
        .unwrap();
    store.get(session.id).await.unwrap();
    store
        .revoke(
            session.id,
            epoch(),
            session_core::RevocationReason::LOGOUT,
            None,
        )
        .await
        .unwrap();
    store
        .revoke_all_for_account(
            session.account_id,
            None,
            epoch(),
            session_core::RevocationReason::LOGOUT,
            None,
        )
        .await
        .unwrap();
    store
        .list_for_account(
            session.account_id,
            ListScope::Active,
            PageRequest::default(),
        )
        .await
        .unwrap();
    store.active_page(None, 10).await.unwrap();
    store.active_identity_page(None, 10).await.unwrap();
    let (pages, mut read) = tokio::sync::mpsc::channel(1);
    let all = tokio::spawn({
        let store = Arc::clone(store);
        async move { store.active_identities(10, pages).await }
    });
    while let Some(page) = read.recv().await {
        page.unwrap();
    }
    all.await.unwrap();
    store.health_check().await.unwrap();
    let seen = [SeenAt {
        id: session.id,
        at: epoch(),
    }];
    store.record_last_seen(&seen).await.unwrap();
    store.last_seen(&[session.id]).await.unwrap();
    store.idle_sessions(epoch(), None, 10).await.unwrap();
    store
        .revoke_idle(
            epoch(),
            None,
            10,
            epoch(),
            session_core::RevocationReason::IDLE,
        )
        .await
        .unwrap();
    store
        .purge_revoked(epoch(), None, 10, RetentionAction::Delete)
        .await
        .unwrap();
    store.not_before().await.unwrap();
    store.raise_not_before(epoch(), None).await.unwrap();
    store.record_not_before_swept(epoch()).await.unwrap();
    store
        .revoke_marked(
            epoch(),
            None,
            10,
            epoch(),
            session_core::RevocationReason::ADMIN,
            None,
        )
        .await
        .unwrap();
    log.head().await.unwrap();
    log.read(&LogCursor::default(), 10).await.unwrap();
    log.wake_ups().await.unwrap();
    log.prune().await.unwrap();

    // The service behind the router is not measured: only the calls above count.
    let service =
        SessionService::builder(Arc::new(MemoryStore::new()), Arc::new(MemoryCache::new())).build();
    let state = ApiState::builder(service).store_metrics(&metrics).build();
    let request = Request::get("/metrics")
        .header(header::HOST, "localhost")
        .body(Body::empty())
        .unwrap();
    let response = router(state).oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8(body.to_vec()).unwrap();
    for operation in [
        "insert",
        "insert_within_limit",
        "find_active_by_hash",
        "get",
        "revoke",
        "revoke_all_for_account",
        "list_for_account",
        "active_page",
        "active_identity_page",
        "active_identities",
        "health_check",
        "record_last_seen",
        "last_seen",
        "idle_sessions",
        "revoke_idle",
        "purge_revoked",
        "not_before",
        "raise_not_before",
        "record_not_before_swept",
        "revoke_marked",
        "log_head",
        "log_read",
        "log_wake_ups",
        "log_prune",
    ] {
        let line =
            format!("session_store_call_duration_seconds_count{{operation=\"{operation}\"}} 1");
        assert!(text.contains(&line), "missing {line:?} in\n{text}");
    }
    assert_eq!(
        text.matches("session_store_call_duration_seconds_count{")
            .count(),
        24,
        "a label the README does not list:\n{text}"
    );
}
