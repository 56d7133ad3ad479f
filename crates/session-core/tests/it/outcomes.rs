//! Every resolve is counted once, under the outcome its caller sees.

use std::sync::Arc;

use session_core::memory::MemoryStore;
use session_core::port::clock::ManualClock;
use session_core::status::{ResolveCounts, ResolveOutcome};
use session_core::{ClientMetadata, Error, MemoryCache, SessionService, SessionToken};

use crate::gated::GatedStore;
use session_core::testkit::account;

/// The counts minus `before`, for every outcome that moved.
fn moved(before: ResolveCounts, after: ResolveCounts) -> Vec<(ResolveOutcome, u64)> {
    after
        .iter()
        .zip(before.iter())
        .filter(|((_, a), (_, b))| a != b)
        .map(|((outcome, a), (_, b))| (outcome, a - b))
        .collect()
}

async fn resolve_counted(
    service: &SessionService,
    token: &str,
) -> (Result<(), Error>, Vec<(ResolveOutcome, u64)>) {
    let before = service.status().resolves;
    let result = service.resolve(token).await.map(|_| ());
    (result, moved(before, service.status().resolves))
}

#[tokio::test]
async fn without_a_change_log_each_answer_has_its_outcome() {
    let service =
        SessionService::builder(Arc::new(MemoryStore::new()), Arc::new(MemoryCache::new())).build();
    let unknown = SessionToken::generate();
    let (result, counted) = resolve_counted(&service, unknown.expose_secret()).await;
    assert!(matches!(result, Err(Error::NotReady)));
    assert_eq!(counted, [(ResolveOutcome::NotReady, 1)]);

    service.warm().await.unwrap();
    let created = service
        .create(account(), ClientMetadata::default())
        .await
        .unwrap();
    let (result, counted) = resolve_counted(&service, created.token.expose_secret()).await;
    assert!(result.is_ok());
    assert_eq!(counted, [(ResolveOutcome::Hit, 1)]);

    let (result, counted) = resolve_counted(&service, "sess_not-a-token").await;
    assert!(matches!(result, Err(Error::InvalidToken)));
    assert_eq!(counted, [(ResolveOutcome::Malformed, 1)]);

    // A miss without a change log is final: the cache holds every session.
    let (result, counted) = resolve_counted(&service, unknown.expose_secret()).await;
    assert!(matches!(result, Err(Error::InvalidToken)));
    assert_eq!(counted, [(ResolveOutcome::Negative, 1)]);
}

#[tokio::test(start_paused = true)]
async fn with_a_change_log_misses_are_counted_by_what_catching_up_found() {
    let store = Arc::new(GatedStore::default());
    let service = SessionService::builder(store.clone(), Arc::new(MemoryCache::new()))
        .change_log(store.clone())
        .clock(Arc::new(ManualClock::new(session_core::testkit::epoch())))
        .build();
    let _tasks = service.start();
    while !service.status().cache_ready() {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    // Another process's session: in the store and its log, not yet in this cache.
    let (token, session) =
        session_core::testkit::session_at(account(), session_core::testkit::epoch());
    session_core::port::store::SessionStore::insert(&store.inner, &session)
        .await
        .unwrap();

    let (result, counted) = resolve_counted(&service, token.expose_secret()).await;
    assert!(result.is_ok());
    assert_eq!(counted, [(ResolveOutcome::CaughtUpActive, 1)]);

    let unknown = SessionToken::generate();
    let (result, counted) = resolve_counted(&service, unknown.expose_secret()).await;
    assert!(matches!(result, Err(Error::InvalidToken)));
    assert_eq!(counted, [(ResolveOutcome::CaughtUpInactive, 1)]);

    // Revoked here recently: answered at once from the tombstones.
    service
        .revoke(session.id, session_core::RevocationReason::LOGOUT)
        .await
        .unwrap();
    let (result, counted) = resolve_counted(&service, token.expose_secret()).await;
    assert!(matches!(result, Err(Error::InvalidToken)));
    assert_eq!(counted, [(ResolveOutcome::Negative, 1)]);

    // The log cannot be read: after the staleness bound, "retry", never "invalid".
    store.set_log_down(true);
    let (result, counted) =
        resolve_counted(&service, SessionToken::generate().expose_secret()).await;
    assert!(
        matches!(result, Err(ref err) if err.is_store_unavailable()),
        "{result:?}"
    );
    assert_eq!(counted, [(ResolveOutcome::StoreUnavailable, 1)]);
}
