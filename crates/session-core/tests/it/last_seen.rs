//! Last-seen activity: coarse marks on resolve, batched flushes, a bounded
//! queue, and several services recording the same session.

use std::sync::Arc;

use session_core::config::LastSeenSettings;
use session_core::memory::MemoryStore;
use session_core::port::clock::ManualClock;
use session_core::port::store::{SeenAt, SessionStore};
use session_core::testkit::{CountingStore, account, epoch};
use session_core::{ClientMetadata, MemoryCache, NewSession, SessionService};
use time::{Duration, OffsetDateTime};

struct Fixture {
    store: Arc<CountingStore<MemoryStore>>,
    memory: Arc<MemoryStore>,
    clock: Arc<ManualClock>,
    service: SessionService,
}

async fn fixture(settings: Option<LastSeenSettings>) -> Fixture {
    let memory = Arc::new(MemoryStore::default());
    let store = Arc::new(CountingStore::new(Arc::clone(&memory)));
    let clock = Arc::new(ManualClock::new(epoch()));
    let mut builder =
        SessionService::builder(store.clone(), Arc::new(MemoryCache::new())).clock(clock.clone());
    if let Some(settings) = settings {
        builder = builder.last_seen(settings);
    }
    let service = builder.build();
    service.warm().await.unwrap();
    Fixture {
        store,
        memory,
        clock,
        service,
    }
}

async fn create(service: &SessionService) -> NewSession {
    service
        .create(account(), ClientMetadata::default())
        .await
        .unwrap()
}

/// The start of the minute `at` is in: what a mark records.
fn minute_of(at: OffsetDateTime) -> OffsetDateTime {
    at.replace_second(0).unwrap().replace_nanosecond(0).unwrap()
}

#[tokio::test]
async fn resolves_within_a_minute_make_one_mark_and_the_next_minute_another() {
    let f = fixture(Some(LastSeenSettings::default())).await;
    let new = create(&f.service).await;
    for _ in 0..100 {
        f.service.resolve(new.token.expose_secret()).await.unwrap();
    }
    assert_eq!(f.service.flush_last_seen().await.unwrap(), 1);
    let first = SeenAt {
        id: new.session.id,
        at: minute_of(epoch()),
    };
    assert_eq!(f.store.last_seen_batches(), vec![vec![first]]);

    // Later in the same minute: already marked, nothing to write.
    f.clock.advance(Duration::seconds(30));
    f.service.flush_last_seen().await.unwrap();
    f.service.resolve(new.token.expose_secret()).await.unwrap();
    assert_eq!(f.service.flush_last_seen().await.unwrap(), 0);
    assert_eq!(f.store.last_seen_batches().len(), 1);

    // The next minute: one more mark.
    f.clock.advance(Duration::seconds(60));
    f.service.flush_last_seen().await.unwrap();
    for _ in 0..10 {
        f.service.resolve(new.token.expose_secret()).await.unwrap();
    }
    assert_eq!(f.service.flush_last_seen().await.unwrap(), 1);
    let second = SeenAt {
        id: new.session.id,
        at: minute_of(epoch() + Duration::seconds(90)),
    };
    assert_eq!(f.store.last_seen_batches()[1], vec![second]);
    assert_eq!(
        f.service.last_seen(&[new.session.id]).await.unwrap(),
        vec![second]
    );
    assert_eq!(f.service.status().last_seen.unwrap().flushed, 2);
}

#[tokio::test]
async fn marks_of_many_sessions_are_written_in_one_store_call_sorted_by_id() {
    let f = fixture(Some(LastSeenSettings::default())).await;
    let mut ids = Vec::new();
    for _ in 0..25 {
        let new = create(&f.service).await;
        f.service.resolve(new.token.expose_secret()).await.unwrap();
        f.service.resolve(new.token.expose_secret()).await.unwrap();
        ids.push(new.session.id);
    }
    assert_eq!(f.service.flush_last_seen().await.unwrap(), 25);
    let batches = f.store.last_seen_batches();
    assert_eq!(batches.len(), 1, "one store call for the batch");
    let written: Vec<_> = batches[0].iter().map(|mark| mark.id).collect();
    ids.sort();
    assert_eq!(written, ids, "every session once, in id order");
}

#[tokio::test]
async fn a_full_queue_drops_and_counts_while_resolves_still_answer() {
    let settings = LastSeenSettings {
        queue_capacity: 3,
        ..LastSeenSettings::default()
    };
    let f = fixture(Some(settings)).await;
    let mut sessions = Vec::new();
    for _ in 0..5 {
        sessions.push(create(&f.service).await);
    }
    for new in &sessions {
        assert_eq!(
            f.service.resolve(new.token.expose_secret()).await.unwrap(),
            session_core::SessionIdentity::from(&*new.session)
        );
    }
    let stats = f.service.status().last_seen.unwrap();
    assert_eq!(stats.dropped, 2);
    assert_eq!(f.service.flush_last_seen().await.unwrap(), 3);
    assert_eq!(f.service.status().last_seen.unwrap().flushed, 3);
}

#[tokio::test]
async fn a_failed_flush_keeps_its_batch_for_the_next() {
    let f = fixture(Some(LastSeenSettings::default())).await;
    let new = create(&f.service).await;
    f.service.resolve(new.token.expose_secret()).await.unwrap();
    f.memory.set_unavailable(true);
    assert!(f.service.flush_last_seen().await.is_err());
    f.memory.set_unavailable(false);
    assert_eq!(f.service.flush_last_seen().await.unwrap(), 1);
    let stats = f.service.status().last_seen.unwrap();
    assert_eq!(
        (stats.flush_failures, stats.flushed, stats.dropped),
        (1, 1, 0)
    );
    assert_eq!(
        f.service.last_seen(&[new.session.id]).await.unwrap().len(),
        1
    );
}

#[tokio::test]
async fn off_by_default_marks_nothing_and_reads_nothing() {
    let f = fixture(None).await;
    let new = create(&f.service).await;
    f.service.resolve(new.token.expose_secret()).await.unwrap();
    assert_eq!(f.service.flush_last_seen().await.unwrap(), 0);
    assert!(f.store.last_seen_batches().is_empty());
    assert!(
        f.service
            .last_seen(&[new.session.id])
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(f.store.last_seen_reads(), 0);
    assert_eq!(f.service.status().last_seen, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_services_flushing_the_same_session_keep_the_latest_time() {
    let store = Arc::new(MemoryStore::default());
    let service_at = |at: OffsetDateTime| {
        SessionService::builder(store.clone(), Arc::new(MemoryCache::new()))
            .clock(Arc::new(ManualClock::new(at)))
            .change_log(store.clone())
            .last_seen(LastSeenSettings::default())
            .build()
    };
    let late = service_at(epoch() + Duration::minutes(10));
    let early = service_at(epoch());
    let _tasks = (late.start(), early.start());
    while !(late.status().cache_ready() && early.status().cache_ready()) {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    let new = create(&late).await;
    late.resolve(new.token.expose_secret()).await.unwrap();
    // The other instance finds it (in its cache, or once it has caught up
    // with the change log), and marks it too.
    early.resolve(new.token.expose_secret()).await.unwrap();
    let (a, b) = tokio::join!(late.flush_last_seen(), early.flush_last_seen());
    assert_eq!((a.unwrap(), b.unwrap()), (1, 1));
    // The early instance flushes again after: the time does not move back.
    early.resolve(new.token.expose_secret()).await.unwrap();
    early.flush_last_seen().await.unwrap();
    let latest = minute_of(epoch() + Duration::minutes(10));
    assert_eq!(
        store.last_seen(&[new.session.id]).await.unwrap(),
        vec![SeenAt {
            id: new.session.id,
            at: latest
        }]
    );
}
