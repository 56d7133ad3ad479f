//! The PostgreSQL store on a throwaway local server (loopback, durability
//! off, so the numbers are the adapter's and the protocol's, not a disk's):
//! single-connection latency of insert and revoke, as percentiles; what the
//! change log's triggers add to an insert; how long a revocation
//! committed by one service takes to leave another's cache; and how long
//! warming a cache from a table of active sessions takes.
//!
//! `cargo bench -p session-postgres --bench postgres`; `SESSION_BENCH_QUICK=1`
//! for small counts; `TEST_DATABASE_URL` to measure on another server.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use session_core::port::cache::{CacheMode, PreparedContents, SessionCache};
use session_core::port::change_log::ChangeLog;
use session_core::port::store::SessionStore;
use session_core::testkit::{account, epoch, session_at};
use session_core::token::TokenHash;
use session_core::{ClientMetadata, MemoryCache, Session, SessionIdentity, SessionService};
use session_postgres::{PgConfig, PgSessionStore};
use session_test_postgres::TestDatabase;
use tokio_postgres::NoTls;

/// Rows per bulk-load statement.
const LOAD_BATCH: usize = 10_000;

fn main() {
    let quick = std::env::var("SESSION_BENCH_QUICK").is_ok_and(|v| v == "1");
    let (writes, active) = if quick {
        (200, 20_000)
    } else {
        (5_000, 1_000_000)
    };
    let database = TestDatabase::create();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a Tokio runtime");
    runtime.block_on(run(&database, writes, active));
}

async fn run(database: &TestDatabase, writes: usize, active: usize) {
    let config = PgConfig::from_url(database.url()).unwrap().pool_size(1);
    let store = PgSessionStore::connect(config).await.unwrap();
    store.migrate().await.unwrap();

    let sessions: Vec<Session> = (0..writes)
        .map(|_| session_at(account(), epoch()).1)
        .collect();
    let mut timings = Vec::with_capacity(writes);
    for session in &sessions {
        let start = Instant::now();
        store.insert(session).await.unwrap();
        timings.push(start.elapsed());
    }
    report("insert, one connection", &mut timings);
    let mut timings = Vec::with_capacity(writes);
    for session in &sessions {
        let start = Instant::now();
        store
            .revoke(
                session.id,
                epoch(),
                session_core::RevocationReason::LOGOUT,
                None,
            )
            .await
            .unwrap();
        timings.push(start.elapsed());
    }
    report("revoke, one connection", &mut timings);
    let mut timings = Vec::with_capacity(writes);
    for _ in 0..writes {
        let start = Instant::now();
        store.health_check().await.unwrap();
        timings.push(start.elapsed());
    }
    report("health check (checkout check + SELECT 1)", &mut timings);

    // On a database of their own, so the warm below reads only what it loads.
    let change_log_database = TestDatabase::create();
    let change_log_store = PgSessionStore::connect(
        PgConfig::from_url(change_log_database.url())
            .unwrap()
            .pool_size(1),
    )
    .await
    .unwrap();
    change_log_store.migrate().await.unwrap();
    publishing_cost(change_log_database.url(), &change_log_store, writes).await;
    propagation(change_log_database.url(), 1_000).await;

    let started = Instant::now();
    bulk_load(database.url(), active).await;
    println!(
        "loaded {active} active sessions (+{} revoked) in {:.1?}",
        active / 10,
        started.elapsed()
    );

    // The adapter alone: every page the warm reads, without building a cache.
    let config = PgConfig::from_url(database.url()).unwrap();
    let store = PgSessionStore::connect(config).await.unwrap();
    let started = Instant::now();
    let (mut after, mut read, mut pages) = (None, 0usize, 0usize);
    loop {
        let page = store.active_page(after, 5_000).await.unwrap();
        read += page.sessions.len();
        pages += 1;
        after = page.resume_after;
        if after.is_none() {
            break;
        }
    }
    println!(
        "active_page: {read} sessions in {pages} pages of 5,000 in {:.2?}",
        started.elapsed()
    );

    // The service's warm: the same pages, into a fresh cache.
    let service = SessionService::builder(Arc::new(store), Arc::new(MemoryCache::new())).build();
    let warmed = service.warm().await.unwrap();
    println!(
        "warm: {} sessions in {} pages in {:.2?}",
        warmed.sessions, warmed.pages, warmed.elapsed
    );
}

/// Loads `active` active sessions and a tenth as many revoked ones, a batch
/// per statement, in id (creation) order as a live system would have.
async fn bulk_load(url: &str, active: usize) {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(connection);
    let statement = client
        .prepare(
            "INSERT INTO session.sessions (id, account_id, token_hash, created_at, revoked_at, ip) \
             SELECT id::uuid, account::uuid, hash, now(), \
                    CASE WHEN revoked THEN now() END, '192.0.2.1'::inet \
             FROM unnest($1::text[], $2::text[], $3::bytea[], $4::bool[]) \
                  AS t(id, account, hash, revoked)",
        )
        .await
        .unwrap();
    let total = active + active / 10;
    let mut loaded = 0;
    while loaded < total {
        let batch = LOAD_BATCH.min(total - loaded);
        let sessions: Vec<Session> = (0..batch)
            .map(|_| session_at(account(), epoch()).1)
            .collect();
        let ids: Vec<String> = sessions.iter().map(|s| s.id.to_string()).collect();
        let accounts: Vec<String> = sessions.iter().map(|s| s.account_id.to_string()).collect();
        let hashes: Vec<&[u8]> = sessions
            .iter()
            .map(|s| s.token_hash.as_bytes().as_slice())
            .collect();
        // Every eleventh row revoked: a tenth as many revoked as active.
        let revoked: Vec<bool> = (loaded..loaded + batch).map(|i| i % 11 == 10).collect();
        client
            .execute(&statement, &[&ids, &accounts, &hashes, &revoked])
            .await
            .unwrap();
        loaded += batch;
    }
    client
        .batch_execute("VACUUM ANALYZE session.sessions")
        .await
        .unwrap();
}

/// Insert latency without the logging trigger, with it and nobody
/// listening, and with it and a listener woken by each insert: rounds of
/// each in turn, so drift in the machine's load spreads over all three.
async fn publishing_cost(url: &str, store: &PgSessionStore, writes: usize) {
    const ROUNDS: usize = 10;
    let admin = {
        let (client, connection) = tokio_postgres::connect(url, NoTls).await.unwrap();
        tokio::spawn(connection);
        client
    };
    let per_round = (writes / ROUNDS).max(1);
    let mut timings: [Vec<Duration>; 3] = Default::default();
    for _ in 0..ROUNDS {
        for (mode, timings) in timings.iter_mut().enumerate() {
            let trigger = if mode == 0 { "DISABLE" } else { "ENABLE" };
            admin
                .batch_execute(&format!(
                    "ALTER TABLE session.sessions {trigger} TRIGGER sessions_log_inserted"
                ))
                .await
                .unwrap();
            let listening = if mode == 2 {
                let mut wake_ups = store.wake_ups().await.unwrap();
                Some(tokio::spawn(async move {
                    while wake_ups.next().await.is_ok() {}
                }))
            } else {
                None
            };
            for _ in 0..per_round {
                let (_, session) = session_at(account(), epoch());
                let start = Instant::now();
                store.insert(&session).await.unwrap();
                timings.push(start.elapsed());
            }
            if let Some(listening) = listening {
                listening.abort();
            }
        }
    }
    let [mut without, mut unheard, mut heard] = timings;
    report("insert, logging trigger disabled", &mut without);
    report("insert, logging, nobody listening", &mut unheard);
    report("insert, logging, one listener", &mut heard);
}

/// A cache that records when each token hash left it.
struct TimedCache {
    inner: MemoryCache,
    removed: Mutex<Vec<(TokenHash, Instant)>>,
}

impl SessionCache for TimedCache {
    fn get(&self, hash: &TokenHash) -> Option<SessionIdentity> {
        self.inner.get(hash)
    }

    fn record(&self, hash: &TokenHash) -> Option<Arc<Session>> {
        self.inner.record(hash)
    }

    fn mode(&self) -> CacheMode {
        self.inner.mode()
    }

    fn insert(&self, session: Arc<Session>) {
        self.inner.insert(session);
    }

    fn remove(&self, hash: &TokenHash) {
        self.remove_many(std::slice::from_ref(hash));
    }

    fn remove_many(&self, hashes: &[TokenHash]) {
        self.inner.remove_many(hashes);
        let now = Instant::now();
        let mut removed = self.removed.lock().unwrap();
        removed.extend(hashes.iter().map(|hash| (*hash, now)));
    }

    fn prepare_empty(&self) -> Box<dyn PreparedContents> {
        self.inner.prepare_empty()
    }

    fn prepare(&self, sessions: Vec<Arc<Session>>) -> Box<dyn PreparedContents> {
        self.inner.prepare(sessions)
    }

    fn install(&self, contents: Box<dyn PreparedContents>) {
        self.inner.install(contents);
    }

    fn len(&self) -> usize {
        self.inner.len()
    }
}

/// Two services on one database, each following the change log. For each
/// of `count` sessions: create it on A, wait until B holds it, revoke it on
/// A, and time until B's cache dropped it, from the call on A (an upper
/// bound of the delay after the commit, which happens within the call) and
/// from the call's return (often after B already dropped it: zero).
async fn propagation(url: &str, count: usize) {
    let service = |cache: Arc<dyn SessionCache>| async move {
        let store = Arc::new(
            PgSessionStore::connect(PgConfig::from_url(url).unwrap())
                .await
                .unwrap(),
        );
        let service = SessionService::builder(store.clone(), cache)
            .change_log(store as Arc<dyn ChangeLog>)
            .build();
        let tasks = service.start();
        while !(service.status().cache_ready() && service.check_store().await.is_ok()) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        (service, tasks)
    };
    let (a, _a_tasks) = service(Arc::new(MemoryCache::new())).await;
    let b_cache = Arc::new(TimedCache {
        inner: MemoryCache::new(),
        removed: Mutex::new(Vec::new()),
    });
    // B runs on its own tasks; only its cache is looked at.
    let _b = service(b_cache.clone()).await;

    let mut from_call = Vec::with_capacity(count);
    let mut from_return = Vec::with_capacity(count);
    let mut calls = Vec::with_capacity(count);
    for _ in 0..count {
        let created = a
            .create(account(), ClientMetadata::default())
            .await
            .unwrap();
        let hash = created.session.token_hash;
        while b_cache.get(&hash).is_none() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let called = Instant::now();
        a.revoke(created.session.id, session_core::RevocationReason::LOGOUT)
            .await
            .unwrap();
        let returned = Instant::now();
        let gone = loop {
            let found = b_cache
                .removed
                .lock()
                .unwrap()
                .iter()
                .find(|(removed, _)| *removed == hash)
                .map(|(_, at)| *at);
            if let Some(at) = found {
                break at;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        b_cache.removed.lock().unwrap().clear();
        calls.push(returned - called);
        from_call.push(gone.saturating_duration_since(called));
        from_return.push(gone.saturating_duration_since(returned));
    }
    report("revoke on A (the call)", &mut calls);
    report("revoke called on A -> gone from B's cache", &mut from_call);
    report(
        "revoke returned on A -> gone from B's cache",
        &mut from_return,
    );
}

fn report(name: &str, timings: &mut [Duration]) {
    timings.sort();
    let at = |q: f64| timings[((timings.len() - 1) as f64 * q) as usize];
    let mean = timings.iter().sum::<Duration>() / timings.len() as u32;
    println!(
        "{name}: n={} mean={mean:.1?} p50={:.1?} p90={:.1?} p99={:.1?} max={:.1?}",
        timings.len(),
        at(0.5),
        at(0.9),
        at(0.99),
        at(1.0)
    );
}
