//! Opening files: new, existing, foreign, newer, and the schema's own checks.

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::Text;
use session_core::port::store::SessionStore;
use session_core::testkit::{account, epoch, session_at};
use session_sqlite::{OpenError, SqliteOptions, SqliteSessionStore};

use crate::support::temp_db;

fn raw(path: &std::path::Path) -> SqliteConnection {
    SqliteConnection::establish(path.to_str().expect("a UTF-8 temp path"))
        .expect("a raw connection")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_missing_directories_and_keeps_sessions_across_reopen() {
    let (dir, _) = temp_db();
    let path = dir.path().join("a").join("b").join("sessions.db");

    let store = SqliteSessionStore::open(&path).await.unwrap();
    assert!(path.is_file(), "the file and its directories were created");
    assert!(
        !store.migrations_applied().is_empty(),
        "a new file gets every migration"
    );
    let (_, session) = session_at(account(), epoch());
    store.insert(&session).await.unwrap();
    drop(store);

    let reopened = SqliteSessionStore::open(&path).await.unwrap();
    assert_eq!(
        reopened.migrations_applied(),
        &[] as &[String],
        "nothing left to apply"
    );
    assert_eq!(reopened.get(session.id).await.unwrap(), Some(session));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_is_not_a_database_is_refused_and_left_untouched() {
    let (dir, path) = temp_db();
    let garbage: Vec<u8> = (0..8192u32).map(|i| (i * 7 + 3) as u8).collect();
    std::fs::write(&path, &garbage).unwrap();

    let err = SqliteSessionStore::open(&path).await.unwrap_err();
    assert!(
        matches!(&err, OpenError::NotADatabase { path: p } if *p == path),
        "got {err:?}"
    );
    let message = err.to_string();
    assert!(
        message.contains(&path.display().to_string()),
        "names the file: {message}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), garbage, "not overwritten");
    let mut names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["sessions.db", "sessions.db.lock"],
        "no log or journal was left beside it, only the store's lock file"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_migrated_by_a_newer_version_is_refused() {
    let (_dir, path) = temp_db();
    drop(SqliteSessionStore::open(&path).await.unwrap());
    raw(&path)
        .batch_execute(
            "INSERT INTO __diesel_schema_migrations (version) VALUES ('99991231235959');",
        )
        .unwrap();

    let err = SqliteSessionStore::open(&path).await.unwrap_err();
    match &err {
        OpenError::NewerSchema { path: p, versions } => {
            assert_eq!(p, &path);
            assert_eq!(versions, &["99991231235959"]);
        }
        other => panic!("expected NewerSchema, got {other:?}"),
    }
    let message = err.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("99991231235959"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opening_without_migrating_refuses_a_schema_that_is_behind() {
    let (_dir, path) = temp_db();
    let no_migrate = || SqliteOptions::default().migrate(false);

    let err = SqliteSessionStore::open_with(&path, no_migrate())
        .await
        .unwrap_err();
    match &err {
        OpenError::PendingMigrations { path: p, versions } => {
            assert_eq!(p, &path);
            assert!(!versions.is_empty());
        }
        other => panic!("expected PendingMigrations, got {other:?}"),
    }

    let migrated = SqliteSessionStore::open(&path).await.unwrap();
    let applied = migrated.migrations_applied().to_vec();
    drop(migrated);
    if let OpenError::PendingMigrations { versions, .. } = err {
        assert_eq!(versions, applied, "it listed what migrating then applied");
    }
    let store = SqliteSessionStore::open_with(&path, no_migrate())
        .await
        .unwrap();
    assert!(store.migrations_applied().is_empty());
    store.health_check().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_in_place_of_the_file_is_an_error_naming_it() {
    let (_dir, path) = temp_db();
    std::fs::create_dir(&path).unwrap();
    let err = SqliteSessionStore::open(&path).await.unwrap_err();
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
}

#[derive(QueryableByName)]
struct JournalMode {
    #[diesel(sql_type = Text)]
    journal_mode: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_file_is_left_in_write_ahead_log_mode() {
    let (_dir, path) = temp_db();
    let _store = SqliteSessionStore::open(&path).await.unwrap();
    // The journal mode is recorded in the file, so any new connection sees it.
    let JournalMode { journal_mode } = diesel::sql_query("PRAGMA journal_mode")
        .get_result(&mut raw(&path))
        .unwrap();
    assert_eq!(journal_mode, "wal");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schema_rejects_malformed_rows() {
    let (_dir, path) = temp_db();
    drop(SqliteSessionStore::open(&path).await.unwrap());
    let mut conn = raw(&path);
    let insert = |hash_len: usize, id_len: usize| {
        format!(
            "INSERT INTO sessions (id, account_id, token_hash, created_at) \
             VALUES (zeroblob({id_len}), randomblob(16), randomblob({hash_len}), 0);"
        )
    };
    conn.batch_execute(&insert(32, 16))
        .expect("a well-formed row is accepted");
    for (hash_len, id_len) in [(31, 16), (33, 16), (32, 15)] {
        let err = conn.batch_execute(&insert(hash_len, id_len)).unwrap_err();
        assert!(
            err.to_string().contains("CHECK constraint failed"),
            "hash {hash_len} bytes, id {id_len} bytes: {err}"
        );
    }
    let err = conn
        .batch_execute(
            "INSERT INTO sessions (id, account_id, token_hash, created_at) \
             VALUES (randomblob(16), randomblob(16), randomblob(32), 'yesterday');",
        )
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("cannot store TEXT value in INTEGER column"),
        "STRICT types: {err}"
    );
}
