//! Last-seen activity on PostgreSQL: several instances flushing the same
//! sessions, and activity leaving with its session.

use std::sync::Arc;

use session_core::config::LastSeenSettings;
use session_core::port::clock::ManualClock;
use session_core::port::store::{SeenAt, SessionStore};
use session_core::testkit::{account, epoch, session_at};
use session_core::{BackgroundTasks, ClientMetadata, MemoryCache, SessionService};
use session_postgres::PgConfig;
use session_test_postgres::TestDatabase;
use time::{Duration, OffsetDateTime};

use crate::support::{migrated_store, sql_client, with_param};

/// One instance: its own store (pool) on the database, its own clock.
/// It follows the change log (a miss waits for it) for as long as the
/// returned tasks live; they never flush on their own during a test.
async fn instance(
    database: &TestDatabase,
    name: &str,
    clock: Arc<ManualClock>,
) -> (SessionService, BackgroundTasks) {
    let url = with_param(database.url(), &format!("application_name={name}"));
    let store = Arc::new(migrated_store(PgConfig::from_url(&url).unwrap()).await);
    let service = SessionService::builder(store.clone(), Arc::new(MemoryCache::new()))
        .change_log(store)
        .clock(clock)
        .last_seen(LastSeenSettings {
            flush_interval: std::time::Duration::from_secs(3_600),
            ..LastSeenSettings::default()
        })
        .build();
    let tasks = service.start();
    while !service.status().cache_ready() {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    (service, tasks)
}

fn minute_of(at: OffsetDateTime) -> OffsetDateTime {
    at.replace_second(0).unwrap().replace_nanosecond(0).unwrap()
}

/// Two instances resolve the same sessions, each at its own time, and flush
/// at once, round after round: no flush fails (no deadlock, no conflict),
/// and each session ends with the latest time either recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_flushing_the_same_sessions_keep_the_latest_time() {
    const SESSIONS: usize = 50;
    const ROUNDS: i64 = 5;
    let database = TestDatabase::create();
    let clock_a = Arc::new(ManualClock::new(epoch()));
    let clock_b = Arc::new(ManualClock::new(epoch()));
    let (a, _a_tasks) = instance(&database, "instance_a", clock_a.clone()).await;
    let (b, _b_tasks) = instance(&database, "instance_b", clock_b.clone()).await;
    let mut created = Vec::new();
    for _ in 0..SESSIONS {
        created.push(
            a.create(account(), ClientMetadata::default())
                .await
                .unwrap(),
        );
    }
    for round in 0..ROUNDS {
        // A is ahead of B in even rounds and behind in odd ones.
        let (ahead, behind) = if round % 2 == 0 {
            ((&a, &clock_a), (&b, &clock_b))
        } else {
            ((&b, &clock_b), (&a, &clock_a))
        };
        ahead.1.set(epoch() + Duration::minutes(round * 10 + 5));
        behind.1.set(epoch() + Duration::minutes(round * 10));
        a.flush_last_seen().await.unwrap();
        b.flush_last_seen().await.unwrap();
        for new in &created {
            a.resolve(new.token.expose_secret()).await.unwrap();
            // B may not have applied A's creations yet: a miss waits for the log.
            b.resolve(new.token.expose_secret()).await.unwrap();
        }
        if round < ROUNDS - 1 {
            let (flushed_a, flushed_b) = tokio::join!(a.flush_last_seen(), b.flush_last_seen());
            assert_eq!(flushed_a.unwrap(), SESSIONS, "round {round}");
            assert_eq!(flushed_b.unwrap(), SESSIONS, "round {round}");
        } else {
            // The last round in a known order: the instance behind writes last.
            assert_eq!(ahead.0.flush_last_seen().await.unwrap(), SESSIONS);
            assert_eq!(behind.0.flush_last_seen().await.unwrap(), SESSIONS);
        }
    }
    let ids: Vec<_> = created.iter().map(|new| new.session.id).collect();
    let seen = a.last_seen(&ids).await.unwrap();
    assert_eq!(seen.len(), SESSIONS);
    let latest = minute_of(epoch() + Duration::minutes((ROUNDS - 1) * 10 + 5));
    assert!(seen.iter().all(|mark| mark.at == latest), "{seen:?}");
    assert_eq!(a.status().last_seen.unwrap().flush_failures, 0);
    assert_eq!(b.status().last_seen.unwrap().flush_failures, 0);
}

/// A session deleted or truncated by other SQL takes its activity with it,
/// and a truncate of the sessions table still works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activity_leaves_with_its_session() {
    let database = TestDatabase::create();
    let store = migrated_store(PgConfig::from_url(database.url()).unwrap()).await;
    let (_, deleted) = session_at(account(), epoch());
    let (_, truncated) = session_at(account(), epoch());
    store.insert(&deleted).await.unwrap();
    store.insert(&truncated).await.unwrap();
    let mut seen = vec![
        SeenAt {
            id: deleted.id,
            at: epoch(),
        },
        SeenAt {
            id: truncated.id,
            at: epoch(),
        },
    ];
    seen.sort_by_key(|mark| mark.id);
    store.record_last_seen(&seen).await.unwrap();
    let sql = sql_client(database.url()).await;
    assert_eq!(rows(&sql).await, 2);
    sql.execute(
        "DELETE FROM session.sessions WHERE id = $1::text::uuid",
        &[&deleted.id.as_uuid().to_string()],
    )
    .await
    .unwrap();
    assert_eq!(rows(&sql).await, 1);
    assert!(store.last_seen(&[deleted.id]).await.unwrap().is_empty());
    sql.batch_execute("TRUNCATE session.sessions")
        .await
        .unwrap();
    assert_eq!(rows(&sql).await, 0);
}

async fn rows(sql: &tokio_postgres::Client) -> i64 {
    sql.query_one("SELECT count(*) FROM session.session_activity", &[])
        .await
        .unwrap()
        .get(0)
}
