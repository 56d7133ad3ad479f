//! The "not before" mark: sessions minted before it resolve as invalid at
//! once, in both cache modes, whatever the store holds (a restored copy
//! included), and a mark never moves back.

use std::sync::Arc;

use session_core::memory::MemoryStore;
use session_core::port::cache::SessionCache;
use session_core::port::store::SessionStore;
use session_core::testkit::{account, epoch, session_at};
use session_core::{CompactCache, Error, MemoryCache, SessionId, SessionService, SessionToken};
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
        service.raise_not_before(old + Duration::minutes(1));
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
    let applied = service.raise_not_before(old + Duration::minutes(1));
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
    service.raise_not_before(epoch() - Duration::days(3650));
    assert!(!resolves(&service, &token).await);
}
