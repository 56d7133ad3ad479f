//! Faults, on the real binary: PostgreSQL stopped and started under load,
//! and SIGKILL in the middle of concurrent creates and revokes, on both
//! stores, checked against a ledger of what was acknowledged; and what the
//! log says of a request the store fails.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use session_test_postgres::{TestDatabase, TestServer};
use tokio::task::JoinSet;
use uuid::Uuid;

use crate::e2e::{KEY, Options, Server, sqlite_url, temp_dir};

/// Every request's own bound: a request that takes this long has hung.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// A write refused because the store is down is answered within this: the
/// service is started with 1 s connect and checkout timeouts, and the bound
/// is far below the client's own timeout. A bound on hanging, not a speed
/// figure.
const FAIL_FAST: Duration = Duration::from_secs(4);

/// How long the service may take to notice, or to recover from, an outage
/// before the test calls it stuck.
const RECOVERY_BOUND: Duration = Duration::from_secs(30);

/// The service's HTTP API with the test key and a client that never waits
/// past [`CLIENT_TIMEOUT`]. A transport error (refused, reset, timed out) is
/// an `Err`: the callers decide whether that may happen.
#[derive(Clone)]
struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    fn new(server: &Server) -> Self {
        Self {
            http: session_test_app::http_client_builder()
                .timeout(CLIENT_TIMEOUT)
                .build()
                .unwrap(),
            base: server.url(""),
        }
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value), reqwest::Error> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(KEY);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let text = response.text().await?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    /// `Ok((status, Some((id, token))))` for a 201.
    async fn create(
        &self,
        account: Uuid,
    ) -> Result<(u16, Option<(String, String)>), reqwest::Error> {
        let (status, body) = self
            .send(
                reqwest::Method::POST,
                "/v1/sessions",
                Some(json!({ "account_id": account })),
            )
            .await?;
        let created = (status == 201).then(|| {
            (
                body["session"]["id"].as_str().unwrap().to_owned(),
                body["token"].as_str().unwrap().to_owned(),
            )
        });
        Ok((status, created))
    }

    async fn resolve(&self, token: &str) -> Result<u16, reqwest::Error> {
        let path = "/v1/sessions/resolve";
        let body = Some(json!({ "token": token }));
        Ok(self.send(reqwest::Method::POST, path, body).await?.0)
    }

    async fn revoke(&self, id: &str) -> Result<u16, reqwest::Error> {
        let path = format!("/v1/sessions/{id}");
        Ok(self.send(reqwest::Method::DELETE, &path, None).await?.0)
    }

    /// The ids of the account's active sessions.
    async fn active(&self, account: Uuid) -> HashSet<String> {
        let path = format!("/v1/accounts/{account}/sessions");
        let (status, body) = self.send(reqwest::Method::GET, &path, None).await.unwrap();
        assert_eq!(status, 200, "{body}");
        body["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|session| session["id"].as_str().unwrap().to_owned())
            .collect()
    }

    async fn readiness(&self) -> (u16, Value) {
        self.send(reqwest::Method::GET, "/readyz", None)
            .await
            .unwrap()
    }
}

/// PostgreSQL stopped under concurrent resolves and writes, then started
/// again: resolves of cached sessions keep answering 200 throughout; writes
/// are refused with 503 within a bound, never left hanging; readiness says
/// 503; once the server is back the service recovers without a restart:
/// writes succeed, readiness is 200, and a revocation made afterwards, here
/// or on another instance, is honoured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_and_started_under_load() {
    let postgres = Arc::new(
        tokio::task::spawn_blocking(TestServer::start)
            .await
            .unwrap(),
    );
    let database = postgres.create_database();
    let options = || Options {
        database_url: database.url().to_owned(),
        api_key: Some(KEY.to_owned()),
        extra: [
            "--pg-connect-timeout",
            "1s",
            "--pg-checkout-timeout",
            "1s",
            "--max-staleness",
            "1s",
            "--log-poll-interval",
            "50ms",
        ]
        .map(String::from)
        .to_vec(),
        ..Options::default()
    };
    let server = Server::start(options());
    server.wait_ready().await;
    let api = Api::new(&server);
    let account = Uuid::new_v4();
    let mut sessions = Vec::new();
    for _ in 0..10 {
        let (status, created) = api.create(account).await.unwrap();
        assert_eq!(status, 201);
        sessions.push(created.unwrap());
    }
    let tokens: Arc<[String]> = sessions.iter().map(|(_, token)| token.clone()).collect();

    let stop = Arc::new(AtomicBool::new(false));
    let mut resolvers = JoinSet::new();
    for _ in 0..2 {
        let (api, tokens, stop) = (api.clone(), Arc::clone(&tokens), Arc::clone(&stop));
        resolvers.spawn(async move {
            let mut answers: HashMap<String, usize> = HashMap::new();
            while !stop.load(Ordering::Relaxed) {
                for token in tokens.iter() {
                    let answer = match api.resolve(token).await {
                        Ok(status) => status.to_string(),
                        Err(err) => format!("no answer: {err}"),
                    };
                    *answers.entry(answer).or_default() += 1;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            answers
        });
    }
    let mut writers = JoinSet::new();
    for _ in 0..2 {
        let (api, stop) = (api.clone(), Arc::clone(&stop));
        writers.spawn(async move {
            let mut answers = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let answer = match api.create(Uuid::new_v4()).await {
                    Ok((status, _)) => status.to_string(),
                    Err(err) => format!("no answer: {err}"),
                };
                answers.push((answer, started.elapsed()));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            answers
        });
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    let stopping = Arc::clone(&postgres);
    tokio::task::spawn_blocking(move || stopping.stop())
        .await
        .unwrap();
    // Nothing changes while the store is down, and nothing waits for it.
    let (revoked_id, revoked_token) = &sessions[0];
    for _ in 0..3 {
        let started = Instant::now();
        let (status, _) = api.create(account).await.expect("a create is answered");
        assert_eq!(status, 503, "a create with the store down");
        assert!(started.elapsed() < FAIL_FAST, "{:?}", started.elapsed());
        let started = Instant::now();
        let status = api.revoke(revoked_id).await.expect("a revoke is answered");
        assert_eq!(status, 503, "a revoke with the store down");
        assert!(started.elapsed() < FAIL_FAST, "{:?}", started.elapsed());
    }
    assert_eq!(api.resolve(revoked_token).await.unwrap(), 200);
    let (status, body) = eventually(|| api.readiness(), |(status, _)| *status == 503).await;
    assert_eq!(status, 503, "{body}");
    assert_ne!(body["checks"]["store"]["status"], "ok", "{body}");

    let starting = Arc::clone(&postgres);
    tokio::task::spawn_blocking(move || starting.start_again())
        .await
        .unwrap();
    eventually(
        || api.create(account),
        |answer| matches!(answer, Ok((201, _))),
    )
    .await
    .unwrap();
    server.wait_ready().await;
    stop.store(true, Ordering::Relaxed);

    let mut resolved: HashMap<String, usize> = HashMap::new();
    while let Some(answers) = resolvers.join_next().await {
        for (answer, count) in answers.unwrap() {
            *resolved.entry(answer).or_default() += count;
        }
    }
    assert_eq!(
        resolved.keys().collect::<Vec<_>>(),
        ["200"],
        "every resolve of a cached session answered 200: {resolved:?}"
    );
    let mut written: HashMap<String, usize> = HashMap::new();
    let mut slowest = Duration::ZERO;
    while let Some(answers) = writers.join_next().await {
        for (answer, took) in answers.unwrap() {
            slowest = slowest.max(took);
            assert!(
                took < FAIL_FAST,
                "a create answered {answer} after {took:?}"
            );
            *written.entry(answer).or_default() += 1;
        }
    }
    assert!(
        written
            .keys()
            .all(|answer| answer == "201" || answer == "503"),
        "every create answered 201 or 503: {written:?}"
    );
    assert!(
        written.contains_key("503"),
        "writes met the outage: {written:?}"
    );
    eprintln!("resolves {resolved:?}; creates {written:?}, slowest {slowest:?}");

    // Recovered: a revocation made here now, and one made on another
    // instance, are honoured.
    assert_eq!(api.revoke(revoked_id).await.unwrap(), 204);
    assert_eq!(api.resolve(revoked_token).await.unwrap(), 401);
    let other = Server::start(options());
    other.wait_ready().await;
    let (elsewhere_id, elsewhere_token) = &sessions[1];
    assert_eq!(Api::new(&other).revoke(elsewhere_id).await.unwrap(), 204);
    eventually(
        || api.resolve(elsewhere_token),
        |answer| matches!(answer, Ok(401)),
    )
    .await
    .unwrap();
    assert_eq!(api.resolve(&sessions[2].1).await.unwrap(), 200);
}

/// Calls `probe` until `done` accepts its answer, within [`RECOVERY_BOUND`];
/// returns that answer.
async fn eventually<T, F, Fut>(mut probe: F, done: impl Fn(&T) -> bool) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = T>,
    T: std::fmt::Debug,
{
    let started = Instant::now();
    loop {
        let answer = probe().await;
        if done(&answer) {
            return answer;
        }
        assert!(
            started.elapsed() < RECOVERY_BOUND,
            "still {answer:?} after {RECOVERY_BOUND:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_concurrent_writes_loses_nothing_acknowledged_on_sqlite() {
    let dir = temp_dir();
    sigkill_during_concurrent_writes(&sqlite_url(dir.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_concurrent_writes_loses_nothing_acknowledged_on_postgres() {
    let database = TestDatabase::create();
    sigkill_during_concurrent_writes(database.url()).await;
}

/// What the service acknowledged before it was killed.
#[derive(Default)]
struct Ledger {
    /// Session id → (account, token), for every 201.
    created: HashMap<String, (Uuid, String)>,
    /// Revokes sent; a revoke sent but not acknowledged may go either way.
    revoke_sent: HashSet<String>,
    /// Revokes acknowledged with 204.
    revoked: HashSet<String>,
}

/// Writers that run concurrently: each creates sessions for accounts of its
/// own, and revokes every third one it created.
const WRITERS: usize = 8;

/// Acknowledged creates before the kill.
const CREATES_BEFORE_KILL: usize = 150;

/// Concurrent creates and revokes over HTTP, SIGKILL in the middle of them,
/// a restart on the same store: every acknowledged create is active (resolves
/// and is listed) unless its revoke was sent, every acknowledged revoke holds
/// (401, not listed), a revoke in flight at the kill went one way or the
/// other but the same way for resolve and list, and the only sessions nobody
/// was told of are creates in flight at the kill, at most one per writer.
async fn sigkill_during_concurrent_writes(database_url: &str) {
    let server = Server::start(Options {
        database_url: database_url.to_owned(),
        api_key: Some(KEY.to_owned()),
        ..Options::default()
    });
    server.wait_ready().await;
    let api = Api::new(&server);
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let acknowledged = Arc::new(AtomicUsize::new(0));
    let mut accounts = Vec::new();
    let mut writers = JoinSet::new();
    for _ in 0..WRITERS {
        // A few sessions per account, so each fits in one page of the list.
        let own: Vec<Uuid> = (0..8).map(|_| Uuid::new_v4()).collect();
        accounts.extend(own.iter().copied());
        let (api, ledger, acknowledged) =
            (api.clone(), Arc::clone(&ledger), Arc::clone(&acknowledged));
        writers.spawn(async move {
            let mut mine = Vec::new();
            for round in 0.. {
                let account = own[round % own.len()];
                // Runs until the kill ends it: the first request without an answer.
                let Ok((status, created)) = api.create(account).await else {
                    return;
                };
                assert_eq!(status, 201, "a create before the kill");
                let (id, token) = created.unwrap();
                ledger
                    .lock()
                    .unwrap()
                    .created
                    .insert(id.clone(), (account, token));
                acknowledged.fetch_add(1, Ordering::Relaxed);
                mine.push(id);
                if round % 3 == 2 {
                    let id = mine.swap_remove(fastrand_index(round, mine.len()));
                    ledger.lock().unwrap().revoke_sent.insert(id.clone());
                    let Ok(status) = api.revoke(&id).await else {
                        return;
                    };
                    assert_eq!(status, 204, "a revoke before the kill");
                    ledger.lock().unwrap().revoked.insert(id);
                }
            }
        });
    }
    let started = Instant::now();
    while acknowledged.load(Ordering::Relaxed) < CREATES_BEFORE_KILL {
        assert!(
            started.elapsed() < RECOVERY_BOUND,
            "only {} creates acknowledged in {RECOVERY_BOUND:?}",
            acknowledged.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let killed = Instant::now();
    server.kill();
    while let Some(writer) = writers.join_next().await {
        writer.unwrap();
    }
    server.restart();
    server.wait_ready().await;
    let recovered = killed.elapsed();

    let ledger = Arc::try_unwrap(ledger).ok().unwrap().into_inner().unwrap();
    let mut listed = HashSet::new();
    for account in &accounts {
        listed.extend(api.active(*account).await);
    }
    for (id, (_, token)) in &ledger.created {
        let resolves = api.resolve(token).await.unwrap();
        let is_listed = listed.contains(id);
        if ledger.revoked.contains(id) {
            assert_eq!(resolves, 401, "an acknowledged revoke was lost: {id}");
            assert!(!is_listed, "an acknowledged revoke is listed active: {id}");
        } else if ledger.revoke_sent.contains(id) {
            // In flight at the kill: either way, but one way.
            assert_eq!(
                (resolves == 200),
                is_listed,
                "resolve and list disagree on {id}"
            );
        } else {
            assert_eq!(resolves, 200, "an acknowledged create was lost: {id}");
            assert!(is_listed, "an acknowledged create is not listed: {id}");
        }
    }
    let unknown = listed
        .iter()
        .filter(|id| !ledger.created.contains_key(*id))
        .count();
    assert!(
        unknown <= WRITERS,
        "{unknown} active sessions nobody was told of; at most {WRITERS} creates were in flight"
    );
    eprintln!(
        "{} creates and {} revokes acknowledged, {} revokes in flight, {unknown} unacknowledged \
         creates kept; ready again {recovered:?} after the kill",
        ledger.created.len(),
        ledger.revoked.len(),
        ledger.revoke_sent.len() - ledger.revoked.len(),
    );
    assert!(
        // Each writer revokes once per three creates; its last may be cut off.
        ledger.revoked.len() >= CREATES_BEFORE_KILL / 3 - 2 * WRITERS,
        "revokes ran alongside the creates: {}",
        ledger.revoked.len()
    );
}

/// An index below `len` that varies with `round`, so revokes hit old and new
/// sessions alike; not random, so a failure replays the same way.
fn fastrand_index(round: usize, len: usize) -> usize {
    round.wrapping_mul(2_654_435_761) % len
}

/// A request the store fails is logged once, by the service's request
/// layer: one `warn` line with the store's error, in the request's span,
/// beside the request's own line. No error conversion on the way logs it
/// again. (The change-log reader logs its own failed reads, in no request's
/// span.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_the_store_fails_is_logged_once() {
    let postgres = Arc::new(
        tokio::task::spawn_blocking(TestServer::start)
            .await
            .unwrap(),
    );
    let database = postgres.create_database();
    let server = Server::start(Options {
        database_url: database.url().to_owned(),
        api_key: Some(KEY.to_owned()),
        extra: ["--pg-connect-timeout", "1s", "--pg-checkout-timeout", "1s"]
            .map(String::from)
            .to_vec(),
        ..Options::default()
    });
    server.wait_ready().await;
    let stopping = Arc::clone(&postgres);
    tokio::task::spawn_blocking(move || stopping.stop())
        .await
        .unwrap();

    let request_id = Uuid::new_v4().to_string();
    let response = session_test_app::http_client_builder()
        .timeout(CLIENT_TIMEOUT)
        .build()
        .unwrap()
        .post(server.url("/v1/sessions"))
        .bearer_auth(KEY)
        .header("x-request-id", &request_id)
        .json(&json!({ "account_id": Uuid::new_v4() }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);

    // Lines leave through the log writer's thread: wait for the request's
    // own line, which is logged last.
    let started = Instant::now();
    let lines = loop {
        let lines: Vec<Value> = server
            .log()
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|line| line["span"]["request_id"] == request_id.as_str())
            .collect();
        if lines
            .iter()
            .any(|line| line["message"] == "request finished")
        {
            break lines;
        }
        assert!(
            started.elapsed() < RECOVERY_BOUND,
            "no line for the request in\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let causes: Vec<&Value> = lines
        .iter()
        .filter(|line| line.get("error").is_some())
        .collect();
    assert_eq!(causes.len(), 1, "{lines:#?}");
    assert_eq!(causes[0]["level"], "WARN", "{lines:#?}");
    assert_eq!(causes[0]["message"], "session store unavailable");
    let finished: Vec<&Value> = lines
        .iter()
        .filter(|line| line["message"] == "request finished")
        .collect();
    assert_eq!(finished.len(), 1, "{lines:#?}");
    assert_eq!(finished[0]["status"], 503);
}
