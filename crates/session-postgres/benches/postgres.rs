//! The PostgreSQL store on a throwaway local server (loopback, durability
//! off, so the numbers are the adapter's and the protocol's, not a disk's):
//! single-connection latency of insert and revoke, as percentiles, and how
//! long warming a cache from a table of active sessions takes.
//!
//! `cargo bench -p session-postgres --bench postgres`; `SESSION_BENCH_QUICK=1`
//! for small counts; `TEST_DATABASE_URL` to measure on another server.

use std::sync::Arc;
use std::time::{Duration, Instant};

use session_core::testkit::{account, epoch, session_at};
use session_core::{MemoryCache, Session, SessionService, SessionStore};
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
        store.revoke(session.id, epoch()).await.unwrap();
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
        read += page.len();
        pages += 1;
        match page.last() {
            Some(last) if page.len() == 5_000 => after = Some(last.id),
            _ => break,
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
