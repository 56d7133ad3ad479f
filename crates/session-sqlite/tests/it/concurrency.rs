//! Reads beside writes, and writes beside another program's SQLite lock.
//!
//! A second store cannot open the file (see `lock`), but a program that is
//! not a store (the sqlite3 shell, a backup tool) can still take SQLite's lock.

use std::sync::Arc;
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use session_core::port::store::{SessionStore, StoreError};
use session_core::testkit::{account, epoch, session_at};
use session_sqlite::SqliteOptions;

use crate::support::TempStore;

/// Another process holding the write lock (here, a raw connection in an open
/// `BEGIN IMMEDIATE`) does not hold up reads, which see the last committed
/// state; a write waits `busy_timeout`, then fails as retryable, and succeeds
/// once the lock is released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_do_not_wait_for_a_held_write_lock_and_blocked_writes_are_retryable() {
    // Short, so a read that wrongly waited for the lock would fail quickly
    // instead of hanging.
    let store =
        TempStore::with(SqliteOptions::default().busy_timeout(Duration::from_millis(200))).await;
    let (_, committed) = session_at(account(), epoch());
    store.insert(&committed).await.unwrap();

    let mut other = SqliteConnection::establish(store.path().to_str().unwrap()).unwrap();
    let (_, uncommitted) = session_at(account(), epoch());
    other
        .batch_execute(&format!(
            "BEGIN IMMEDIATE; \
             INSERT INTO sessions (id, account_id, token_hash, created_at) \
             VALUES (randomblob(16), randomblob(16), x'{}', 0);",
            hex(uncommitted.token_hash.as_bytes())
        ))
        .unwrap();

    assert_eq!(
        store
            .find_active_by_hash(&committed.token_hash)
            .await
            .unwrap(),
        Some(committed.clone()),
        "a read while another connection holds the write lock"
    );
    assert_eq!(
        store
            .find_active_by_hash(&uncommitted.token_hash)
            .await
            .unwrap(),
        None,
        "uncommitted rows are invisible"
    );

    let (_, blocked) = session_at(account(), epoch());
    let err = store.insert(&blocked).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Unavailable(_)) && err.is_retryable(),
        "got {err:?}"
    );

    other.batch_execute("ROLLBACK;").unwrap();
    store.insert(&blocked).await.unwrap();
    assert_eq!(store.get(blocked.id).await.unwrap(), Some(blocked));
}

/// A write of this store stuck behind another process's lock holds the
/// writer connection, yet reads still answer: they never queue behind writes.
/// Once the lock is released within `busy_timeout`, the write goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_answer_while_a_write_of_the_same_store_waits_for_the_lock() {
    // Long enough that the waiting write cannot give up during the test.
    let store = Arc::new(
        TempStore::with(SqliteOptions::default().busy_timeout(Duration::from_secs(10))).await,
    );
    let (_, committed) = session_at(account(), epoch());
    store.insert(&committed).await.unwrap();
    let mut other = SqliteConnection::establish(store.path().to_str().unwrap()).unwrap();
    other.batch_execute("BEGIN IMMEDIATE;").unwrap();

    let (_, waiting) = session_at(account(), epoch());
    let write = tokio::spawn({
        let store = Arc::clone(&store);
        let waiting = waiting.clone();
        async move { store.insert(&waiting).await }
    });
    // Give the write time to take the writer connection and start waiting in
    // SQLite; if it has not yet, the read below passes trivially, never wrongly.
    tokio::time::sleep(Duration::from_millis(100)).await;

    assert_eq!(
        store.get(committed.id).await.unwrap(),
        Some(committed.clone())
    );
    assert!(
        !write.is_finished(),
        "the read answered while the write was still waiting"
    );

    other.batch_execute("ROLLBACK;").unwrap();
    write.await.unwrap().unwrap();
    assert_eq!(store.get(waiting.id).await.unwrap(), Some(waiting));
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The pool status shows the one writer connection in use while a write
/// runs and the writes queued behind it, and both clear once they finish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_status_shows_the_running_write_and_those_waiting() {
    let store = Arc::new(
        TempStore::with(
            SqliteOptions::default()
                .readers(3)
                .busy_timeout(Duration::from_secs(30)),
        )
        .await,
    );
    let idle = store.store.pool_status();
    assert_eq!(
        (
            idle.readers.max,
            idle.readers.open,
            idle.readers.in_use,
            idle.readers.waiting
        ),
        (3, 3, 0, 0)
    );
    assert_eq!(
        (idle.writer.max, idle.writer.in_use, idle.writer.waiting),
        (1, 0, 0)
    );

    // Another connection holds SQLite's write lock: the first write runs
    // and waits on it, the second waits for the writer connection.
    let mut other = SqliteConnection::establish(store.path().to_str().unwrap()).unwrap();
    other.batch_execute("BEGIN IMMEDIATE;").unwrap();
    let writes: Vec<_> = (0..2)
        .map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let (_, session) = session_at(account(), epoch());
                store.insert(&session).await
            })
        })
        .collect();
    let mut polls = 0;
    loop {
        let writer = store.store.pool_status().writer;
        if (writer.in_use, writer.waiting) == (1, 1) {
            break;
        }
        polls += 1;
        assert!(polls < 10_000, "the writes never queued: {writer:?}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    other.batch_execute("ROLLBACK;").unwrap();
    for write in writes {
        write.await.unwrap().unwrap();
    }
    let writer = store.store.pool_status().writer;
    assert_eq!((writer.in_use, writer.waiting), (0, 0));
}
