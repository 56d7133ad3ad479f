//! Latency of the SQLite store's operations on a real file, as percentiles:
//! sequential inserts and revokes (each one commit and one log sync), and
//! `find_active_by_hash` from several tasks at once, alone and while a writer
//! streams inserts.
//!
//! `cargo bench -p session-sqlite --bench latency`; `SESSION_BENCH_QUICK=1`
//! for small counts, `SESSION_BENCH_DIR` to put the file on a chosen disk
//! (default: the system temporary directory).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use session_core::Session;
use session_core::port::store::SessionStore;
use session_core::testkit::{account, epoch, session_at};
use session_sqlite::SqliteSessionStore;

const READ_TASKS: usize = 4;

fn main() {
    let quick = std::env::var("SESSION_BENCH_QUICK").is_ok_and(|v| v == "1");
    let (writes, reads_per_task) = if quick { (50, 200) } else { (2_000, 5_000) };
    let dir = match std::env::var_os("SESSION_BENCH_DIR") {
        Some(base) => tempfile::tempdir_in(base),
        None => tempfile::tempdir(),
    }
    .expect("a temporary directory");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a Tokio runtime");
    runtime.block_on(run(&dir.path().join("sessions.db"), writes, reads_per_task));
}

async fn run(path: &std::path::Path, writes: usize, reads_per_task: usize) {
    let store = Arc::new(SqliteSessionStore::open(path).await.unwrap());
    println!("SQLite store at {}", path.display());

    let sessions: Vec<Session> = (0..writes)
        .map(|_| session_at(account(), epoch()).1)
        .collect();
    let mut timings = Vec::with_capacity(writes);
    for session in &sessions {
        let start = Instant::now();
        store.insert(session).await.unwrap();
        timings.push(start.elapsed());
    }
    report("insert (sequential)", &mut timings);

    let mut timings = Vec::with_capacity(writes / 2);
    for session in sessions.iter().step_by(2) {
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
    report("revoke (sequential)", &mut timings);

    let sessions = Arc::new(sessions);
    let mut timings = concurrent_reads(&store, &sessions, reads_per_task).await;
    report(
        &format!("find_active_by_hash, {READ_TASKS} tasks, no writes"),
        &mut timings,
    );

    let writing = Arc::new(AtomicBool::new(true));
    let writer = tokio::spawn({
        let store = Arc::clone(&store);
        let writing = Arc::clone(&writing);
        async move {
            let mut written = 0usize;
            while writing.load(Ordering::Relaxed) {
                let (_, session) = session_at(account(), epoch());
                store.insert(&session).await.unwrap();
                written += 1;
            }
            written
        }
    });
    let started = Instant::now();
    let mut timings = concurrent_reads(&store, &sessions, reads_per_task).await;
    writing.store(false, Ordering::Relaxed);
    let written = writer.await.unwrap();
    report(
        &format!("find_active_by_hash, {READ_TASKS} tasks, during inserts"),
        &mut timings,
    );
    println!(
        "  (the writer committed {written} inserts in {:.2?} meanwhile)",
        started.elapsed()
    );
}

/// Looks sessions up from [`READ_TASKS`] tasks at once; every latency measured.
async fn concurrent_reads(
    store: &Arc<SqliteSessionStore>,
    sessions: &Arc<Vec<Session>>,
    reads_per_task: usize,
) -> Vec<Duration> {
    let mut tasks = Vec::new();
    for task in 0..READ_TASKS {
        let store = Arc::clone(store);
        let sessions = Arc::clone(sessions);
        tasks.push(tokio::spawn(async move {
            let mut timings = Vec::with_capacity(reads_per_task);
            for i in 0..reads_per_task {
                // A spread of rows, half of them revoked, without a random source.
                let session = &sessions[(i * 7919 + task * 104_729) % sessions.len()];
                let start = Instant::now();
                let found = store.find_active_by_hash(&session.token_hash).await;
                timings.push(start.elapsed());
                assert!(found.is_ok());
            }
            timings
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    all
}

fn report(what: &str, timings: &mut [Duration]) {
    timings.sort_unstable();
    let at = |q: f64| timings[((timings.len() - 1) as f64 * q).round() as usize];
    let total: Duration = timings.iter().sum();
    println!(
        "{what}: n={} mean={:.1?} p50={:.1?} p90={:.1?} p99={:.1?} max={:.1?}",
        timings.len(),
        total / u32::try_from(timings.len()).unwrap_or(u32::MAX),
        at(0.50),
        at(0.90),
        at(0.99),
        at(1.0),
    );
}
