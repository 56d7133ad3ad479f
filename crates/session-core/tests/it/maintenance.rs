//! Idle revocation and retention through the service, with a manual clock:
//! what a round revokes, that a dry run changes nothing, that the cache
//! follows the store, and that a failed batch leaves both as they were.

use std::sync::Arc;
use std::time::Duration;

use session_core::config::{IdleRevocation, IdleRevocationError, LastSeenSettings, Retention};
use session_core::memory::MemoryStore;
use session_core::port::clock::{Clock, ManualClock};
use session_core::port::store::{RetentionAction, SessionStore};
use session_core::status::RoundEnd;
use session_core::testkit::{account, epoch};
use session_core::{
    ClientMetadata, Error, MemoryCache, NewSession, RevocationReason, SessionService,
};

const DAY: Duration = Duration::from_secs(86_400);

struct Fixture {
    store: Arc<MemoryStore>,
    clock: Arc<ManualClock>,
    service: SessionService,
    idle: IdleRevocation,
}

async fn fixture() -> Fixture {
    let store = Arc::new(MemoryStore::default());
    let clock = Arc::new(ManualClock::new(epoch()));
    let last_seen = LastSeenSettings::default();
    let service = SessionService::builder(store.clone(), Arc::new(MemoryCache::new()))
        .clock(clock.clone())
        .last_seen(last_seen)
        .build();
    service.warm().await.unwrap();
    let idle = IdleRevocation::new(90 * DAY, Some(&last_seen)).unwrap();
    Fixture {
        store,
        clock,
        service,
        idle,
    }
}

fn signed(duration: Duration) -> time::Duration {
    time::Duration::try_from(duration).unwrap()
}

async fn create(service: &SessionService) -> NewSession {
    service
        .create(account(), ClientMetadata::default())
        .await
        .unwrap()
}

async fn resolves(service: &SessionService, new: &NewSession) -> bool {
    match service.resolve(new.token.expose_secret()).await {
        Ok(_) => true,
        Err(Error::InvalidToken) => false,
        Err(err) => panic!("unexpected: {err}"),
    }
}

#[tokio::test]
async fn a_round_revokes_the_unseen_and_spares_the_recently_seen() {
    let f = fixture().await;
    let never_seen = create(&f.service).await;
    let seen = create(&f.service).await;
    f.clock.advance(signed(50 * DAY));
    // The minute marks are made in moves with the clock at each flush.
    f.service.flush_last_seen().await.unwrap();
    assert!(resolves(&f.service, &seen).await);
    // Its mark is still in memory: the round writes this instance's marks first.
    f.clock.advance(signed(41 * DAY));

    let dry = f.service.revoke_idle(&f.idle, true).await;
    assert!(matches!(dry.end, RoundEnd::Complete), "{:?}", dry.end);
    assert_eq!(dry.batches, vec![1]);
    assert_eq!(
        f.service.status().cached_sessions,
        2,
        "a dry run revokes nothing"
    );
    assert!(
        f.store
            .get(never_seen.session.id)
            .await
            .unwrap()
            .unwrap()
            .is_active()
    );
    assert_eq!(
        f.service.status().idle_revocation,
        None,
        "nor counts: off in the builder"
    );

    let round = f.service.revoke_idle(&f.idle, false).await;
    assert!(matches!(round.end, RoundEnd::Complete), "{:?}", round.end);
    assert_eq!(round.total(), 1);
    assert!(
        !resolves(&f.service, &never_seen).await,
        "gone from the cache"
    );
    assert!(resolves(&f.service, &seen).await);
    let stored = f.store.get(never_seen.session.id).await.unwrap().unwrap();
    assert_eq!(stored.revocation_reason(), Some(&RevocationReason::IDLE));
    assert_eq!(stored.revoked_at(), Some(f.clock.now()));
}

#[tokio::test]
async fn the_margin_spares_a_session_seen_just_inside_the_limit() {
    let f = fixture().await;
    let new = create(&f.service).await;
    // Past the limit, within the margin (flush interval and a minute).
    f.clock.advance(signed(90 * DAY + Duration::from_secs(60)));
    let round = f.service.revoke_idle(&f.idle, false).await;
    assert_eq!(round.total(), 0);
    // Not resolved here: that would mark it seen.
    assert_eq!(f.service.status().cached_sessions, 1);
    f.clock.advance(signed(Duration::from_secs(11)));
    assert_eq!(f.service.revoke_idle(&f.idle, false).await.total(), 1);
    assert!(!resolves(&f.service, &new).await);
}

#[tokio::test]
async fn a_failed_batch_leaves_store_and_cache_as_they_were() {
    let f = fixture().await;
    let new = create(&f.service).await;
    f.clock.advance(signed(91 * DAY));
    f.store.set_unavailable(true);
    let round = f.service.revoke_idle(&f.idle, false).await;
    assert!(matches!(round.end, RoundEnd::Failed(_)), "{:?}", round.end);
    f.store.set_unavailable(false);
    // Not resolved here: that would mark it seen.
    assert_eq!(
        f.service.status().cached_sessions,
        1,
        "the cache is unchanged"
    );
    assert!(
        f.store
            .get(new.session.id)
            .await
            .unwrap()
            .unwrap()
            .is_active()
    );
    let retried = f.service.revoke_idle(&f.idle, false).await;
    assert_eq!(retried.total(), 1, "the next round does it");
    assert!(!resolves(&f.service, &new).await);
}

#[tokio::test]
async fn rounds_go_in_batches_and_are_counted_when_the_job_is_on() {
    let store = Arc::new(MemoryStore::default());
    let clock = Arc::new(ManualClock::new(epoch()));
    let last_seen = LastSeenSettings::default();
    let mut idle = IdleRevocation::new(90 * DAY, Some(&last_seen)).unwrap();
    idle.batch = 2;
    let service = SessionService::builder(store.clone(), Arc::new(MemoryCache::new()))
        .clock(clock.clone())
        .last_seen(last_seen)
        .idle_revocation(idle)
        .build();
    service.warm().await.unwrap();
    let mut sessions = Vec::new();
    for _ in 0..5 {
        sessions.push(create(&service).await);
    }
    clock.advance(signed(91 * DAY));
    let round = service.revoke_idle(&idle, false).await;
    assert_eq!(round.batches, vec![2, 2, 1]);
    for new in &sessions {
        assert!(!resolves(&service, new).await);
    }
    let stats = service.status().idle_revocation.unwrap();
    assert_eq!((stats.sessions, stats.rounds, stats.busy_rounds), (5, 1, 0));
    assert_eq!(stats.last_round_end, Some(epoch() + 91 * DAY));
}

#[tokio::test]
async fn retention_deletes_or_erases_revoked_sessions_past_their_age() {
    let f = fixture().await;
    let old = f
        .service
        .create(
            account(),
            ClientMetadata {
                ip: Some("192.0.2.1".parse().unwrap()),
                ..ClientMetadata::default()
            },
        )
        .await
        .unwrap();
    let active = create(&f.service).await;
    f.service
        .revoke(old.session.id, RevocationReason::LOGOUT)
        .await
        .unwrap();
    f.clock.advance(signed(31 * DAY));
    let erase = Retention::new(30 * DAY, RetentionAction::Erase);
    assert_eq!(f.service.retain_revoked(&erase).await.total(), 1);
    let stored = f.store.get(old.session.id).await.unwrap().unwrap();
    assert_eq!(stored.metadata.ip, None);
    let delete = Retention::new(30 * DAY, RetentionAction::Delete);
    assert_eq!(f.service.retain_revoked(&delete).await.total(), 1);
    assert_eq!(f.store.get(old.session.id).await.unwrap(), None);
    assert!(
        resolves(&f.service, &active).await,
        "active sessions are never taken"
    );
}

#[test]
fn idle_revocation_needs_last_seen_and_a_limit_long_against_its_flush() {
    assert_eq!(
        IdleRevocation::new(90 * DAY, None),
        Err(IdleRevocationError::LastSeenOff)
    );
    let last_seen = LastSeenSettings {
        flush_interval: Duration::from_secs(60),
        ..LastSeenSettings::default()
    };
    // Ten times (60 s + the 60 s minute).
    assert_eq!(
        IdleRevocation::new(Duration::from_secs(1_199), Some(&last_seen)),
        Err(IdleRevocationError::TooShort {
            minimum: Duration::from_secs(1_200)
        })
    );
    assert!(IdleRevocation::new(Duration::from_secs(1_200), Some(&last_seen)).is_ok());
}
