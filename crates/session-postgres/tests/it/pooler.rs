//! Through PgBouncer 1.18 in transaction pooling mode, which hands each
//! transaction any server session: the contracts, instances that follow
//! each other, many concurrent writers, and wake-ups where LISTEN delivers
//! nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use session_core::port::change_log::{ChangeLog, ChangeLogDecorator};
use session_core::port::store::{SessionStore, StoreDecorator, StoreError};
use session_core::testkit::{account, epoch, session_at};
use session_core::{MemoryCache, NewSession, SessionService};
use session_postgres::{PgConfig, PgSessionStore, Statements};
use session_test_postgres::TestDatabase;

use crate::support::{chain, instance_configured, ready, rejected, within_a_minute};

/// Settings for `database` through PgBouncer: statements per transaction,
/// and, with `direct`, LISTEN and migrations straight to PostgreSQL.
fn through_pgbouncer(database: &TestDatabase, direct: bool) -> PgConfig {
    let config = PgConfig::from_url(&database.through_pgbouncer())
        .unwrap()
        .statements(Statements::PerTransaction);
    if direct {
        config.direct(PgConfig::from_url(database.url()).unwrap())
    } else {
        config
    }
}

/// The store with the database it uses, so the database is dropped with it.
struct Pooled {
    store: PgSessionStore,
    _database: TestDatabase,
}

impl StoreDecorator for Pooled {
    fn inner_store(&self) -> &dyn SessionStore {
        &self.store
    }
}

impl ChangeLogDecorator for Pooled {
    fn inner_log(&self) -> &dyn ChangeLog {
        &self.store
    }
}

async fn pooled_store() -> Pooled {
    let database = TestDatabase::create();
    let store = crate::support::migrated_store(through_pgbouncer(&database, true)).await;
    Pooled {
        store,
        _database: database,
    }
}

mod store {
    session_core::store_contract_tests!(super::pooled_store());
}

mod change_log {
    session_core::change_log_contract_tests!(super::pooled_store());
}

/// Writers at once, each on a store of its own process's pool.
const WRITERS: usize = 64;
/// Creates each writer makes.
const CREATES: usize = 40;

/// 64 writers across two instances' pools, 40 creates each, with PgBouncer
/// giving 8 server sessions to all: every create succeeds, with no
/// statement error, and both instances end with every session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_writers_through_pgbouncer_meet_no_statement_error() {
    let database = TestDatabase::create();
    let url = database.through_pgbouncer();
    let configure = |_: PgConfig| {
        PgConfig::from_url(&url)
            .unwrap()
            .statements(Statements::PerTransaction)
            .pool_size(16)
            .direct(PgConfig::from_url(database.url()).unwrap())
    };
    let a = instance_configured(database.url(), "pooled_a", configure).await;
    let b = instance_configured(database.url(), "pooled_b", configure).await;
    ready(&a).await;
    ready(&b).await;
    let services = [a.service.clone(), b.service.clone()];
    let mut writers = tokio::task::JoinSet::new();
    for writer in 0..WRITERS {
        let service = services[writer % 2].clone();
        writers.spawn(async move {
            let mut created = Vec::new();
            for _ in 0..CREATES {
                match service.create(account(), Default::default()).await {
                    Ok(NewSession { token, .. }) => created.push(token),
                    Err(err) => return Err(format!("{err}: {}", chain(&err))),
                }
            }
            Ok(created)
        });
    }
    let mut tokens = Vec::new();
    let mut failures = Vec::new();
    while let Some(writer) = within_a_minute(writers.join_next()).await {
        match writer.unwrap() {
            Ok(created) => tokens.extend(created),
            Err(err) => failures.push(err),
        }
    }
    assert!(
        failures.is_empty(),
        "{} writers failed: {failures:?}",
        failures.len()
    );
    assert_eq!(tokens.len(), WRITERS * CREATES);
    for instance in [&a, &b] {
        for token in &tokens {
            within_a_minute(async {
                while instance
                    .service
                    .resolve(token.expose_secret())
                    .await
                    .is_err()
                {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
            .await;
        }
    }
}

/// Named statements cached per connection, through a transaction pooler,
/// fail as soon as two transactions of one connection reach different
/// server sessions; the error says what is wrong and which setting fixes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_statements_through_pgbouncer_fail_naming_the_setting() {
    let database = TestDatabase::create();
    let direct = crate::support::migrated_store(PgConfig::from_url(database.url()).unwrap()).await;
    drop(direct);
    let store = Arc::new(
        PgSessionStore::connect(
            PgConfig::from_url(&database.through_pgbouncer())
                .unwrap()
                .pool_size(16),
        )
        .await
        .unwrap(),
    );
    let mut writers = tokio::task::JoinSet::new();
    for _ in 0..WRITERS {
        let store = Arc::clone(&store);
        writers.spawn(async move {
            let mut errors = Vec::new();
            for _ in 0..CREATES {
                let (_, session) = session_at(account(), epoch());
                if let Err(err) = store.insert(&session).await {
                    errors.push(chain(&err));
                }
            }
            errors
        });
    }
    let mut errors = Vec::new();
    while let Some(writer) = within_a_minute(writers.join_next()).await {
        errors.extend(writer.unwrap());
    }
    assert!(
        errors
            .iter()
            .any(|err| err.contains("--pg-statements per-transaction")),
        "{} errors: {:?}",
        errors.len(),
        errors.first()
    );
}

/// Two instances through PgBouncer follow each other: with a direct URL
/// they are woken at once; without one, LISTEN delivers nothing, so they
/// say they poll, and still converge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_through_pgbouncer_follow_each_other() {
    for direct in [true, false] {
        let database = TestDatabase::create();
        let configure = |config: PgConfig| {
            through_pgbouncer(&database, direct)
                .connect_timeout(Duration::from_secs(1))
                .checkout_timeout(Duration::from_secs(2))
                .change_log_heartbeat(config_heartbeat(&config))
        };
        let a = instance_configured(database.url(), "pooled_a", configure).await;
        let b = instance_configured(database.url(), "pooled_b", configure).await;
        ready(&a).await;
        ready(&b).await;
        within_a_minute(async {
            while a.service.status().wake_ups_listening != direct
                || b.service.status().wake_ups_listening != direct
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;

        let created = a
            .service
            .create(account(), Default::default())
            .await
            .unwrap();
        within_a_minute(async {
            while b
                .service
                .resolve(created.token.expose_secret())
                .await
                .is_err()
            {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        b.service
            .revoke(created.session.id, session_core::RevocationReason::LOGOUT)
            .await
            .unwrap();
        within_a_minute(async {
            while !rejected(&a, &created.token).await {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
    }
}

/// The heartbeat the support's instances use, kept.
fn config_heartbeat(_config: &PgConfig) -> Duration {
    PgConfig::DEFAULT_CHANGE_LOG_HEARTBEAT
}

/// LISTEN through PgBouncer succeeds and delivers nothing: the store's
/// probe finds it within a second or two, and says what to set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listening_through_pgbouncer_without_a_direct_url_is_refused_by_the_probe() {
    let database = TestDatabase::create();
    let store = crate::support::migrated_store(through_pgbouncer(&database, false)).await;
    let started = Instant::now();
    let err = within_a_minute(store.wake_ups())
        .await
        .err()
        .expect("LISTEN through a transaction pooler");
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(chain(&err).contains("--pg-direct-url"), "{}", chain(&err));

    let direct = crate::support::migrated_store(through_pgbouncer(&database, true)).await;
    let mut wake_ups = within_a_minute(direct.wake_ups()).await.unwrap();
    let (_, session) = session_at(account(), epoch());
    direct.insert(&session).await.unwrap();
    within_a_minute(wake_ups.next()).await.unwrap();
}

/// Two processes migrate one database through PgBouncer at once, with no
/// direct URL: the lock and the schema's path last as long as the one
/// transaction they are taken in, so both succeed and each migration runs once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrating_through_pgbouncer_without_a_direct_url_works_from_two_stores_at_once() {
    let database = TestDatabase::create();
    let a = PgSessionStore::connect(through_pgbouncer(&database, false))
        .await
        .unwrap();
    let b = PgSessionStore::connect(through_pgbouncer(&database, false))
        .await
        .unwrap();
    let (applied_a, applied_b) = tokio::join!(a.migrate(), b.migrate());
    let (applied_a, applied_b) = (applied_a.unwrap(), applied_b.unwrap());
    assert!(
        applied_a.is_empty() != applied_b.is_empty(),
        "one applied everything: {applied_a:?} / {applied_b:?}"
    );
    a.check_schema().await.unwrap();
    let service = SessionService::builder(Arc::new(a), Arc::new(MemoryCache::new())).build();
    let _tasks = service.start();
    within_a_minute(async {
        while !service.status().cache_ready() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    service.create(account(), Default::default()).await.unwrap();
}
