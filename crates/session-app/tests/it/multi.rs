//! Two real `session-app` processes on one PostgreSQL, kept in step by its
//! change log.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
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
    pair_with(database, &[]).await
}

/// A pair whose second instance serves with `b_args`.
async fn pair_with(database: &TestDatabase, b_args: &[&str]) -> (Server, Server) {
    let a = start(database, &[]);
    let b = start(database, b_args);
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
        "at once: a miss waits for B to catch up with the change log"
    );
    assert_eq!(a.revoke(&id).await, 204);
    rejected_within_the_bound(&b, &token).await;
}

/// A compact-cache instance beside a map one: a creation on A resolves on B
/// at once (a consistent read from B's index), B answers the identity alone,
/// and revocations on A, one and all of an account, reach B's index.
#[tokio::test]
async fn a_compact_instance_follows_the_change_log_as_a_map_one_does() {
    let database = TestDatabase::create();
    let (a, b) = pair_with(&database, &["--cache", "compact"]).await;
    let account = Uuid::new_v4();
    let (token, id) = a.create(account).await;
    let (status, body) = b
        .call(
            Method::POST,
            "/v1/sessions/resolve",
            Some(json!({ "token": token })),
        )
        .await;
    assert_eq!(
        (status, body),
        (
            200,
            json!({ "session": { "id": id, "account_id": account } })
        ),
        "at once: a miss waits for B to catch up with the change log"
    );
    assert_eq!(a.revoke(&id).await, 204);
    rejected_within_the_bound(&b, &token).await;

    let tokens: Vec<String> = create_many(&a, account, 20).await;
    for token in &tokens {
        eventually(&b, token, 200).await;
    }
    let (status, _) = a
        .call(
            Method::DELETE,
            &format!("/v1/accounts/{account}/sessions"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    for token in &tokens {
        eventually(&b, token, 401).await;
    }
    assert_eq!(b.metric("session_cache_sessions").await, 0.0);
}

/// Creates `count` sessions of `account` on `server`, one after another.
async fn create_many(server: &Server, account: Uuid, count: usize) -> Vec<String> {
    let mut tokens = Vec::with_capacity(count);
    for _ in 0..count {
        tokens.push(server.create(account).await.0);
    }
    tokens
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
    // Twenty writers at once: each create is one commit, and one at a
    // time they would take most of the test's time.
    let account_id = session_core::AccountId::new(account).unwrap();
    let tokens: Vec<SessionToken> = join_all((0..20).map(|_| async {
        let mut tokens = Vec::new();
        for _ in 0..250 {
            let created = service.create(account_id, ClientMetadata::default());
            tokens.push(created.await.unwrap().token);
        }
        tokens
    }))
    .await
    .into_iter()
    .flatten()
    .collect();
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
    let b = &b;
    join_all(tokens.chunks(250).map(|tokens| async move {
        for token in tokens {
            assert_eq!(b.resolve(token.expose_secret()).await, 401);
        }
    }))
    .await;
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
    third
        .revoke(created.session.id, session_core::RevocationReason::LOGOUT)
        .await
        .unwrap();
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

/// Sends random well-formed tokens to the forward auth at `url` from a few
/// concurrent loops until `stop`; returns how many were answered 401, and
/// how many otherwise.
async fn flood(url: String, stop: Arc<AtomicBool>) -> (u64, u64) {
    let mut loops = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (url, stop) = (url.clone(), Arc::clone(&stop));
        loops.spawn(async move {
            let http = crate::e2e::http_client();
            let (mut refused, mut other) = (0, 0);
            while !stop.load(Ordering::Relaxed) {
                let token = SessionToken::generate();
                let status = http
                    .get(&url)
                    .header("x-session-token", token.expose_secret())
                    .send()
                    .await
                    .expect("forward auth answers")
                    .status();
                if status == 401 {
                    refused += 1;
                } else {
                    other += 1;
                }
            }
            (refused, other)
        });
    }
    let mut total = (0, 0);
    while let Some(answered) = loops.join_next().await {
        let (refused, other) = answered.unwrap();
        total = (total.0 + refused, total.1 + other);
    }
    total
}

/// Creates sessions on A one after another, each resolved on B at once:
/// every one 200, whatever B had applied.
async fn created_on_a_resolve_on_b_at_once(a: &Server, b: &Server, count: usize) {
    for n in 0..count {
        let (token, _) = a.create(Uuid::new_v4()).await;
        assert_eq!(b.resolve(&token).await, 200, "session {n}:\n{}", b.log());
    }
}

/// 1,000 sessions created at full speed on A are each resolved on B at once,
/// all 200: half alone, half while random tokens flood B's forward auth,
/// every one of which is answered 401 (never 503). The flood alone costs B
/// at most 200 reads of the change log a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_logins_resolve_on_another_instance_at_once_through_a_flood() {
    let database = TestDatabase::create();
    let (a, b) = pair(&database).await;
    created_on_a_resolve_on_b_at_once(&a, &b, 500).await;

    let stop = Arc::new(AtomicBool::new(false));
    let flooding = tokio::spawn(flood(b.url("/v1/forward-auth"), Arc::clone(&stop)));
    // The flood alone: misses share reads, at most 200 a second, plus the
    // poll interval's two.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (reads, started) = (
        b.metric("session_change_log_reads_total").await,
        Instant::now(),
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let read = b.metric("session_change_log_reads_total").await - reads;
    let elapsed = started.elapsed().as_secs_f64();
    assert!(
        read <= 202.0 * elapsed + 5.0,
        "{read} log reads in {elapsed:.2} s under the flood"
    );
    created_on_a_resolve_on_b_at_once(&a, &b, 500).await;
    stop.store(true, Ordering::Relaxed);
    let (refused, other) = flooding.await.unwrap();
    assert_eq!(other, 0, "every random token is refused 401");
    assert!(refused > 1_000, "the flood was a flood: {refused}");
    assert_eq!(
        b.metric("session_forward_auths_total{outcome=\"unavailable\"}")
            .await,
        0.0
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

/// Every event after `start` that `server` serves, once it serves `count`
/// (long-polls, each waiting up to a second for more), within the bound.
async fn events_from(server: &Server, start: &str, count: usize) -> Vec<Value> {
    let mut events: Vec<Value> = Vec::new();
    let mut after = start.to_owned();
    let served = until_async(
        "the instance serves every event",
        PROPAGATION_BOUND,
        async || {
            let (status, page) = server
                .call(
                    Method::GET,
                    &format!("/v1/events?wait=1&after={after}"),
                    None,
                )
                .await;
            assert_eq!(status, 200, "{page}");
            events.extend(page["events"].as_array().unwrap().iter().cloned());
            after = page["next"].as_str().unwrap().to_owned();
            events.len() >= count
        },
    )
    .await;
    served.unwrap_or_else(|err| panic!("{err}: {} of {count}", events.len()));
    events
}

/// Two instances that both take writes, at once, serve the same events in
/// the same order, with the same ids: the order is fixed once in the
/// database by whichever instance sequences first.
#[tokio::test]
async fn both_instances_serve_the_same_events_in_the_same_order() {
    let database = TestDatabase::create();
    let (a, b) = pair(&database).await;
    let (_, start) = a.call(Method::GET, "/v1/events", None).await;
    let start = start["next"].as_str().unwrap().to_owned();
    let account = Uuid::new_v4();
    async fn writes(server: &Server, account: Uuid) {
        for _ in 0..10 {
            server.create(account).await;
        }
    }
    tokio::join!(writes(&a, account), writes(&b, account));
    let (status, _) = b
        .call(
            Method::DELETE,
            &format!("/v1/accounts/{account}/sessions?reason=admin"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let on_a = events_from(&a, &start, 40).await;
    let on_b = events_from(&b, &start, 40).await;
    assert_eq!(on_a.len(), 40, "20 created, 20 revoked");
    assert_eq!(on_a, on_b);
    let revoked = on_a
        .iter()
        .filter(|event| event["reason"] == "admin")
        .count();
    assert_eq!(revoked, 20);
}

/// Waits, within a minute, until `check` holds; `what` names it.
async fn within_a_minute(what: &str, check: impl AsyncFnMut() -> bool) {
    until_async(what, Duration::from_secs(60), check)
        .await
        .unwrap_or_else(|err| panic!("{err}"));
}

/// Incident response across a restore: the not-before mark raised through
/// A's API is applied by B; the sweep revokes the old rows with reason
/// `admin`; an older dump restored under both while they run brings back
/// neither the old sessions nor, through the running instances' write-back,
/// a database without the mark, so an instance started afterwards refuses
/// them too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_not_before_mark_survives_a_restore_of_an_older_dump() {
    let database = TestDatabase::create();
    let (a, b) = pair(&database).await;
    let account = Uuid::new_v4();
    let (old_a, old_id) = a.create(account).await;
    let (old_b, _) = b.create(account).await;
    let dump = tokio::task::block_in_place(|| database.dump());

    let (status, raised) = a.call(Method::PUT, "/v1/not-before", Some(json!({}))).await;
    assert_eq!(status, 200, "{raised}");
    crate::e2e::past_the_marks_millisecond(raised["not_before"].as_str().unwrap());
    let (new, _) = a.create(account).await;
    for server in [&a, &b] {
        for token in [&old_a, &old_b] {
            within_a_minute("an old token is refused", async || {
                server.resolve(token).await == 401
            })
            .await;
        }
        assert_eq!(server.resolve(&new).await, 200, "created after the mark");
    }
    within_a_minute("the sweep revokes the old rows", async || {
        let (_, body) = a
            .call(Method::GET, &format!("/v1/sessions/{old_id}"), None)
            .await;
        body["session"]["revocation_reason"] == "admin"
    })
    .await;

    use session_core::port::store::SessionStore as _;
    // On a copy no instance runs against: under A and B, a running
    // instance may write the mark back before any read after the restore.
    let copy = TestDatabase::create();
    tokio::task::block_in_place(|| copy.restore(&dump));
    let restored = PgSessionStore::connect(PgConfig::from_url(copy.url()).unwrap())
        .await
        .unwrap();
    assert!(
        restored.not_before().await.unwrap().mark.is_none(),
        "the dump holds no mark"
    );

    tokio::task::block_in_place(|| database.restore(&dump));
    let store = PgSessionStore::connect(PgConfig::from_url(database.url()).unwrap())
        .await
        .unwrap();
    within_a_minute("a running instance writes the mark back", async || {
        store
            .not_before()
            .await
            .is_ok_and(|stored| stored.mark.is_some())
    })
    .await;
    for server in [&a, &b] {
        server.wait_ready().await;
        for token in [&old_a, &old_b] {
            assert_eq!(server.resolve(token).await, 401, "still refused");
        }
    }

    let c = start(&database, &[]);
    c.wait_ready().await;
    for token in [&old_a, &old_b] {
        assert_eq!(c.resolve(token).await, 401, "a new instance refuses it too");
    }
    let (_, state) = c.call(Method::GET, "/v1/not-before", None).await;
    assert_eq!(state["not_before"], raised["not_before"], "{state}");
}
