//! The per-account limit through the service: evicted sessions leave every
//! instance's cache, a refused login changes nothing, and a failed insert
//! leaves the cache as it was. Two services over one `MemoryStore` are two
//! processes over one database.

use std::num::NonZeroU32;
use std::sync::Arc;

use session_core::config::{LimitPolicy, SessionLimit};
use session_core::memory::MemoryStore;
use session_core::port::change_log::ChangeLog;
use session_core::port::store::SessionStore;
use session_core::testkit::account;
use session_core::{
    BackgroundTasks, ClientMetadata, Error, MemoryCache, RevocationReason, SessionService,
};

fn limit(max: u32, policy: LimitPolicy) -> SessionLimit {
    SessionLimit {
        max: NonZeroU32::new(max).unwrap(),
        policy,
    }
}

/// A started service over `store` (its own change log) with `limit`.
async fn instance(
    store: &Arc<MemoryStore>,
    limit: SessionLimit,
) -> (SessionService, BackgroundTasks) {
    let service = SessionService::builder(
        Arc::clone(store) as Arc<dyn SessionStore>,
        Arc::new(MemoryCache::new()),
    )
    .change_log(Arc::clone(store) as Arc<dyn ChangeLog>)
    .session_limit(limit)
    .build();
    let tasks = service.start();
    while !service.status().cache_ready() {
        tokio::task::yield_now().await;
    }
    (service, tasks)
}

/// Time is paused: each sleep only lets the followers run.
#[tokio::test(start_paused = true)]
async fn an_evicted_session_stops_resolving_on_every_instance() {
    let store = Arc::new(MemoryStore::new());
    let evict = limit(2, LimitPolicy::EvictLeastRecentlySeen);
    let (a, _a_tasks) = instance(&store, evict).await;
    let (b, _b_tasks) = instance(&store, evict).await;
    let owner = account();
    let oldest = a.create(owner, ClientMetadata::default()).await.unwrap();
    let kept = b.create(owner, ClientMetadata::default()).await.unwrap();
    for service in [&a, &b] {
        service
            .resolve(oldest.token.expose_secret())
            .await
            .expect("active before the limit is reached");
    }
    let newest = a.create(owner, ClientMetadata::default()).await.unwrap();
    // At once on the instance that evicted it (write-through).
    assert!(matches!(
        a.resolve(oldest.token.expose_secret()).await,
        Err(Error::InvalidToken)
    ));
    // On the other once it has read the change log.
    let mut polls = 0;
    while b.resolve(oldest.token.expose_secret()).await.is_ok() {
        polls += 1;
        assert!(polls < 10_000, "B never applied the eviction");
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    for service in [&a, &b] {
        for live in [&kept, &newest] {
            service.resolve(live.token.expose_secret()).await.unwrap();
        }
    }
    let evicted = a.get(oldest.session.id).await.unwrap();
    assert_eq!(evicted.revocation_reason(), Some(&RevocationReason::LIMIT));
    assert_eq!(evicted.revoked_at(), Some(newest.session.created_at));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_login_changes_nothing() {
    let store = Arc::new(MemoryStore::new());
    let (service, _tasks) = instance(&store, limit(1, LimitPolicy::Refuse)).await;
    let owner = account();
    let held = service
        .create(owner, ClientMetadata::default())
        .await
        .unwrap();
    let cached = service.status().cached_sessions;
    assert!(matches!(
        service.create(owner, ClientMetadata::default()).await,
        Err(Error::SessionLimitReached)
    ));
    assert_eq!(service.status().cached_sessions, cached, "nothing cached");
    service.resolve(held.token.expose_secret()).await.unwrap();
    // Another account has its own count.
    service
        .create(account(), ClientMetadata::default())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_limited_insert_leaves_the_cache_as_it_was() {
    let store = Arc::new(MemoryStore::new());
    let (service, _tasks) = instance(&store, limit(1, LimitPolicy::EvictLeastRecentlySeen)).await;
    let owner = account();
    let held = service
        .create(owner, ClientMetadata::default())
        .await
        .unwrap();
    store.set_unavailable(true);
    let failed = service.create(owner, ClientMetadata::default()).await;
    assert!(
        matches!(failed, Err(ref err) if err.is_store_unavailable()),
        "{failed:?}"
    );
    store.set_unavailable(false);
    service
        .resolve(held.token.expose_secret())
        .await
        .expect("not evicted by a create that failed");
}
