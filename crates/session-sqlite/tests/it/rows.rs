//! Rows written by other SQL that the domain rejects: the warm skips them,
//! a read by id names them, and neither repeats the stored value.

use std::sync::Arc;

use diesel::connection::SimpleConnection;
use diesel::{Connection, SqliteConnection};
use session_core::port::store::{SessionStore, StoreError};
use session_core::testkit::{account, epoch, session_at};
use session_core::{MemoryCache, SessionId, SessionService};
use uuid::Uuid;

use crate::support::TempStore;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_the_domain_rejects_is_skipped_by_the_warm_and_named_by_get() {
    let store = TempStore::new().await;
    let good: Vec<_> = (0..3).map(|_| session_at(account(), epoch())).collect();
    for (_, session) in &good {
        store.insert(session).await.unwrap();
    }
    // Between the good rows in id order, with a label holding a bell.
    let poison = SessionId::from_uuid(Uuid::now_v7());
    let mut other = SqliteConnection::establish(store.path().to_str().unwrap()).unwrap();
    other
        .batch_execute(&format!(
            "INSERT INTO sessions (id, account_id, token_hash, created_at, label) \
             VALUES (x'{}', randomblob(16), randomblob(32), 0, 'secret' || char(7))",
            hex(poison.as_uuid().as_bytes()),
        ))
        .unwrap();
    let late = session_at(account(), epoch()).1;
    store.insert(&late).await.unwrap();

    let err = store.get(poison).await.unwrap_err();
    assert!(matches!(err, StoreError::Failed(_)), "got {err:?}");
    let text = format!("{err}: {}", std::error::Error::source(&err).unwrap());
    assert!(text.contains(&poison.to_string()), "names the row: {text}");
    assert!(text.contains("label"), "names the column: {text}");
    assert!(!text.contains("secret"), "never the value: {text}");

    // Pages of one row: the rejected row ends a page, and paging goes on past it.
    let service = SessionService::builder(Arc::new(store), Arc::new(MemoryCache::new()))
        .warm_page_size(1)
        .build();
    let report = service.warm().await.unwrap();
    assert_eq!(report.sessions, 4, "every good row: {report:?}");
    assert_eq!(service.status().change_log_stats.rows_skipped, 1);
    assert!(service.resolve("sess_x").await.is_err());
}

/// A list meets rejected rows as the warm does: skipped, counted, logged by
/// row, and paging goes on past them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_skips_and_counts_a_row_the_domain_rejects() {
    use session_core::{ListScope, PageLimit, PageRequest};
    let store = TempStore::new().await;
    let owner = account();
    let at = |seconds| epoch() + time::Duration::seconds(seconds);
    let (_, older) = session_at(owner, at(1));
    let (_, newer) = session_at(owner, at(3));
    for session in [&older, &newer] {
        store.insert(session).await.unwrap();
    }
    let micros = |seconds| at(seconds).unix_timestamp_nanos() / 1_000;
    let mut other = SqliteConnection::establish(store.path().to_str().unwrap()).unwrap();
    other
        .batch_execute(&format!(
            "INSERT INTO sessions (id, account_id, token_hash, created_at, label) \
             VALUES (x'{}', x'{}', randomblob(32), {}, 'secret' || char(7))",
            hex(Uuid::now_v7().as_bytes()),
            hex(owner.as_uuid().as_bytes()),
            micros(2),
        ))
        .unwrap();
    let service = SessionService::builder(Arc::new(store), Arc::new(MemoryCache::new())).build();

    let mut listed = Vec::new();
    let mut page = PageRequest {
        after: None,
        limit: PageLimit::new(1).unwrap(),
    };
    let mut pages = 0;
    loop {
        let read = service
            .list(owner, ListScope::IncludeRevoked, page)
            .await
            .unwrap();
        assert!(read.rejected.is_empty(), "the service counted them");
        pages += 1;
        listed.extend(read.sessions);
        match read.next {
            Some(next) => page.after = Some(next),
            None => break,
        }
    }
    assert_eq!(listed, [newer.clone(), older.clone()]);
    assert_eq!(pages, 3, "the rejected row ends a page of its own");
    assert_eq!(service.status().change_log_stats.rows_skipped, 1);
}
