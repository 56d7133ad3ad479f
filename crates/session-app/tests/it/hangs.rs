//! PostgreSQL as operators run it, on the real binary: a database that
//! hangs instead of failing, a lock other SQL holds on the sessions table,
//! and PgBouncer in transaction pooling mode in front of it.

use std::future::Future;
use std::time::{Duration, Instant};

use serde_json::Value;
use session_test_postgres::{StallingProxy, TestDatabase};
use uuid::Uuid;

use crate::e2e::{KEY, Options, Server};

/// Every request's own bound: a request that takes this long has hung.
const HUNG: Duration = Duration::from_secs(15);

/// A write the store cannot do is answered within this: 1 s statement,
/// connect and checkout timeouts, plus the second the store waits past a
/// statement's timeout. A bound on hanging, not a speed figure.
const FAIL_FAST: Duration = Duration::from_secs(5);

async fn answered<T>(call: impl Future<Output = T>) -> T {
    tokio::time::timeout(HUNG, call)
        .await
        .expect("the service answered")
}

/// The port of a URL's only host.
fn port_of(url: &str) -> u16 {
    let config: tokio_postgres::Config = url.parse().unwrap();
    config.get_ports()[0]
}

/// The network to PostgreSQL stops forwarding both ways for 20 s without
/// closing anything: writes answer 503 within their bound, cached sessions
/// resolve 200 throughout, readiness names the store, and once it forwards
/// again the same process recovers.
/// A session of other SQL, straight to PostgreSQL at `url`, holding a lock
/// on the sessions table that every write waits for until it rolls back.
async fn lock_the_sessions_table(url: &str) -> tokio_postgres::Client {
    let (locker, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    locker
        .batch_execute("BEGIN; LOCK TABLE session.sessions IN EXCLUSIVE MODE")
        .await
        .unwrap();
    locker
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_hangs_for_twenty_seconds() {
    let database = TestDatabase::create();
    let port = port_of(database.url());
    let proxy = StallingProxy::start(port);
    let url = database
        .url()
        .replacen(&format!(":{port}/"), &format!(":{}/", proxy.port()), 1);
    let flags = [
        "--pg-write-timeout",
        "1s",
        "--pg-read-timeout",
        "1s",
        "--pg-connect-timeout",
        "1s",
        "--pg-checkout-timeout",
        "1s",
        "--max-staleness",
        "1s",
        "--log-poll-interval",
        "50ms",
    ];
    let server = Server::start(Options {
        database_url: url,
        api_key: Some(KEY.to_owned()),
        extra: flags.map(String::from).to_vec(),
        ..Options::default()
    });
    server.wait_ready().await;
    let (token, id) = server.create(Uuid::new_v4()).await;

    // A create in flight when the network stalls: held on a lock another
    // session takes (straight to PostgreSQL), so its answer is still to come.
    let locker = lock_the_sessions_table(database.url()).await;
    let in_flight = tokio::spawn({
        let (client, url) = (crate::e2e::http_client(), server.url("/v1/sessions"));
        async move {
            let response = client
                .post(url)
                .bearer_auth(KEY)
                .json(&serde_json::json!({ "account_id": Uuid::new_v4() }))
                .send();
            answered(response).await.unwrap().status().as_u16()
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.stall();
    let stalled = Instant::now();
    locker.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(in_flight.await.unwrap(), 503, "the create in flight");
    assert!(stalled.elapsed() < FAIL_FAST, "{:?}", stalled.elapsed());
    let mut writes = 0;
    while stalled.elapsed() < Duration::from_secs(20) {
        let started = Instant::now();
        let created = answered(server.call(
            reqwest::Method::POST,
            "/v1/sessions",
            Some(serde_json::json!({ "account_id": Uuid::new_v4() })),
        ))
        .await;
        assert_eq!(
            created.0, 503,
            "a create while the database hangs: {}",
            created.1
        );
        assert!(started.elapsed() < FAIL_FAST, "{:?}", started.elapsed());
        let started = Instant::now();
        assert_eq!(answered(server.revoke(&id)).await, 503, "a revoke");
        assert!(started.elapsed() < FAIL_FAST, "{:?}", started.elapsed());
        assert_eq!(
            answered(server.resolve(&token)).await,
            200,
            "a cached session"
        );
        writes += 2;
    }
    let (status, body): (u16, Value) =
        answered(server.call(reqwest::Method::GET, "/readyz", None)).await;
    assert_eq!(status, 503, "{body}");
    assert_ne!(body["checks"]["store"]["status"], "ok", "{body}");
    eprintln!("{writes} writes refused in time while the database hung");

    proxy.resume();
    let resumed = Instant::now();
    loop {
        let (status, _) = answered(server.call(
            reqwest::Method::POST,
            "/v1/sessions",
            Some(serde_json::json!({ "account_id": Uuid::new_v4() })),
        ))
        .await;
        if status == 201 {
            break;
        }
        assert!(
            resumed.elapsed() < Duration::from_secs(30),
            "no recovery: {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.wait_ready().await;
    assert_eq!(answered(server.revoke(&id)).await, 204);
    assert_eq!(answered(server.resolve(&token)).await, 401);
}

/// Other SQL holds a lock on the sessions table that writes wait for:
/// creates and revokes answer 503 within the lock timeout and change
/// nothing; once it lets go, they work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_on_the_sessions_table_fails_writes_within_the_lock_timeout() {
    let database = TestDatabase::create();
    let server = Server::start(Options {
        database_url: database.url().to_owned(),
        api_key: Some(KEY.to_owned()),
        extra: ["--pg-lock-timeout", "500ms"].map(String::from).to_vec(),
        ..Options::default()
    });
    server.wait_ready().await;
    let (token, id) = server.create(Uuid::new_v4()).await;
    let locker = lock_the_sessions_table(database.url()).await;
    let started = Instant::now();
    let created = answered(server.call(
        reqwest::Method::POST,
        "/v1/sessions",
        Some(serde_json::json!({ "account_id": Uuid::new_v4() })),
    ))
    .await;
    assert_eq!(created.0, 503, "{}", created.1);
    assert_eq!(answered(server.revoke(&id)).await, 503);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        answered(server.resolve(&token)).await,
        200,
        "the cache is unchanged"
    );
    locker.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(answered(server.revoke(&id)).await, 204);
    assert_eq!(answered(server.resolve(&token)).await, 401);
}

/// Clients at once through PgBouncer in transaction pooling mode.
const CLIENTS: usize = 64;
/// Creates each client makes.
const CREATES: usize = 10;

/// Two instances behind PgBouncer in transaction pooling mode, the way the
/// README configures them: 64 clients creating at once all get 201, each
/// instance resolves what the other created, and `/readyz` says whether
/// the change log wakes it (with a direct URL) or is polled (without).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_behind_pgbouncer_in_transaction_mode() {
    let database = TestDatabase::create();
    let pooled = database.through_pgbouncer();
    let start = |direct: bool| {
        let mut extra = vec!["--pg-statements".to_owned(), "per-transaction".to_owned()];
        if direct {
            extra.extend(["--pg-direct-url".to_owned(), database.url().to_owned()]);
        }
        Server::start(Options {
            database_url: pooled.clone(),
            api_key: Some(KEY.to_owned()),
            extra,
            ..Options::default()
        })
    };
    let (a, b) = (start(true), start(false));
    a.wait_ready().await;
    b.wait_ready().await;
    for (server, mode) in [(&a, "listening"), (&b, "polling")] {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (_, body) = answered(server.call(reqwest::Method::GET, "/readyz", None)).await;
            if body["checks"]["change_log"]["wake_ups"] == mode {
                break;
            }
            assert!(Instant::now() < deadline, "{mode}: {body}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    let mut clients = tokio::task::JoinSet::new();
    for client in 0..CLIENTS {
        let url = [&a, &b][client % 2].url("");
        clients.spawn(async move {
            let http = crate::e2e::http_client();
            let mut answers = Vec::new();
            for _ in 0..CREATES {
                let response = http
                    .post(format!("{url}/v1/sessions"))
                    .bearer_auth(KEY)
                    .json(&serde_json::json!({ "account_id": Uuid::new_v4() }))
                    .send()
                    .await
                    .unwrap();
                let status = response.status().as_u16();
                let body: Value = response.json().await.unwrap_or(Value::Null);
                answers.push((status, body["token"].as_str().map(str::to_owned)));
            }
            answers
        });
    }
    let mut tokens = Vec::new();
    while let Some(answers) = answered(clients.join_next()).await {
        for (status, token) in answers.unwrap() {
            assert_eq!(status, 201, "every create through PgBouncer");
            tokens.extend(token);
        }
    }
    assert_eq!(tokens.len(), CLIENTS * CREATES);
    for token in tokens.iter().step_by(37) {
        for server in [&a, &b] {
            assert_eq!(answered(server.resolve(token)).await, 200);
        }
    }
}
