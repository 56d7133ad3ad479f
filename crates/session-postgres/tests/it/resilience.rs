//! A database that goes away: killed connections, a stopped server, a server
//! that never answers.

use std::future::Future;
use std::time::Duration;

use session_core::port::store::{SessionStore, StoreError};
use session_core::testkit::{account, epoch, session_at};
use session_postgres::{PgConfig, PgSessionStore, Statements};
use session_test_postgres::{StallingProxy, TestDatabase, TestServer};

use crate::support::{chain, migrated_store, sql_client};

/// Fails the test instead of hanging it; not a measure of speed.
async fn within_a_minute<T>(operation: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), operation)
        .await
        .expect("the store hung instead of answering")
}

fn assert_unavailable<T: std::fmt::Debug>(result: Result<T, StoreError>, operation: &str) {
    match result {
        Err(err @ StoreError::Unavailable(_)) => assert!(err.is_retryable()),
        other => panic!("{operation}: expected unavailable, got {other:?}"),
    }
}

/// A create and a revoke of `kept` on `instance` both fail as unavailable
/// (the messages name `context`).
async fn writes_are_unavailable(
    instance: &crate::support::Instance,
    kept: session_core::SessionId,
    context: &str,
) {
    let created = within_a_minute(instance.service.create(account(), Default::default())).await;
    assert!(
        matches!(
            created,
            Err(session_core::Error::Store(StoreError::Unavailable(_)))
        ),
        "{context}: {created:?}"
    );
    let revoked = within_a_minute(
        instance
            .service
            .revoke(kept, session_core::RevocationReason::LOGOUT),
    )
    .await;
    assert!(
        matches!(
            revoked,
            Err(session_core::Error::Store(StoreError::Unavailable(_)))
        ),
        "{context}: {revoked:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_the_server_killed_is_replaced() {
    let database = TestDatabase::create();
    // One connection, so the next call must get the killed one back or a new one.
    let store = migrated_store(PgConfig::from_url(database.url()).unwrap().pool_size(1)).await;
    let (_, session) = session_at(account(), epoch());
    store.insert(&session).await.unwrap();
    // The migration's connection of its own closes in the background: wait
    // until the pool's is the only one left, so it is the one killed.
    let admin = sql_client(database.admin_url()).await;
    session_test_process::until_async(
        "only the pooled connection is open",
        Duration::from_secs(60),
        async || {
            let open: i64 = admin
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = $1",
                    &[&database.name()],
                )
                .await
                .unwrap()
                .get(0);
            open == 1
        },
    )
    .await
    .unwrap();

    assert_eq!(database.terminate_connections(), 1, "the pooled connection");
    assert_eq!(store.get(session.id).await.unwrap(), Some(session.clone()));
    store
        .revoke(
            session.id,
            epoch(),
            session_core::RevocationReason::LOGOUT,
            None,
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_server_is_unavailable_until_it_is_back() {
    let server = TestServer::start();
    let database = server.create_database();
    let config = PgConfig::from_url(database.url())
        .unwrap()
        .pool_size(3)
        .connect_timeout(Duration::from_secs(2))
        .checkout_timeout(Duration::from_secs(4));
    let store = migrated_store(config).await;
    let (_, before) = session_at(account(), epoch());
    store.insert(&before).await.unwrap();

    server.stop();
    let (_, during) = session_at(account(), epoch());
    within_a_minute(async {
        assert_unavailable(store.insert(&during).await, "insert");
        assert_unavailable(store.get(before.id).await, "get");
        assert_unavailable(
            store.find_active_by_hash(&before.token_hash).await,
            "find_active_by_hash",
        );
        assert_unavailable(
            store
                .revoke(
                    before.id,
                    epoch(),
                    session_core::RevocationReason::LOGOUT,
                    None,
                )
                .await,
            "revoke",
        );
        assert_unavailable(store.active_page(None, 10).await, "active_page");
        assert_unavailable(store.health_check().await, "health_check");
    })
    .await;

    server.start_again();
    within_a_minute(async {
        assert_eq!(store.get(before.id).await.unwrap(), Some(before.clone()));
        assert_eq!(
            store.get(during.id).await.unwrap(),
            None,
            "nothing was written"
        );
        store.insert(&during).await.unwrap();
        store.health_check().await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_listening_is_unavailable() {
    let port = session_test_process::free_port().unwrap();
    let config = PgConfig::from_url(&format!("postgres://postgres@127.0.0.1:{port}/none")).unwrap();
    let err = within_a_minute(PgSessionStore::connect(config))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "got {err:?}");
    assert!(chain(&err).contains("refused"), "says why: {}", chain(&err));
}

/// A server that accepts the connection and then says nothing (a hung host, a
/// black-holing proxy) costs the connect timeout, not forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_never_answers_is_unavailable_after_the_connect_timeout() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let config = PgConfig::from_url(&format!("postgres://postgres@127.0.0.1:{port}/none"))
        .unwrap()
        .connect_timeout(Duration::from_millis(300))
        .checkout_timeout(Duration::from_secs(1));
    let err = within_a_minute(PgSessionStore::connect(config))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "got {err:?}");
    silent.abort();
}

/// The pool status shows every connection in use and the calls waiting
/// while the database holds them up, and both clear once they finish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_status_shows_connections_in_use_and_calls_waiting() {
    let database = TestDatabase::create();
    let store = std::sync::Arc::new(
        migrated_store(
            PgConfig::from_url(database.url())
                .unwrap()
                .pool_size(2)
                .checkout_timeout(Duration::from_secs(60)),
        )
        .await,
    );
    let idle = store.pool_status();
    assert_eq!((idle.max, idle.in_use, idle.waiting), (2, 0, 0), "{idle:?}");

    // Another client locks the table: reads hold their connections until
    // it lets go, and a third read waits for a connection.
    let (mut other, connection) = tokio_postgres::connect(database.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let locking = other.transaction().await.unwrap();
    locking
        .batch_execute("LOCK TABLE session.sessions IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let (_, session) = session_at(account(), epoch());
    let reads: Vec<_> = (0..3)
        .map(|_| {
            let store = std::sync::Arc::clone(&store);
            let hash = session.token_hash;
            tokio::spawn(async move { store.find_active_by_hash(&hash).await })
        })
        .collect();
    let mut polls = 0;
    loop {
        let status = store.pool_status();
        if (status.in_use, status.waiting) == (2, 1) {
            break;
        }
        polls += 1;
        assert!(polls < 30_000, "the reads never queued: {status:?}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    locking.rollback().await.unwrap();
    for read in reads {
        assert_eq!(within_a_minute(read).await.unwrap().unwrap(), None);
    }
    let status = store.pool_status();
    assert_eq!((status.in_use, status.waiting), (0, 0), "{status:?}");
}

/// Another session holds a lock on the sessions table that writes wait
/// for: creates and revokes fail within the lock timeout, as unavailable,
/// and leave the cache as it was; reads and resolves go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_held_on_the_sessions_table_fails_writes_within_the_lock_timeout() {
    for statements in [Statements::Cached, Statements::PerTransaction] {
        let database = TestDatabase::create();
        let url = match statements {
            Statements::PerTransaction => database.through_pgbouncer(),
            _ => database.url().to_owned(),
        };
        let instance = crate::support::instance_configured(database.url(), "locked", |_| {
            PgConfig::from_url(&url)
                .unwrap()
                .statements(statements)
                .direct(PgConfig::from_url(database.url()).unwrap())
                .lock_timeout(Duration::from_millis(300))
        })
        .await;
        crate::support::ready(&instance).await;
        let kept = instance
            .service
            .create(account(), Default::default())
            .await
            .unwrap();

        let locker = crate::support::sql_client(database.url()).await;
        locker
            .batch_execute("BEGIN; LOCK TABLE session.sessions IN EXCLUSIVE MODE")
            .await
            .unwrap();
        let started = std::time::Instant::now();
        writes_are_unavailable(&instance, kept.session.id, &statements.to_string()).await;
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{statements}: both failed within their lock timeouts, not {:?}",
            started.elapsed()
        );
        assert_eq!(instance.service.status().cached_sessions, 1);
        instance
            .service
            .resolve(kept.token.expose_secret())
            .await
            .expect("the session whose revoke failed still resolves");
        locker.batch_execute("ROLLBACK").await.unwrap();
        instance
            .service
            .revoke(kept.session.id, session_core::RevocationReason::LOGOUT)
            .await
            .unwrap();
    }
}

/// A network that stops forwarding both ways without closing (a host that
/// froze): writes and reads fail within their bound instead of waiting for
/// TCP, resolves of cached sessions go on, and once it forwards again the
/// same store works, its pool renewed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_stops_answering_fails_calls_within_their_bound_and_recovers() {
    let database = TestDatabase::create();
    let proxy = StallingProxy::start(port_of(database.url()));
    let through_proxy = database.url().replacen(
        &format!(":{}/", port_of(database.url())),
        &format!(":{}/", proxy.port()),
        1,
    );
    let instance = crate::support::instance_configured(&through_proxy, "stalled", |config| {
        config
            .write_timeout(Duration::from_millis(500))
            .read_timeout(Duration::from_millis(500))
            .connect_timeout(Duration::from_millis(500))
            .checkout_timeout(Duration::from_secs(1))
    })
    .await;
    crate::support::ready(&instance).await;
    let kept = instance
        .service
        .create(account(), Default::default())
        .await
        .unwrap();

    proxy.stall();
    for _ in 0..3 {
        let started = std::time::Instant::now();
        writes_are_unavailable(&instance, kept.session.id, "stalled").await;
        assert_unavailable(
            within_a_minute(instance.store.health_check()).await,
            "health_check",
        );
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "three calls within their bounds, not {:?}",
            started.elapsed()
        );
        instance
            .service
            .resolve(kept.token.expose_secret())
            .await
            .expect("a cached session resolves while the database hangs");
    }
    proxy.resume();
    within_a_minute(async {
        while instance.store.health_check().await.is_err() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    instance
        .service
        .create(account(), Default::default())
        .await
        .unwrap();
    instance
        .service
        .revoke(kept.session.id, session_core::RevocationReason::LOGOUT)
        .await
        .unwrap();
}

/// The port of a URL's only host.
fn port_of(url: &str) -> u16 {
    let config: tokio_postgres::Config = url.parse().unwrap();
    config.get_ports()[0]
}
