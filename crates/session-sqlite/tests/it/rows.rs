//! Rows written by other SQL that the domain rejects: the warm skips them,
//! a read by id names them, and neither repeats the stored value.

use std::sync::Arc;

use diesel::connection::SimpleConnection;
use diesel::{Connection, SqliteConnection};
use session_core::port::cache::SessionCache;
use session_core::port::store::{SessionStore, StoreError};
use session_core::testkit::{account, epoch, session_at};
use session_core::{
    CompactCache, ListScope, MemoryCache, PageRequest, SessionId, SessionIdentity, SessionService,
};
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

/// A compact cache's warm reads only identities, and checks them as a
/// whole row's are: a row with a nil account is skipped and counted, and
/// paging goes on past it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compact_warm_skips_and_counts_a_row_whose_identity_the_domain_rejects() {
    let store = TempStore::new().await;
    let good: Vec<_> = (0..3).map(|_| session_at(account(), epoch())).collect();
    for (_, session) in &good {
        store.insert(session).await.unwrap();
    }
    let poison = SessionId::from_uuid(Uuid::now_v7());
    let mut other = SqliteConnection::establish(store.path().to_str().unwrap()).unwrap();
    other
        .batch_execute(&format!(
            "INSERT INTO sessions (id, account_id, token_hash, created_at) \
             VALUES (x'{}', zeroblob(16), randomblob(32), 0)",
            hex(poison.as_uuid().as_bytes()),
        ))
        .unwrap();
    let late = session_at(account(), epoch()).1;
    store.insert(&late).await.unwrap();

    let cache = Arc::new(CompactCache::new());
    let service = SessionService::builder(Arc::new(store), cache.clone())
        .warm_page_size(1)
        .build();
    let report = service.warm().await.unwrap();
    assert_eq!(report.sessions, 4, "every good row: {report:?}");
    assert_eq!(service.status().change_log_stats.rows_skipped, 1);
    for session in good.iter().map(|(_, session)| session).chain([&late]) {
        assert_eq!(
            cache.get(&session.token_hash),
            Some(SessionIdentity::from(session))
        );
    }
}

/// A list meets rejected rows as the warm does: skipped, counted, logged by
/// row, and paging goes on past them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_skips_and_counts_a_row_the_domain_rejects() {
    use session_core::PageLimit;
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

/// Microseconds since the Unix epoch of the first and last instants the
/// domain accepts (years 0001 and 9999), and of the epochs.
const EARLIEST: i64 = -62_135_596_800_000_000;
const LATEST: i64 = 253_402_300_799_999_999;

/// Rows written by other SQL before the schema refused them, one poison of
/// each kind SQLite can hold, each beside a valid row of its own account:
/// the warm skips and counts every active one, a list skips it, a read by
/// id names its column and never its value, and the valid rows work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_of_every_kind_is_skipped_and_counted_never_a_failed_read() {
    let store = TempStore::new().await;
    let mut other = SqliteConnection::establish(store.path().to_str().unwrap()).unwrap();
    // As stored before the range triggers (or by a file another build wrote).
    other
        .batch_execute(
            "DROP TRIGGER sessions_times_in_range_on_insert; \
             DROP TRIGGER sessions_revoked_at_in_range_on_update;",
        )
        .unwrap();
    // (column, created_at, revoked_at, user_agent, label) as SQL.
    let cases = [
        (
            "created_at",
            (LATEST + 1).to_string(),
            "NULL",
            "NULL",
            "NULL",
        ),
        (
            "created_at",
            (EARLIEST - 1).to_string(),
            "NULL",
            "NULL",
            "NULL",
        ),
        ("created_at", i64::MAX.to_string(), "NULL", "NULL", "NULL"),
        ("created_at", i64::MIN.to_string(), "NULL", "NULL", "NULL"),
        (
            "revoked_at",
            "0".to_owned(),
            "9223372036854775807",
            "NULL",
            "NULL",
        ),
        (
            "revoked_at",
            "0".to_owned(),
            "-9223372036854775808",
            "NULL",
            "NULL",
        ),
        // 'secret' then bytes that are not UTF-8, stored as text.
        (
            "user_agent",
            "0".to_owned(),
            "NULL",
            "CAST(x'736563726574fffe' AS TEXT)",
            "NULL",
        ),
        (
            "label",
            "0".to_owned(),
            "NULL",
            "NULL",
            "CAST(x'736563726574c3' AS TEXT)",
        ),
    ];
    let mut poisoned = Vec::new();
    let mut valid = Vec::new();
    for (column, created_at, revoked_at, user_agent, label) in &cases {
        let owner = account();
        let (token, session) = session_at(owner, epoch());
        store.insert(&session).await.unwrap();
        valid.push((owner, token, session));
        let id = SessionId::from_uuid(Uuid::now_v7());
        other
            .batch_execute(&format!(
                "INSERT INTO sessions \
                 (id, account_id, token_hash, created_at, revoked_at, user_agent, label) \
                 VALUES (x'{}', x'{}', randomblob(32), {created_at}, {revoked_at}, \
                 {user_agent}, {label})",
                hex(id.as_uuid().as_bytes()),
                hex(owner.as_uuid().as_bytes()),
            ))
            .unwrap();
        poisoned.push((*column, id, owner, *revoked_at == "NULL"));
    }

    for (column, id, _, _) in &poisoned {
        let err = store.get(*id).await.unwrap_err();
        assert!(matches!(err, StoreError::Failed(_)), "{column}: {err:?}");
        let text = format!("{err}: {}", std::error::Error::source(&err).unwrap());
        assert!(text.contains(&id.to_string()), "names the row: {text}");
        assert!(text.contains(column), "names the column: {text}");
        assert!(!text.contains("secret"), "never the value: {text}");
    }

    let service = SessionService::builder(Arc::new(store), Arc::new(MemoryCache::new()))
        .warm_page_size(2)
        .build();
    let report = service.warm().await.unwrap();
    assert_eq!(report.sessions, valid.len(), "every valid row: {report:?}");
    let active_poison = poisoned.iter().filter(|(.., active)| *active).count();
    let stats = || service.status().change_log_stats.rows_skipped;
    assert_eq!(stats(), active_poison as u64);
    for (_, token, _) in &valid {
        assert!(service.resolve(token.expose_secret()).await.is_ok());
    }

    for ((column, _, owner, _), (_, _, session)) in poisoned.iter().zip(&valid) {
        let before = stats();
        let page = service
            .list(*owner, ListScope::IncludeRevoked, PageRequest::default())
            .await
            .unwrap();
        assert_eq!(page.sessions, std::slice::from_ref(session), "{column}");
        // A `created_at` out of range names no place in the list: such a
        // row is left out of it uncounted; any other is counted.
        let counted = u64::from(*column != "created_at");
        assert_eq!(stats(), before + counted, "{column}");
    }
}

/// The schema refuses instants the domain cannot hold, as PostgreSQL's
/// checks do, but only in the column a statement sets: a row stored
/// before can still be revoked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schema_refuses_instants_out_of_range_in_the_columns_written() {
    let store = TempStore::new().await;
    let mut other = SqliteConnection::establish(store.path().to_str().unwrap()).unwrap();
    let insert = |created_at: i64, revoked_at: &str| {
        format!(
            "INSERT INTO sessions (id, account_id, token_hash, created_at, revoked_at) \
             VALUES (randomblob(16), randomblob(16), randomblob(32), {created_at}, {revoked_at})"
        )
    };
    for (created_at, revoked_at) in [
        (LATEST + 1, "NULL".to_owned()),
        (EARLIEST - 1, "NULL".to_owned()),
        (0, (LATEST + 1).to_string()),
        (0, (EARLIEST - 1).to_string()),
    ] {
        let err = other
            .batch_execute(&insert(created_at, &revoked_at))
            .unwrap_err();
        assert!(err.to_string().contains("years 0001 to 9999"), "{err}");
    }
    for (created_at, revoked_at) in [(EARLIEST, "NULL".to_owned()), (LATEST, LATEST.to_string())] {
        other
            .batch_execute(&insert(created_at, &revoked_at))
            .unwrap();
    }
    for update in [
        "UPDATE sessions SET created_at = 253402300800000000",
        "UPDATE sessions SET revoked_at = -62135596800000001",
    ] {
        assert!(other.batch_execute(update).is_err(), "{update}");
    }
    let seen = "INSERT INTO session_activity (session_id, last_seen_at) \
                SELECT id, 253402300800000000 FROM sessions LIMIT 1";
    assert!(other.batch_execute(seen).is_err());

    // Stored before the triggers: revoking it sets only `revoked_at`.
    other
        .batch_execute("DROP TRIGGER sessions_times_in_range_on_insert")
        .unwrap();
    let (_, session) = session_at(account(), epoch());
    store.insert(&session).await.unwrap();
    other
        .batch_execute(&format!(
            "UPDATE sessions SET created_at = {} WHERE id = x'{}'",
            i64::MAX,
            hex(session.id.as_uuid().as_bytes())
        ))
        .unwrap_err();
    other
        .batch_execute(&format!(
            "DROP TRIGGER sessions_created_at_in_range_on_update; \
             UPDATE sessions SET created_at = {} WHERE id = x'{}'",
            i64::MAX,
            hex(session.id.as_uuid().as_bytes())
        ))
        .unwrap();
    let revoked = store
        .revoke_all_for_account(
            session.account_id,
            None,
            epoch(),
            session_core::RevocationReason::LOGOUT,
            None,
        )
        .await
        .unwrap();
    assert_eq!(revoked, [session.token_hash]);
}

/// The schema holds revocation reasons to the domain's grammar, so other
/// SQL cannot store one the domain refuses, nor a reason on an active
/// session; a revoked row with no reason (one revoked before reasons were
/// recorded) is stored and reads as `None`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schema_refuses_a_revocation_reason_the_domain_refuses() {
    let store = TempStore::new().await;
    let mut other = SqliteConnection::establish(store.path().to_str().unwrap()).unwrap();
    let insert = |other: &mut SqliteConnection, revoked_at: &str, reason: &str| {
        other.batch_execute(&format!(
            "INSERT INTO sessions (id, account_id, token_hash, created_at, revoked_at, \
             revocation_reason) VALUES (randomblob(16), randomblob(16), randomblob(32), 0, \
             {revoked_at}, {reason})"
        ))
    };
    let too_long = format!("'{}'", "a".repeat(33));
    for reason in [
        "''",
        "'Logout'",
        "'1st'",
        "'_x'",
        "'pass word'",
        "'a-b'",
        "'idle' || char(10)",
        "'d' || char(233)",
        too_long.as_str(),
    ] {
        let refused = insert(&mut other, "60", reason);
        assert!(refused.is_err(), "{reason} was stored");
    }
    assert!(
        insert(&mut other, "NULL", "'logout'").is_err(),
        "a reason on an active session was stored"
    );
    let longest = format!("'a{}'", "b_9".repeat(10) + "z");
    for reason in ["'logout'", "'password_change'", longest.as_str(), "NULL"] {
        insert(&mut other, "60", reason).unwrap();
    }

    let old = SessionId::from_uuid(Uuid::now_v7());
    other
        .batch_execute(&format!(
            "INSERT INTO sessions (id, account_id, token_hash, created_at, revoked_at) \
             VALUES (x'{}', randomblob(16), randomblob(32), 0, 60)",
            hex(old.as_uuid().as_bytes()),
        ))
        .unwrap();
    let read = store.get(old).await.unwrap().expect("stored");
    assert!(read.revoked_at().is_some());
    assert_eq!(read.revocation_reason(), None);
}

/// A row holding a reason the domain refuses (the schema's check turned
/// off to write it) is skipped and counted by a list, like any other
/// rejected row, and named by a read by id without its value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_reason_the_domain_refuses_is_skipped_and_counted() {
    let store = TempStore::new().await;
    let owner = account();
    let (_, good) = session_at(owner, epoch());
    store.insert(&good).await.unwrap();
    let poison = SessionId::from_uuid(Uuid::now_v7());
    let mut other = SqliteConnection::establish(store.path().to_str().unwrap()).unwrap();
    other
        .batch_execute(&format!(
            "PRAGMA ignore_check_constraints = ON; \
             INSERT INTO sessions (id, account_id, token_hash, created_at, revoked_at, \
             revocation_reason) VALUES (x'{}', x'{}', randomblob(32), 0, 60, 'Secret Words');",
            hex(poison.as_uuid().as_bytes()),
            hex(owner.as_uuid().as_bytes()),
        ))
        .unwrap();

    let err = store.get(poison).await.unwrap_err();
    let text = format!("{err}: {}", std::error::Error::source(&err).unwrap());
    assert!(
        text.contains("revocation_reason"),
        "names the column: {text}"
    );
    assert!(!text.contains("Secret"), "never the value: {text}");

    let service = SessionService::builder(Arc::new(store), Arc::new(MemoryCache::new())).build();
    let page = service
        .list(
            owner,
            ListScope::IncludeRevoked,
            PageRequest {
                after: None,
                limit: session_core::PageLimit::DEFAULT,
            },
        )
        .await
        .unwrap();
    assert_eq!(page.sessions, vec![good]);
    assert_eq!(service.status().change_log_stats.rows_skipped, 1);
}

/// The schema holds who revoked a session to the grammar of a reason, on
/// revoked sessions only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schema_refuses_a_revoker_the_domain_refuses() {
    let store = TempStore::new().await;
    let mut other = SqliteConnection::establish(store.path().to_str().unwrap()).unwrap();
    let insert = |other: &mut SqliteConnection, revoked_at: &str, by: &str| {
        other.batch_execute(&format!(
            "INSERT INTO sessions (id, account_id, token_hash, created_at, revoked_at, \
             revoked_by) VALUES (randomblob(16), randomblob(16), randomblob(32), 0, \
             {revoked_at}, {by})"
        ))
    };
    for (revoked_at, by) in [
        ("60", "''"),
        ("60", "'Writer'"),
        ("60", "'key one'"),
        ("60", "'d' || char(233)"),
        ("NULL", "'writer'"),
    ] {
        let refused = insert(&mut other, revoked_at, by);
        assert!(refused.is_err(), "{revoked_at} {by}");
    }
    insert(&mut other, "60", "'writer'").unwrap();
}
