//! The guard that owns the background tasks: what `start` runs, that
//! dropping the guard stops it, and that `shutdown` flushes last-seen
//! marks. Time is paused, so polls, backoff and flush intervals pass
//! instantly and only when every task waits on a timer.

use std::sync::Arc;
use std::time::Duration;

use session_core::config::LastSeenSettings;
use session_core::memory::MemoryStore;
use session_core::port::cache::SessionCache;
use session_core::port::clock::ManualClock;
use session_core::port::store::{SeenAt, SessionStore};
use session_core::testkit::{CountingStore, account, epoch};
use session_core::{ClientMetadata, MemoryCache, NewSession, SessionService};

/// A service following `store`'s change log, and its cache.
fn follower(store: &Arc<MemoryStore>) -> (SessionService, Arc<MemoryCache>) {
    let cache = Arc::new(MemoryCache::new());
    let service = SessionService::builder(store.clone(), cache.clone())
        .change_log(store.clone())
        .clock(Arc::new(ManualClock::new(epoch())))
        .build();
    (service, cache)
}

/// Polls until `condition` holds. Time is paused, so each pause only lets
/// other tasks (and their timers) run; the bound is on polls, not on time.
async fn until(mut condition: impl FnMut() -> bool, what: &str) {
    for _ in 0..10_000 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("never happened: {what}");
}

async fn create(service: &SessionService) -> NewSession {
    service
        .create(account(), ClientMetadata::default())
        .await
        .unwrap()
}

/// Without a change log, `start` warms, retrying while the store is down.
#[tokio::test(start_paused = true)]
async fn start_warms_the_cache_retrying_while_the_store_is_down() {
    let store = Arc::new(MemoryStore::new());
    let service = SessionService::builder(store.clone(), Arc::new(MemoryCache::new())).build();
    store.set_unavailable(true);
    let _tasks = service.start();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(!service.status().cache_warm, "the store is down");
    store.set_unavailable(false);
    until(|| service.status().cache_warm, "the retried warm succeeds").await;
}

/// Two followers of one store; the writer is a third service. Once B's
/// guard is dropped, B applies nothing more, while C, whose guard lives,
/// applies every change: the drop, not the timing, is what stopped B.
#[tokio::test(start_paused = true)]
async fn dropping_the_guard_stops_following_the_change_log() {
    let store = Arc::new(MemoryStore::new());
    let (writer, _) = follower(&store);
    let (b, b_cache) = follower(&store);
    let (c, c_cache) = follower(&store);
    let writer_tasks = writer.start();
    let b_tasks = b.start();
    let c_tasks = c.start();

    let first = create(&writer).await;
    until(
        || b_cache.len() == 1 && c_cache.len() == 1,
        "both follow while their guards live",
    )
    .await;
    let applied = b.status().change_log_stats.changes_applied;

    drop(b_tasks);
    writer
        .revoke(first.session.id, session_core::RevocationReason::LOGOUT)
        .await
        .unwrap();
    let second = create(&writer).await;
    until(
        || {
            c_cache.get(&second.session.token_hash).is_some()
                && c_cache.get(&first.session.token_hash).is_none()
        },
        "C applies both changes",
    )
    .await;
    // Many poll intervals more, for a follower that was merely slower.
    tokio::time::sleep(Duration::from_secs(30)).await;

    assert!(
        b_cache.get(&first.session.token_hash).is_some(),
        "B never applied the revocation"
    );
    assert!(
        b_cache.get(&second.session.token_hash).is_none(),
        "B never applied the creation"
    );
    assert_eq!(b.status().change_log_stats.changes_applied, applied);
    drop((writer_tasks, c_tasks));
}

struct LastSeen {
    store: Arc<CountingStore<MemoryStore>>,
    service: SessionService,
}

/// A warm service with last-seen activity on, flushing every 10 s, with a
/// session resolved once: one mark waits for the next flush.
async fn one_pending_mark() -> (LastSeen, NewSession) {
    let store = Arc::new(CountingStore::new(Arc::new(MemoryStore::new())));
    let service = SessionService::builder(store.clone(), Arc::new(MemoryCache::new()))
        .clock(Arc::new(ManualClock::new(epoch())))
        .last_seen(LastSeenSettings {
            flush_interval: Duration::from_secs(10),
            ..LastSeenSettings::default()
        })
        .build();
    service.warm().await.unwrap();
    let new = create(&service).await;
    service.resolve(new.token.expose_secret()).await.unwrap();
    (LastSeen { store, service }, new)
}

fn seen_at_epoch(new: &NewSession) -> SeenAt {
    SeenAt {
        id: new.session.id,
        at: epoch()
            .replace_second(0)
            .unwrap()
            .replace_nanosecond(0)
            .unwrap(),
    }
}

/// While the guard lives, the marks are written every flush interval.
#[tokio::test(start_paused = true)]
async fn the_guard_flushes_marks_every_flush_interval() {
    let (f, new) = one_pending_mark().await;
    let _tasks = f.service.start();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(f.store.last_seen_batches().is_empty(), "not yet due");
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(f.store.last_seen_batches(), vec![vec![seen_at_epoch(&new)]]);
}

/// `shutdown` writes the marks made since the last flush, once, without
/// waiting for the interval.
#[tokio::test(start_paused = true)]
async fn shutdown_flushes_the_pending_marks() {
    let (f, new) = one_pending_mark().await;
    let tasks = f.service.start();
    assert!(f.store.last_seen_batches().is_empty(), "not yet due");
    assert_eq!(tasks.shutdown().await.unwrap(), 1);
    assert_eq!(f.store.last_seen_batches(), vec![vec![seen_at_epoch(&new)]]);
    assert_eq!(
        f.store.last_seen(&[new.session.id]).await.unwrap(),
        vec![seen_at_epoch(&new)]
    );
    // Stopped: a later mark waits for an explicit flush.
    let later = create(&f.service).await;
    f.service
        .resolve(later.token.expose_secret())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(f.store.last_seen_batches().len(), 1);
    assert_eq!(f.service.flush_last_seen().await.unwrap(), 1);
}

/// Dropping the guard stops the flushes too; the pending marks stay
/// pending (a crash would lose them; `shutdown` is the clean stop).
#[tokio::test(start_paused = true)]
async fn dropping_the_guard_stops_the_flushes() {
    let (f, _new) = one_pending_mark().await;
    drop(f.service.start());
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(f.store.last_seen_batches().is_empty());
    assert_eq!(f.service.flush_last_seen().await.unwrap(), 1);
}
