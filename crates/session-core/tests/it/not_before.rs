//! The "not before" mark: sessions minted before it resolve as invalid at
//! once, in both cache modes, whatever the store holds (a restored copy
//! included), and a mark never moves back; it is stored first, learnt and
//! written back at each warm, carried by the change log, and swept.

use std::sync::Arc;

use session_core::memory::MemoryStore;
use session_core::port::cache::SessionCache;
use session_core::port::clock::ManualClock;
use session_core::port::store::{
    Exclusive, RevokedSession, SessionStore, StoreDecorator, StoreError,
};
use session_core::status::RoundEnd;
use session_core::testkit::{account, epoch, session_at};
use session_core::{
    CompactCache, Error, MemoryCache, RevocationReason, Revoker, SessionId, SessionService,
    SessionToken,
};
use time::{Duration, OffsetDateTime};
use uuid::{NoContext, Timestamp, Uuid};

/// An id minted at `at` (to the millisecond, as UUIDv7 keeps it).
fn minted(at: OffsetDateTime) -> SessionId {
    let seconds = u64::try_from(at.unix_timestamp()).unwrap();
    let timestamp = Timestamp::from_unix(NoContext, seconds, at.nanosecond());
    SessionId::from_uuid(Uuid::new_v7(timestamp))
}

/// A store holding one session minted at each of `times`, and their tokens.
async fn stored(times: &[OffsetDateTime]) -> (Arc<MemoryStore>, Vec<SessionToken>) {
    let store = Arc::new(MemoryStore::new());
    let mut tokens = Vec::new();
    for &at in times {
        let (token, mut session) = session_at(account(), at);
        session.id = minted(at);
        store.insert(&session).await.unwrap();
        tokens.push(token);
    }
    (store, tokens)
}

async fn resolves(service: &SessionService, token: &SessionToken) -> bool {
    match service.resolve(token.expose_secret()).await {
        Ok(_) => true,
        Err(Error::InvalidToken) => false,
        Err(other) => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn sessions_minted_before_the_mark_stop_resolving_in_both_cache_modes() {
    let (old, new) = (epoch(), epoch() + Duration::hours(1));
    let caches: [Arc<dyn SessionCache>; 2] =
        [Arc::new(MemoryCache::new()), Arc::new(CompactCache::new())];
    for cache in caches {
        let (store, tokens) = stored(&[old, new]).await;
        let service = SessionService::builder(store, cache).build();
        service.warm().await.unwrap();
        assert!(resolves(&service, &tokens[0]).await && resolves(&service, &tokens[1]).await);
        service
            .raise_not_before(old + Duration::minutes(1))
            .await
            .unwrap();
        assert!(
            !resolves(&service, &tokens[0]).await,
            "minted before the mark"
        );
        assert!(resolves(&service, &tokens[1]).await, "minted after it");
    }
}

#[tokio::test]
async fn a_mark_never_moves_back() {
    let (old, middle, new) = (
        epoch(),
        epoch() + Duration::hours(1),
        epoch() + Duration::hours(2),
    );
    let (store, tokens) = stored(&[old, middle, new]).await;
    let service = SessionService::builder(store, Arc::new(MemoryCache::new()))
        .not_before(middle + Duration::minutes(1))
        .build();
    service.warm().await.unwrap();
    // Lower, as a restored backup's would be: the mark in force stays.
    let applied = service
        .raise_not_before(old + Duration::minutes(1))
        .await
        .unwrap();
    assert_eq!(applied, middle + Duration::minutes(1));
    assert_eq!(service.not_before(), Some(applied));
    assert!(!resolves(&service, &tokens[0]).await);
    assert!(
        !resolves(&service, &tokens[1]).await,
        "the higher mark still applies"
    );
    assert!(resolves(&service, &tokens[2]).await);
}

#[tokio::test]
async fn an_id_without_a_timestamp_counts_as_minted_before_any_mark() {
    let store = Arc::new(MemoryStore::new());
    let (token, mut session) = session_at(account(), epoch());
    session.id = SessionId::from_uuid(Uuid::new_v4());
    store.insert(&session).await.unwrap();
    let service = SessionService::builder(store, Arc::new(MemoryCache::new())).build();
    service.warm().await.unwrap();
    assert!(resolves(&service, &token).await, "no mark: nothing changes");
    service
        .raise_not_before(epoch() - Duration::days(3650))
        .await
        .unwrap();
    assert!(!resolves(&service, &token).await);
}

fn service_on(store: Arc<dyn SessionStore>) -> SessionService {
    SessionService::builder(store, Arc::new(MemoryCache::new()))
        .clock(Arc::new(ManualClock::new(epoch() + Duration::days(1))))
        .build()
}

#[tokio::test]
async fn a_raise_is_stored_first_and_a_failed_one_changes_nothing() {
    let (store, tokens) = stored(&[epoch()]).await;
    let service = service_on(store.clone());
    service.warm().await.unwrap();
    store.set_unavailable(true);
    let failed = service.raise_not_before(epoch() + Duration::hours(1)).await;
    assert!(matches!(failed, Err(Error::Store(_))), "{failed:?}");
    assert_eq!(service.not_before(), None, "nothing applied here");
    store.set_unavailable(false);
    assert!(resolves(&service, &tokens[0]).await);
    assert_eq!(store.not_before().await.unwrap().mark, None);

    let mark = epoch() + Duration::hours(1);
    assert_eq!(service.raise_not_before(mark).await.unwrap(), mark);
    assert_eq!(store.not_before().await.unwrap().mark, Some(mark));
    assert!(!resolves(&service, &tokens[0]).await);
}

#[tokio::test]
async fn a_warm_applies_the_stored_mark_before_it_answers() {
    let (store, tokens) = stored(&[epoch(), epoch() + Duration::hours(2)]).await;
    let mark = epoch() + Duration::hours(1);
    store.raise_not_before(mark, None).await.unwrap();
    let service = service_on(store);
    service.warm().await.unwrap();
    assert_eq!(service.not_before(), Some(mark));
    assert!(!resolves(&service, &tokens[0]).await);
    assert!(resolves(&service, &tokens[1]).await);
}

/// A store restored from a copy older than the mark holds an earlier one
/// (or none): an instance that knew the later one writes it back, so
/// instances started afterwards learn it.
#[tokio::test]
async fn a_warm_writes_a_later_mark_back_to_the_store() {
    let (store, tokens) = stored(&[epoch()]).await;
    let early = epoch() - Duration::days(1);
    store.raise_not_before(early, None).await.unwrap();
    let mark = epoch() + Duration::hours(1);
    let knowing = SessionService::builder(store.clone(), Arc::new(MemoryCache::new()))
        .not_before(mark)
        .build();
    knowing.warm().await.unwrap();
    assert_eq!(store.not_before().await.unwrap().mark, Some(mark));

    let later = service_on(store);
    later.warm().await.unwrap();
    assert!(!resolves(&later, &tokens[0]).await, "learnt from the store");
}

#[tokio::test]
async fn a_lower_raise_changes_nothing_in_the_store_either() {
    let store = Arc::new(MemoryStore::new());
    let service = service_on(store.clone());
    let mark = epoch() + Duration::hours(1);
    service.raise_not_before(mark).await.unwrap();
    let in_force = service
        .raise_not_before(mark - Duration::hours(1))
        .await
        .unwrap();
    assert_eq!(in_force, mark);
    assert_eq!(store.not_before().await.unwrap().mark, Some(mark));
}

#[tokio::test(start_paused = true)]
async fn a_raise_reaches_every_follower_through_the_change_log() {
    let (store, tokens) = stored(&[epoch(), epoch() + Duration::hours(2)]).await;
    let follower = |store: &Arc<MemoryStore>| {
        SessionService::builder(store.clone(), Arc::new(MemoryCache::new()))
            .change_log(store.clone())
            .build()
    };
    let (a, b) = (follower(&store), follower(&store));
    let (_a_tasks, _b_tasks) = (a.start(), b.start());
    for _ in 0..10_000 {
        if a.status().cache_ready() && b.status().cache_ready() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    assert!(resolves(&b, &tokens[0]).await);
    let mark = epoch() + Duration::hours(1);
    a.raise_not_before(mark).await.unwrap();
    for _ in 0..10_000 {
        if b.not_before() == Some(mark) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    assert_eq!(b.not_before(), Some(mark));
    assert!(!resolves(&b, &tokens[0]).await);
    assert!(resolves(&b, &tokens[1]).await);
}

/// Fails every `revoke_marked` batch after the first `succeed` while `failing`.
struct FailingSweep {
    inner: Arc<MemoryStore>,
    succeed: std::sync::atomic::AtomicUsize,
}

impl StoreDecorator for FailingSweep {
    fn inner_store(&self) -> &dyn SessionStore {
        self.inner.as_ref()
    }

    async fn revoke_marked(
        &self,
        mark: OffsetDateTime,
        after: Option<SessionId>,
        limit: u32,
        at: OffsetDateTime,
        reason: RevocationReason,
        by: Option<Revoker>,
    ) -> Result<Exclusive<Vec<RevokedSession>>, StoreError> {
        use std::sync::atomic::Ordering;
        if self
            .succeed
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                left.checked_sub(1)
            })
            .is_err()
        {
            return Err(StoreError::Unavailable("the sweep's batch failed".into()));
        }
        self.inner
            .revoke_marked(mark, after, limit, at, reason, by)
            .await
    }
}

async fn active(store: &MemoryStore, ids: &[SessionId]) -> usize {
    let mut active = 0;
    for id in ids {
        if store
            .get(*id)
            .await
            .unwrap()
            .unwrap()
            .revoked_at()
            .is_none()
        {
            active += 1;
        }
    }
    active
}

/// 2,500 marked sessions: three batches. The second fails: the first
/// stands, nothing is recorded as swept, and the next round finishes.
#[tokio::test]
async fn the_sweep_revokes_marked_sessions_as_admin_and_resumes_after_a_failure() {
    let old = epoch();
    let store = Arc::new(MemoryStore::new());
    let mut marked = Vec::new();
    for _ in 0..2_500 {
        let (_, mut session) = session_at(account(), old);
        session.id = minted(old);
        store.insert(&session).await.unwrap();
        marked.push(session.id);
    }
    let (late_token, mut late) = session_at(account(), old + Duration::hours(2));
    late.id = minted(old + Duration::hours(2));
    store.insert(&late).await.unwrap();
    let decorated = Arc::new(FailingSweep {
        inner: store.clone(),
        succeed: std::sync::atomic::AtomicUsize::new(1),
    });
    let service = service_on(decorated.clone());
    service.warm().await.unwrap();
    let nothing = service.sweep_not_before().await;
    assert!(matches!(nothing.end, RoundEnd::Complete) && nothing.total() == 0);

    let mark = old + Duration::hours(1);
    let admin = Revoker::new("incident_desk").unwrap();
    service
        .raise_not_before_as(mark, Some(admin.clone()))
        .await
        .unwrap();
    let failed = service.sweep_not_before().await;
    assert!(matches!(failed.end, RoundEnd::Failed(_)), "{failed:?}");
    assert_eq!(failed.batches, vec![1_000]);
    assert_eq!(
        active(&store, &marked).await,
        1_500,
        "the first batch stands"
    );
    assert_eq!(store.not_before().await.unwrap().swept_through, None);

    decorated
        .succeed
        .store(usize::MAX, std::sync::atomic::Ordering::SeqCst);
    let done = service.sweep_not_before().await;
    assert!(matches!(done.end, RoundEnd::Complete), "{done:?}");
    assert_eq!(done.total(), 1_500);
    assert_eq!(active(&store, &marked).await, 0);
    let swept = store.get(marked[0]).await.unwrap().unwrap();
    assert_eq!(swept.revocation_reason(), Some(&RevocationReason::ADMIN));
    assert_eq!(swept.revoked_by(), Some(&admin));
    assert_eq!(store.not_before().await.unwrap().swept_through, Some(mark));
    assert!(
        store
            .get(late.id)
            .await
            .unwrap()
            .unwrap()
            .revoked_at()
            .is_none()
    );
    assert!(resolves(&service, &late_token).await);

    let again = service.sweep_not_before().await;
    assert!(
        matches!(again.end, RoundEnd::Complete) && again.batches.is_empty(),
        "swept once per raise: {again:?}"
    );
    assert_eq!(service.status().not_before_sweep.sessions, 2_500);
}
