//! Every resolve is counted once, under the outcome its caller sees.

use std::sync::Arc;

use session_core::config::MissPolicy;
use session_core::memory::MemoryStore;
use session_core::port::clock::ManualClock;
use session_core::status::{ResolveCounts, ResolveOutcome};
use session_core::{ClientMetadata, Error, MemoryCache, SessionService, SessionToken};

use crate::gated::{FindFailure, GatedStore};
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

#[tokio::test]
async fn with_a_change_log_misses_are_counted_by_what_the_read_found() {
    let store = Arc::new(GatedStore::default());
    let service = SessionService::builder(store.clone(), Arc::new(MemoryCache::new()))
        .change_log(store.clone())
        .clock(Arc::new(ManualClock::new(session_core::testkit::epoch())))
        .miss_policy(MissPolicy {
            reads_per_second: 0.0,
            burst: 4,
            negative_entries: 16,
        })
        .build();
    service.warm().await.unwrap();
    // Another process's session: in the store, not in this cache.
    let (token, session) =
        session_core::testkit::session_at(account(), session_core::testkit::epoch());
    session_core::port::store::SessionStore::insert(&store.inner, &session)
        .await
        .unwrap();

    let (result, counted) = resolve_counted(&service, token.expose_secret()).await;
    assert!(result.is_ok());
    assert_eq!(counted, [(ResolveOutcome::MissReadActive, 1)]);

    let unknown = SessionToken::generate();
    let (result, counted) = resolve_counted(&service, unknown.expose_secret()).await;
    assert!(matches!(result, Err(Error::InvalidToken)));
    assert_eq!(counted, [(ResolveOutcome::MissReadInactive, 1)]);
    // Now known absent: answered without a read.
    let (result, counted) = resolve_counted(&service, unknown.expose_secret()).await;
    assert!(matches!(result, Err(Error::InvalidToken)));
    assert_eq!(counted, [(ResolveOutcome::Negative, 1)]);

    // A store failure is what the client is told (retry, or an internal
    // error), never "invalid".
    store.fail_finds(Some(FindFailure::Unavailable));
    let (result, counted) =
        resolve_counted(&service, SessionToken::generate().expose_secret()).await;
    assert!(
        matches!(result, Err(ref err) if err.is_store_unavailable()),
        "{result:?}"
    );
    assert_eq!(counted, [(ResolveOutcome::StoreUnavailable, 1)]);
    store.fail_finds(Some(FindFailure::Failed));
    let (result, counted) =
        resolve_counted(&service, SessionToken::generate().expose_secret()).await;
    assert!(matches!(result, Err(Error::Store(_))), "{result:?}");
    assert_eq!(counted, [(ResolveOutcome::StoreFailed, 1)]);
    store.fail_finds(None);

    // Four reads spent the burst, and the clock stands still: no refill.
    let (result, counted) =
        resolve_counted(&service, SessionToken::generate().expose_secret()).await;
    assert!(matches!(result, Err(Error::Busy)), "{result:?}");
    assert_eq!(counted, [(ResolveOutcome::RateLimited, 1)]);
}
