//! Two real `session-app` processes on one PostgreSQL, kept in step by its
//! change log.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};
use session_core::{ClientMetadata, MemoryCache, SessionService, SessionToken};
use session_postgres::{PgConfig, PgSessionStore};
use session_test_postgres::TestDatabase;
use session_test_process::until_async;
use uuid::Uuid;

use crate::e2e::{KEY, Options, Server};

/// How long a revocation may take to reach the other instance before the
/// test calls it lost. A correctness bound (it must arrive), far above the
/// milliseconds measured by `cargo xtask bench`.
const PROPAGATION_BOUND: Duration = Duration::from_secs(5);

fn start(database: &TestDatabase, extra: &[&str]) -> Server {
    Server::start(Options {
        database_url: database.url().to_owned(),
        api_key: Some(KEY.to_owned()),
        extra: extra.iter().map(|arg| (*arg).to_owned()).collect(),
        ..Options::default()
    })
}

async fn pair(database: &TestDatabase) -> (Server, Server) {
    let a = start(database, &[]);
    let b = start(database, &[]);
    a.wait_ready().await;
    b.wait_ready().await;
    (a, b)
}

/// Resolves `token` on `server` until it answers `want`, within the bound.
async fn eventually(server: &Server, token: &str, want: u16) {
    let mut status = 0;
    let answered = until_async(
        &format!("the token answers {want}"),
        PROPAGATION_BOUND,
        async || {
            status = server.resolve(token).await;
            status == want
        },
    )
    .await;
    answered.unwrap_or_else(|err| panic!("{err}: it answers {status}"));
}

async fn readiness(server: &Server) -> (u16, Value) {
    server.call(Method::GET, "/readyz", None).await
}

#[tokio::test]
async fn created_on_a_resolves_on_b_and_revoked_on_a_is_rejected_by_b() {
    let database = TestDatabase::create();
    let (a, b) = pair(&database).await;
    let (_, body) = readiness(&b).await;
    let log = &body["checks"]["change_log"];
    assert_eq!(log["status"], "ok", "{body}");
    assert!(log["lag_ms"].as_u64().unwrap() <= 2_000, "{body}");
    assert_eq!(log["max_staleness_ms"], 2_000, "{body}");

    let (token, id) = a.create(Uuid::new_v4()).await;
    assert_eq!(
        b.resolve(&token).await,
        200,
        "at once: a miss reads the store"
    );
    assert_eq!(a.revoke(&id).await, 204);
    rejected_within_the_bound(&b, &token).await;
}

/// The staleness bound an instance states (`--max-staleness`, 2 s by default):
/// once it has passed since a revocation committed, an instance that reports
/// ready must reject the token. A loaded machine may make B lag further, but
/// then B must say so: every 200 past the bound must come with a 503 from
/// `/readyz`.
async fn rejected_within_the_bound(b: &Server, token: &str) {
    const BOUND: Duration = Duration::from_secs(2);
    let committed = Instant::now();
    loop {
        if b.resolve(token).await == 401 {
            return;
        }
        if committed.elapsed() > BOUND {
            let (status, body) = readiness(b).await;
            // Rechecked after the readiness answer: B may have caught up between.
            if b.resolve(token).await == 401 {
                return;
            }
            assert_eq!(
                status,
                503,
                "B accepts a token revoked {:?} ago while reporting ready: {body}",
                committed.elapsed()
            );
        }
        assert!(
            committed.elapsed() < PROPAGATION_BOUND,
            "B never applied the revocation:\n{}",
            b.log()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_revoke_all_of_5000_on_a_is_rejected_by_b_for_every_one() {
    let database = TestDatabase::create();
    let (a, b) = pair(&database).await;
    let account = Uuid::new_v4();
    let store = PgSessionStore::connect(PgConfig::from_url(database.url()).unwrap())
        .await
        .unwrap();
    // Created through the library (a third writer), so the test does not
    // wait on 5,000 HTTP round trips; both services learn of them by the log.
    let service = SessionService::builder(
        std::sync::Arc::new(store),
        std::sync::Arc::new(MemoryCache::new()),
    )
    .build();
    let mut tokens: Vec<SessionToken> = Vec::new();
    for _ in 0..5_000 {
        tokens.push(
            service
                .create(
                    session_core::AccountId::new(account).unwrap(),
                    ClientMetadata::default(),
                )
                .await
                .unwrap()
                .token,
        );
    }
    let last = tokens.last().unwrap().expose_secret().to_owned();
    eventually(&b, &last, 200).await;

    let (status, body) = a
        .call(
            Method::DELETE,
            &format!("/v1/accounts/{account}/sessions"),
            None,
        )
        .await;
    assert_eq!((status, body), (200, json!({ "revoked": 5_000 })));
    eventually(&b, &last, 401).await;
    for token in &tokens {
        assert_eq!(b.resolve(token.expose_secret()).await, 401);
    }
}

#[tokio::test]
async fn a_write_made_through_the_library_by_a_third_process_is_seen_by_both() {
    let database = TestDatabase::create();
    let (a, b) = pair(&database).await;
    let store = PgSessionStore::connect(PgConfig::from_url(database.url()).unwrap())
        .await
        .unwrap();
    let third = SessionService::builder(
        std::sync::Arc::new(store),
        std::sync::Arc::new(MemoryCache::new()),
    )
    .build();
    let created = third
        .create(
            session_core::AccountId::new(Uuid::new_v4()).unwrap(),
            ClientMetadata::default(),
        )
        .await
        .unwrap();
    let token = created.token.expose_secret();
    eventually(&a, token, 200).await;
    eventually(&b, token, 200).await;
    third.revoke(created.session.id).await.unwrap();
    eventually(&a, token, 401).await;
    eventually(&b, token, 401).await;
}

#[tokio::test]
async fn terminated_connections_cost_no_reload_and_a_revocation_in_the_gap_holds() {
    let database = TestDatabase::create();
    let (a, b) = pair(&database).await;
    let (token, id) = a.create(Uuid::new_v4()).await;
    assert_eq!(b.resolve(&token).await, 200);

    // Ends every connection, the listeners' included; the pools reconnect
    // and B resumes reading the log where it stopped.
    let ended = terminate(database.admin_url(), database.name()).await;
    assert!(ended >= 2, "both listeners were ended");
    assert_eq!(a.revoke(&id).await, 204);
    eventually(&b, &token, 401).await;
    b.wait_ready().await;
    assert_eq!(
        b.metric("session_cache_full_loads_total").await,
        1.0,
        "resumed from its cursor, no reload:\n{}",
        b.log()
    );
}

#[tokio::test]
async fn a_flood_of_unknown_tokens_stays_within_the_miss_read_limit() {
    let database = TestDatabase::create();
    let b = start(
        &database,
        &["--miss-reads-per-second", "20", "--miss-burst", "10"],
    );
    b.wait_ready().await;
    let started = Instant::now();
    let (mut invalid, mut busy) = (0.0, 0.0);
    for _ in 0..300 {
        // A token read and not found is invalid; one past the limit was not
        // checked, so the answer is "retry" (503 busy), never a logout.
        match b.resolve(SessionToken::generate().expose_secret()).await {
            401 => invalid += 1.0,
            503 => busy += 1.0,
            other => panic!("resolve answered {other}"),
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let reads = b.metric("session_miss_reads_total").await;
    let rejected = b.metric("session_miss_reads_rejected_total").await;
    assert!(reads >= 10.0, "the burst is read: {reads}");
    assert!(
        reads <= 10.0 + 20.0 * elapsed + 1.0,
        "{reads} reads in {elapsed:.2} s exceed 10 + 20/s"
    );
    assert_eq!(reads + rejected, 300.0);
    assert_eq!(
        (invalid, busy),
        (reads, rejected),
        "401 per read, 503 per refusal"
    );
    assert_eq!(
        b.metric("session_resolves_total{outcome=\"rate_limited\"}")
            .await,
        rejected
    );
    assert_eq!(b.resolve("sess_malformed").await, 401);
    assert_eq!(
        b.metric("session_miss_reads_total").await,
        reads,
        "malformed: no read"
    );
}

/// Ends every other connection to database `name`, as an administrator
/// would, without waiting for them to go.
async fn terminate(admin_url: &str, name: &str) -> usize {
    let (client, connection) = tokio_postgres::connect(admin_url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = $1 AND pid <> pg_backend_pid()",
            &[&name],
        )
        .await
        .unwrap()
        .len()
}
