//! The use cases' semantics, over the memory adapters.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use session_core::memory::MemoryStore;
use session_core::port::cache::SessionCache;
use session_core::port::clock::ManualClock;
use session_core::port::store::{SessionStore, StoreError};
use session_core::testkit::{account, epoch, session_at};
use session_core::{
    ClientMetadata, Error, Label, ListScope, PageRequest, Revocation, SessionIdentity,
    SessionService,
};
use time::Duration;

use crate::gated::{GatedStore, Point};

struct Fixture<S> {
    store: Arc<S>,
    cache: Arc<dyn SessionCache>,
    clock: Arc<ManualClock>,
    service: SessionService,
}

fn fixture<S: SessionStore + Default>() -> Fixture<S> {
    let store = Arc::new(S::default());
    let cache = super::cache();
    let clock = Arc::new(ManualClock::new(epoch()));
    let service = SessionService::builder(store.clone(), cache.clone())
        .clock(clock.clone())
        .warm_page_size(3)
        .build();
    Fixture {
        store,
        cache,
        clock,
        service,
    }
}

async fn warm_fixture() -> Fixture<MemoryStore> {
    let f = fixture::<MemoryStore>();
    f.service.warm().await.unwrap();
    f
}

fn labelled(label: &str) -> ClientMetadata {
    ClientMetadata {
        label: Some(Label::new(label).unwrap()),
        ..ClientMetadata::default()
    }
}

#[tokio::test]
async fn resolve_before_the_first_warm_is_not_ready_for_any_token() {
    let f = fixture::<MemoryStore>();
    let created = f
        .service
        .create(account(), labelled("before warm"))
        .await
        .unwrap();
    for token in [created.token.expose_secret(), "garbage", ""] {
        assert!(matches!(
            f.service.resolve(token).await,
            Err(Error::NotReady)
        ));
    }
    assert!(!f.service.status().cache_ready());
    f.service.warm().await.unwrap();
    assert!(f.service.status().cache_ready());
    assert_eq!(
        f.service
            .resolve(created.token.expose_secret())
            .await
            .unwrap(),
        SessionIdentity::from(&*created.session)
    );
}

#[tokio::test]
async fn create_resolve_revoke_resolve() {
    let f = warm_fixture().await;
    let owner = account();
    let created = f.service.create(owner, labelled("laptop")).await.unwrap();
    assert_eq!(created.session.account_id, owner);
    assert_eq!(created.session.created_at, epoch());
    assert_eq!(created.session.token_hash, created.token.hash());
    let resolved = f
        .service
        .resolve(created.token.expose_secret())
        .await
        .unwrap();
    assert_eq!(resolved, SessionIdentity::from(&*created.session));
    assert_eq!(f.service.session(&resolved).await.unwrap(), created.session);

    f.clock.advance(Duration::minutes(3));
    assert_eq!(
        f.service
            .revoke(created.session.id, session_core::RevocationReason::LOGOUT)
            .await
            .unwrap(),
        Revocation::Revoked
    );
    assert!(matches!(
        f.service.resolve(created.token.expose_secret()).await,
        Err(Error::InvalidToken)
    ));
    let stored = f.service.get(created.session.id).await.unwrap();
    assert_eq!(stored.revoked_at(), Some(epoch() + Duration::minutes(3)));
    assert_eq!(f.cache.len(), 0);
}

#[tokio::test]
async fn malformed_unknown_and_revoked_tokens_get_the_same_error() {
    let f = warm_fixture().await;
    let revoked = f
        .service
        .create(account(), ClientMetadata::default())
        .await
        .unwrap();
    f.service
        .revoke(revoked.session.id, session_core::RevocationReason::LOGOUT)
        .await
        .unwrap();
    let unknown = session_core::SessionToken::generate();
    let mut typo = revoked.token.expose_secret().to_owned();
    typo.replace_range(10..11, if &typo[10..11] == "a" { "b" } else { "a" });
    for token in [
        revoked.token.expose_secret(),
        unknown.expose_secret(),
        &typo,
        "sess_x",
    ] {
        let err = f.service.resolve(token).await.unwrap_err();
        assert!(matches!(err, Error::InvalidToken), "{err:?}");
        assert_eq!(err.to_string(), "invalid session token");
    }
}

#[tokio::test]
async fn resolve_never_reads_the_store() {
    let f = warm_fixture().await;
    let created = f
        .service
        .create(account(), ClientMetadata::default())
        .await
        .unwrap();
    f.store.set_unavailable(true);
    assert!(
        f.service
            .resolve(created.token.expose_secret())
            .await
            .is_ok()
    );
    let unknown = session_core::SessionToken::generate();
    assert!(matches!(
        f.service.resolve(unknown.expose_secret()).await,
        Err(Error::InvalidToken)
    ));
}

#[tokio::test]
async fn a_failed_create_leaves_the_cache_untouched() {
    let f = warm_fixture().await;
    let owner = account();
    f.service
        .create(owner, ClientMetadata::default())
        .await
        .unwrap();
    f.store.set_unavailable(true);
    let err = f
        .service
        .create(owner, ClientMetadata::default())
        .await
        .unwrap_err();
    assert!(err.is_store_unavailable(), "{err:?}");
    assert_eq!(f.cache.len(), 1);
    f.store.set_unavailable(false);
    assert_eq!(
        f.service
            .list(owner, ListScope::IncludeRevoked, PageRequest::default())
            .await
            .unwrap()
            .sessions
            .len(),
        1
    );
}

#[tokio::test]
async fn a_failed_revoke_leaves_the_session_resolvable_and_active() {
    let f = warm_fixture().await;
    let owner = account();
    let created = f
        .service
        .create(owner, ClientMetadata::default())
        .await
        .unwrap();
    f.store.set_unavailable(true);
    assert!(
        f.service
            .revoke(created.session.id, session_core::RevocationReason::LOGOUT)
            .await
            .unwrap_err()
            .is_store_unavailable()
    );
    assert!(
        f.service
            .revoke_all(owner, None, session_core::RevocationReason::LOGOUT)
            .await
            .unwrap_err()
            .is_store_unavailable()
    );
    assert!(matches!(
        f.service.check_store().await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(
        f.service
            .resolve(created.token.expose_secret())
            .await
            .is_ok()
    );
    f.store.set_unavailable(false);
    assert!(f.service.get(created.session.id).await.unwrap().is_active());
}

#[tokio::test]
async fn revoke_of_an_unknown_id_is_not_found_and_repeat_is_already_revoked() {
    let f = warm_fixture().await;
    assert!(matches!(
        f.service
            .revoke(
                session_core::SessionId::new(),
                session_core::RevocationReason::LOGOUT
            )
            .await,
        Err(Error::NotFound)
    ));
    assert!(matches!(
        f.service.get(session_core::SessionId::new()).await,
        Err(Error::NotFound)
    ));
    let created = f
        .service
        .create(account(), ClientMetadata::default())
        .await
        .unwrap();
    assert_eq!(
        f.service
            .revoke(created.session.id, session_core::RevocationReason::LOGOUT)
            .await
            .unwrap(),
        Revocation::Revoked
    );
    assert_eq!(
        f.service
            .revoke(created.session.id, session_core::RevocationReason::LOGOUT)
            .await
            .unwrap(),
        Revocation::AlreadyRevoked
    );
}

#[tokio::test]
async fn revoke_all_except_the_current_session() {
    let f = warm_fixture().await;
    let (owner, bystander) = (account(), account());
    let mut tokens = Vec::new();
    for i in 0..4 {
        f.clock.advance(Duration::seconds(1));
        tokens.push(
            f.service
                .create(owner, labelled(&format!("device {i}")))
                .await
                .unwrap(),
        );
    }
    let other = f
        .service
        .create(bystander, ClientMetadata::default())
        .await
        .unwrap();
    let current = &tokens[1];
    assert_eq!(
        f.service
            .revoke_all(
                owner,
                Some(current.session.id),
                session_core::RevocationReason::LOGOUT
            )
            .await
            .unwrap(),
        3
    );
    for created in &tokens {
        let resolved = f.service.resolve(created.token.expose_secret()).await;
        assert_eq!(resolved.is_ok(), created.session.id == current.session.id);
    }
    assert!(f.service.resolve(other.token.expose_secret()).await.is_ok());
    let listed = f
        .service
        .list(owner, ListScope::IncludeRevoked, PageRequest::default())
        .await
        .unwrap()
        .sessions;
    let labels: Vec<_> = listed
        .iter()
        .map(|s| s.metadata.label.as_ref().unwrap().as_str())
        .collect();
    assert_eq!(labels, ["device 3", "device 2", "device 1", "device 0"]);
    assert_eq!(
        f.service
            .revoke_all(owner, None, session_core::RevocationReason::LOGOUT)
            .await
            .unwrap(),
        1
    );
    assert_eq!(f.cache.len(), 1);
}

#[tokio::test]
async fn warm_loads_every_active_session_across_pages_and_rewarm_replaces() {
    let f = fixture::<MemoryStore>();
    let mut active = Vec::new();
    for i in 0..10 {
        let (token, session) = session_at(account(), epoch());
        f.store.insert(&session).await.unwrap();
        if i % 4 == 0 {
            f.store
                .revoke(
                    session.id,
                    epoch(),
                    session_core::RevocationReason::LOGOUT,
                    None,
                )
                .await
                .unwrap();
        } else {
            active.push(token);
        }
    }
    let report = f.service.warm().await.unwrap();
    assert_eq!(report.sessions, 7);
    assert_eq!(report.pages, 3, "7 rows at 3 a page");
    for token in &active {
        assert!(f.service.resolve(token.expose_secret()).await.is_ok());
    }

    // Changes made behind the service's back show up only after a re-warm.
    let (late, session) = session_at(account(), epoch());
    f.store.insert(&session).await.unwrap();
    assert!(f.service.resolve(late.expose_secret()).await.is_err());
    f.cache.insert(Arc::new(session_at(account(), epoch()).1));
    assert_eq!(f.service.warm().await.unwrap().sessions, 8);
    assert!(f.service.resolve(late.expose_secret()).await.is_ok());
    assert_eq!(f.cache.len(), 8, "the stray cache entry is gone");
}

#[tokio::test]
async fn a_failed_warm_stays_not_ready_and_keeps_the_cache() {
    let f = fixture::<MemoryStore>();
    f.store.set_unavailable(true);
    assert!(f.service.warm().await.unwrap_err().is_store_unavailable());
    assert!(!f.service.status().cache_warm);
    f.store.set_unavailable(false);
    f.service.warm().await.unwrap();
    let created = f
        .service
        .create(account(), ClientMetadata::default())
        .await
        .unwrap();
    f.store.set_unavailable(true);
    assert!(f.service.warm().await.is_err());
    assert!(
        f.service.status().cache_warm,
        "a failed re-warm does not un-warm"
    );
    assert!(
        f.service
            .resolve(created.token.expose_secret())
            .await
            .is_ok()
    );
}

/// A create commits, then a revoke-all of its account commits and is applied
/// to the cache before the create's cache insert: the insert must not bring
/// the revoked session back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_racing_revoke_all_does_not_resurrect_the_session() {
    let f = fixture::<GatedStore>();
    f.service.warm().await.unwrap();
    let owner = account();
    let gate = f.store.arm(Point::Insert);
    let creating = tokio::spawn({
        let service = f.service.clone();
        async move { service.create(owner, ClientMetadata::default()).await }
    });
    gate.reached().await;
    assert_eq!(
        f.service
            .revoke_all(owner, None, session_core::RevocationReason::LOGOUT)
            .await
            .unwrap(),
        1
    );
    gate.release();
    let created = creating.await.unwrap().unwrap();
    assert!(matches!(
        f.service.resolve(created.token.expose_secret()).await,
        Err(Error::InvalidToken)
    ));
    assert_eq!(f.cache.len(), 0);
}

/// A re-warm reads a page, a revocation and a create commit before that page
/// is installed: the revoked session stays out, the created one is in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_during_a_warm_are_replayed_onto_it() {
    let f = fixture::<GatedStore>();
    let (doomed, session) = session_at(account(), epoch());
    f.store.insert(&session).await.unwrap();
    let doomed_id = session.id;
    f.service.warm().await.unwrap();

    let gate = f.store.arm(Point::FirstPage);
    let warming = tokio::spawn({
        let service = f.service.clone();
        async move { service.warm().await }
    });
    gate.reached().await;
    f.service
        .revoke(doomed_id, session_core::RevocationReason::LOGOUT)
        .await
        .unwrap();
    let created = f
        .service
        .create(account(), ClientMetadata::default())
        .await
        .unwrap();
    gate.release();
    let report = warming.await.unwrap().unwrap();
    assert_eq!(report.sessions, 1);
    assert!(f.service.resolve(doomed.expose_secret()).await.is_err());
    assert!(
        f.service
            .resolve(created.token.expose_secret())
            .await
            .is_ok()
    );
}

/// The caller gives up while the store is committing a revocation: the cache
/// is still updated once the store answers.
#[tokio::test]
async fn a_revoke_abandoned_by_its_caller_still_reaches_the_cache() {
    let f = fixture::<GatedStore>();
    f.service.warm().await.unwrap();
    let created = f
        .service
        .create(account(), ClientMetadata::default())
        .await
        .unwrap();
    let gate = f.store.arm(Point::Revoke);
    let revoking = tokio::spawn({
        let service = f.service.clone();
        let id = created.session.id;
        async move {
            service
                .revoke(id, session_core::RevocationReason::LOGOUT)
                .await
        }
    });
    gate.reached().await;
    revoking.abort();
    assert!(revoking.await.unwrap_err().is_cancelled());
    gate.release();
    // The write runs on its own task; give the single-threaded runtime turns to finish it.
    for _ in 0..100 {
        if f.cache.is_empty() {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(
        f.service
            .resolve(created.token.expose_secret())
            .await
            .is_err()
    );
}

/// A revocation the cache missed (made in the store by other means) is
/// caught by revoking again: "already revoked" also drops it from the cache.
#[tokio::test]
async fn revoking_an_already_revoked_session_drops_it_from_the_cache() {
    let f = warm_fixture().await;
    let created = f
        .service
        .create(account(), ClientMetadata::default())
        .await
        .unwrap();
    f.store
        .revoke(
            created.session.id,
            epoch(),
            session_core::RevocationReason::LOGOUT,
            None,
        )
        .await
        .unwrap();
    assert!(
        f.service
            .resolve(created.token.expose_secret())
            .await
            .is_ok(),
        "the cache missed the revocation"
    );
    assert_eq!(
        f.service
            .revoke(created.session.id, session_core::RevocationReason::LOGOUT)
            .await
            .unwrap(),
        Revocation::AlreadyRevoked
    );
    assert!(f.cache.get(&created.session.token_hash).is_none());
    assert!(matches!(
        f.service.resolve(created.token.expose_secret()).await,
        Err(Error::InvalidToken)
    ));
}

/// A warm streams the store's pages into the contents it builds: while the
/// first session read is being inserted, the store has been asked for at
/// most a few pages more, not for every active session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_inserts_each_page_while_the_store_reads_the_next() {
    const SESSIONS: usize = 20;
    let store = Arc::new(GatedStore::default());
    let cache = Arc::new(crate::gated::GatedCache::over(super::cache()));
    let service = SessionService::builder(store.clone(), cache.clone())
        .warm_page_size(1)
        .build();
    service.warm().await.unwrap();
    for _ in 0..SESSIONS {
        service
            .create(account(), ClientMetadata::default())
            .await
            .unwrap();
    }

    let (reached, release) = cache.arm();
    let read_before = store.active_pages_read.load(Ordering::SeqCst);
    let warming = tokio::spawn({
        let service = service.clone();
        async move { service.warm().await }
    });
    tokio::task::spawn_blocking(move || reached.recv().unwrap())
        .await
        .unwrap();
    let read_ahead = store.active_pages_read.load(Ordering::SeqCst) - read_before;
    release.send(()).unwrap();
    let report = warming.await.unwrap().unwrap();

    // The page being inserted, one waiting for it, one read and waiting
    // for room.
    assert!(
        read_ahead <= 3,
        "{read_ahead} pages read before the first insert"
    );
    assert_eq!(report.sessions, SESSIONS);
    assert_eq!(
        store.active_pages_read.load(Ordering::SeqCst) - read_before,
        SESSIONS + 1,
        "one page a session, and the empty last page"
    );
}

/// A re-warm builds its new contents without the lock writes take: a revoke
/// and a create made while the build is held open complete at once, and the
/// installed contents have both, with no moment where the revoked session
/// resolves again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_during_a_warm_build_complete_and_hold_in_the_new_contents() {
    let store = Arc::new(MemoryStore::new());
    let cache = Arc::new(crate::gated::GatedCache::over(super::cache()));
    let service = SessionService::builder(store.clone(), cache.clone()).build();
    service.warm().await.unwrap();
    let doomed = service
        .create(account(), ClientMetadata::default())
        .await
        .unwrap();

    let (reached, release) = cache.arm();
    let warming = tokio::spawn({
        let service = service.clone();
        async move { service.warm().await }
    });
    tokio::task::spawn_blocking(move || reached.recv().unwrap())
        .await
        .unwrap();
    // The build holds the loaded contents, which still have `doomed`. The
    // writes run on a thread and runtime of their own, so a writes lock held
    // by the build shows as a timeout here rather than a hung test.
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn({
        let service = service.clone();
        let doomed = doomed.session.id;
        move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            let created = runtime.block_on(async {
                service
                    .revoke(doomed, session_core::RevocationReason::LOGOUT)
                    .await
                    .unwrap();
                service
                    .create(account(), ClientMetadata::default())
                    .await
                    .unwrap()
            });
            done_tx.send(created).unwrap();
        }
    });
    let created = tokio::task::spawn_blocking(move || {
        done_rx.recv_timeout(std::time::Duration::from_secs(10))
    })
    .await
    .unwrap()
    .expect("the writes waited for the warm's build");
    release.send(()).unwrap();
    warming.await.unwrap().unwrap();

    assert!(matches!(
        service.resolve(doomed.token.expose_secret()).await,
        Err(Error::InvalidToken)
    ));
    assert!(service.resolve(created.token.expose_secret()).await.is_ok());
    assert_eq!(service.status().cached_sessions, 1);
}
