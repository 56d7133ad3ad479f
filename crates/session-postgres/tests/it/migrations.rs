//! Migrations: idempotent, safe from several processes at once, and kept to
//! the `session` schema.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use session_postgres::{PgConfig, PgSessionStore};
use session_test_postgres::TestDatabase;

use crate::support::sql_client;

/// Every migration, oldest first.
const MIGRATIONS: [&str; 14] = [
    "2026-01-01-000000_create_sessions",
    "2026-01-02-000000_publish_changes",
    "2026-11-29-000000_change_log",
    "2026-11-30-000000_wake_after_commit",
    "2026-12-01-000000_session_activity",
    "2026-12-06-000000_change_log_cursor",
    "2026-12-06-000001_log_written_by_triggers",
    "2026-12-06-000002_finite_times",
    "2026-12-06-000003_revocation_reason",
    "2026-12-06-000004_session_events",
    "2026-12-06-000006_revoked_by",
    "2026-12-07-000001_not_before",
    "2026-12-07-000002_sequence_by_index",
    "2026-12-07-000003_wake_at_commit",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrating_twice_applies_each_migration_once() {
    let database = TestDatabase::create();
    let store = PgSessionStore::connect(PgConfig::from_url(database.url()).unwrap())
        .await
        .unwrap();
    assert_eq!(store.migrate().await.unwrap(), MIGRATIONS);
    assert_eq!(
        store.migrate().await.unwrap(),
        Vec::<String>::new(),
        "the second run finds nothing to do"
    );

    let client = sql_client(database.url()).await;
    let recorded: i64 = client
        .query_one(
            "SELECT count(*) FROM session.__diesel_schema_migrations",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(recorded, MIGRATIONS.len() as i64);
    // Nothing lands in the host application's schema, not even the bookkeeping.
    let in_public: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(in_public, 0);
    let tables: Vec<String> = client
        .query(
            "SELECT tablename::text FROM pg_tables WHERE schemaname = 'session' ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(
        tables,
        [
            "__diesel_schema_migrations",
            "change_log_marks",
            "change_log_state",
            "changes",
            "event_log_state",
            "events",
            "not_before",
            "session_activity",
            "sessions"
        ]
    );
}

/// Diesel's migration harness is synchronous; running it must not need a
/// multi-threaded runtime (a command-line `migrate` may well use a single thread).
#[tokio::test(flavor = "current_thread")]
async fn migrating_works_on_a_single_threaded_runtime() {
    let database = TestDatabase::create();
    let store = PgSessionStore::connect(PgConfig::from_url(database.url()).unwrap())
        .await
        .unwrap();
    assert_eq!(store.migrate().await.unwrap(), MIGRATIONS);
}

/// Set in the child processes of `two_processes_migrating_at_once_both_succeed`.
const MIGRATOR_URL: &str = "SESSION_POSTGRES_TEST_MIGRATOR_URL";
const READY: &str = "migrator ready";
const APPLIED: &str = "migrator applied:";

/// Runs this same test in two child processes, which connect, wait until both
/// are connected, then migrate the same fresh database at the same moment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_migrating_at_once_both_succeed() {
    if let Ok(url) = std::env::var(MIGRATOR_URL) {
        return migrate_as_child(&url).await;
    }
    let database = TestDatabase::create();
    let mut children: Vec<_> = (0..2)
        .map(|_| {
            Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "migrations::two_processes_migrating_at_once_both_succeed",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(MIGRATOR_URL, database.url())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut outputs: Vec<_> = children
        .iter_mut()
        .map(|child| BufReader::new(child.stdout.take().unwrap()))
        .collect();
    for output in &mut outputs {
        // The test harness prints the test's name on the same line first.
        let mut line = String::new();
        while !line.trim_end().ends_with(READY) {
            line.clear();
            assert_ne!(
                output.read_line(&mut line).unwrap(),
                0,
                "a migrator exited before connecting"
            );
        }
    }
    // Both are connected: release them together.
    for child in &mut children {
        child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    }

    let mut applied = Vec::new();
    for (mut child, output) in children.into_iter().zip(outputs) {
        for line in output.lines() {
            let line = line.unwrap();
            if let Some(at) = line.find(APPLIED) {
                applied.push(line[at + APPLIED.len()..].trim().to_owned());
            }
        }
        assert!(child.wait().unwrap().success(), "a migrator failed");
    }
    applied.sort();
    assert_eq!(
        applied,
        ["".to_owned(), MIGRATIONS.join(",")],
        "one process applied the migrations, the other found them done"
    );
}

async fn migrate_as_child(url: &str) {
    let store = PgSessionStore::connect(PgConfig::from_url(url).unwrap())
        .await
        .unwrap();
    println!("{READY}");
    let mut go = String::new();
    std::io::stdin().read_line(&mut go).unwrap();
    let applied = store.migrate().await.unwrap();
    println!("{APPLIED} {}", applied.join(","));
}

/// The migrations after the change log's, newest first, with their
/// `down.sql`: reverting it means reverting them first.
const AFTER_THE_CHANGE_LOG: [(&str, &str); 7] = [
    (
        "20261206000006",
        include_str!("../../../../migrations/postgres/2026-12-06-000006_revoked_by/down.sql"),
    ),
    (
        "20261206000004",
        include_str!("../../../../migrations/postgres/2026-12-06-000004_session_events/down.sql"),
    ),
    (
        "20261206000003",
        include_str!(
            "../../../../migrations/postgres/2026-12-06-000003_revocation_reason/down.sql"
        ),
    ),
    (
        "20261206000002",
        include_str!("../../../../migrations/postgres/2026-12-06-000002_finite_times/down.sql"),
    ),
    (
        "20261206000001",
        include_str!(
            "../../../../migrations/postgres/2026-12-06-000001_log_written_by_triggers/down.sql"
        ),
    ),
    (
        "20261206000000",
        include_str!(
            "../../../../migrations/postgres/2026-12-06-000000_change_log_cursor/down.sql"
        ),
    ),
    (
        "20261201000000",
        include_str!("../../../../migrations/postgres/2026-12-01-000000_session_activity/down.sql"),
    ),
];

/// Reverts every migration after the change log's, as `diesel migration
/// revert` would, newest first.
async fn revert_after_the_change_log(client: &tokio_postgres::Client) {
    for (version, down) in AFTER_THE_CHANGE_LOG {
        client.batch_execute(down).await.unwrap();
        client
            .execute(
                "DELETE FROM session.__diesel_schema_migrations WHERE version = $1",
                &[&version],
            )
            .await
            .unwrap();
    }
}

/// The change log's migration reverts to exactly the schema before it (the
/// notifying triggers), and applies again after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_change_log_migration_reverts_and_reapplies() {
    const UP: &str =
        include_str!("../../../../migrations/postgres/2026-11-29-000000_change_log/up.sql");
    const DOWN: &str =
        include_str!("../../../../migrations/postgres/2026-11-29-000000_change_log/down.sql");
    let (database, _store) = crate::support::fresh_store().await;
    let client = sql_client(database.url()).await;
    revert_after_the_change_log(&client).await;
    let schema = || {
        let client = &client;
        async move {
            client
                .query(
                    "SELECT tgname::text FROM pg_trigger \
                     WHERE tgrelid = 'session.sessions'::regclass AND NOT tgisinternal \
                     UNION ALL \
                     SELECT conname::text FROM pg_constraint \
                     WHERE conrelid = 'session.sessions'::regclass \
                     UNION ALL \
                     SELECT tablename::text FROM pg_tables WHERE schemaname = 'session' \
                     ORDER BY 1",
                    &[],
                )
                .await
                .unwrap()
                .iter()
                .map(|row| row.get::<_, String>(0))
                .collect::<Vec<_>>()
        }
    };
    let logging = schema().await;
    assert!(
        logging.contains(&"sessions_log_inserted".to_owned()),
        "{logging:?}"
    );
    assert!(logging.contains(&"changes".to_owned()), "{logging:?}");
    client.batch_execute(DOWN).await.unwrap();
    let notifying = schema().await;
    assert!(
        notifying.contains(&"sessions_publish_created".to_owned()),
        "{notifying:?}"
    );
    assert!(!notifying.contains(&"changes".to_owned()), "{notifying:?}");
    assert!(
        !notifying.contains(&"sessions_label_text".to_owned()),
        "{notifying:?}"
    );
    client.batch_execute(UP).await.unwrap();
    assert_eq!(schema().await, logging);
}

/// The migration that has the triggers log as the owner reverts to logging
/// as the writer (and to allowing identity rewrites), and applies again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_logging_migration_reverts_and_reapplies() {
    const UP: &str = include_str!(
        "../../../../migrations/postgres/2026-12-06-000001_log_written_by_triggers/up.sql"
    );
    const DOWN: &str = include_str!(
        "../../../../migrations/postgres/2026-12-06-000001_log_written_by_triggers/down.sql"
    );
    let (database, _store) = crate::support::fresh_store().await;
    let client = sql_client(database.url()).await;
    // Each function of the schema: whether it runs as its owner, whether
    // PUBLIC may execute it, and whether it logs metadata; then the triggers.
    let schema = || {
        let client = &client;
        async move {
            client
                .query(
                    "SELECT format('%s definer=%s public=%s metadata=%s', proname, prosecdef, \
                         has_function_privilege('public', oid, 'EXECUTE'), \
                         prosrc LIKE '%user_agent%') \
                     FROM pg_proc WHERE pronamespace = 'session'::regnamespace \
                     UNION ALL \
                     SELECT tgname::text FROM pg_trigger \
                     WHERE tgrelid = 'session.sessions'::regclass AND NOT tgisinternal \
                     ORDER BY 1",
                    &[],
                )
                .await
                .unwrap()
                .iter()
                .map(|row| row.get::<_, String>(0))
                .collect::<Vec<_>>()
        }
    };
    let by_owner = schema().await;
    for expected in [
        "log_inserted definer=t public=f metadata=f",
        "log_updated definer=t public=f metadata=t",
        "log_deleted definer=t public=f metadata=f",
        "log_truncated definer=t public=f metadata=f",
        "sessions_refuse_identity_rewrite",
    ] {
        assert!(by_owner.contains(&expected.to_owned()), "{by_owner:?}");
    }
    client.batch_execute(DOWN).await.unwrap();
    let by_writer = schema().await;
    for expected in [
        "log_inserted definer=f public=t metadata=f",
        "log_updated definer=f public=t metadata=f",
        "log_deleted definer=f public=t metadata=f",
        "log_truncated definer=f public=t metadata=f",
    ] {
        assert!(by_writer.contains(&expected.to_owned()), "{by_writer:?}");
    }
    assert!(
        !by_writer
            .iter()
            .any(|name| name.contains("refuse_identity")),
        "{by_writer:?}"
    );
    client.batch_execute(UP).await.unwrap();
    assert_eq!(schema().await, by_owner);
}

/// With migrations off, a schema behind this build is refused, and so is
/// one ahead of it, with or without migrations: neither is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_behind_or_ahead_of_this_build_is_refused() {
    let database = TestDatabase::create();
    let store = PgSessionStore::connect(PgConfig::from_url(database.url()).unwrap())
        .await
        .unwrap();
    let err = store.check_schema().await.unwrap_err();
    let text = crate::support::chain(&err);
    assert!(
        text.contains("session-app migrate"),
        "says what to do: {text}"
    );

    store.migrate().await.unwrap();
    store.check_schema().await.unwrap();

    // Half-migrated: the change log's migration undone, and those after it.
    let client = sql_client(database.url()).await;
    revert_after_the_change_log(&client).await;
    client
        .batch_execute(include_str!(
            "../../../../migrations/postgres/2026-11-29-000000_change_log/down.sql"
        ))
        .await
        .unwrap();
    client
        .batch_execute(
            "DELETE FROM session.__diesel_schema_migrations WHERE version = '20261129000000'",
        )
        .await
        .unwrap();
    let text = crate::support::chain(&store.check_schema().await.unwrap_err());
    assert!(
        text.contains("20261129000000"),
        "names what is pending: {text}"
    );
    store.migrate().await.unwrap();
    store.check_schema().await.unwrap();

    // Migrated by a newer build.
    client
        .batch_execute(
            "INSERT INTO session.__diesel_schema_migrations (version) VALUES ('20991231000000')",
        )
        .await
        .unwrap();
    for err in [
        store.check_schema().await.unwrap_err(),
        store.migrate().await.unwrap_err(),
    ] {
        let text = crate::support::chain(&err);
        assert!(text.contains("newer version"), "{text}");
        assert!(text.contains("20991231000000"), "{text}");
    }
}

/// Any role can take the advisory lock migrators share: a migration waits
/// for it only as long as allowed, then fails saying who to look for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_lock_held_elsewhere_fails_the_migration_in_time() {
    let database = TestDatabase::create();
    let holder = sql_client(database.url()).await;
    holder
        .batch_execute("SELECT pg_advisory_lock(8315179226536832512)")
        .await
        .unwrap();
    let store = PgSessionStore::connect(
        PgConfig::from_url(database.url())
            .unwrap()
            .migration_lock_timeout(std::time::Duration::from_millis(300)),
    )
    .await
    .unwrap();
    let err = tokio::time::timeout(std::time::Duration::from_secs(30), store.migrate())
        .await
        .expect("the migration waited past its limit")
        .unwrap_err();
    let text = crate::support::chain(&err);
    assert!(text.contains("migration lock"), "{text}");
    assert!(
        text.contains("pg_locks"),
        "says how to find the holder: {text}"
    );
    holder
        .batch_execute("SELECT pg_advisory_unlock(8315179226536832512)")
        .await
        .unwrap();
    assert_eq!(store.migrate().await.unwrap().len(), MIGRATIONS.len());
}

/// An existing `session` schema another role owns is refused: its owner can
/// replace the triggers that log every change. Trusted explicitly, it is used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_another_role_owns_is_refused_unless_trusted() {
    let database = TestDatabase::create();
    let owner = format!("owner_{}", database.name());
    sql_client(database.url())
        .await
        .batch_execute(&format!(
            "CREATE ROLE {owner}; CREATE SCHEMA session AUTHORIZATION {owner}"
        ))
        .await
        .unwrap();
    let store = PgSessionStore::connect(PgConfig::from_url(database.url()).unwrap())
        .await
        .unwrap();
    let text = crate::support::chain(&store.migrate().await.unwrap_err());
    assert!(text.contains(&owner), "names the owner: {text}");
    assert!(text.contains("trust"), "says how to proceed: {text}");
    let tables: i64 = sql_client(database.url())
        .await
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'session'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(tables, 0, "nothing was created in it");

    let trusting = PgSessionStore::connect(
        PgConfig::from_url(database.url())
            .unwrap()
            .trust_schema_owner(true),
    )
    .await
    .unwrap();
    assert_eq!(trusting.migrate().await.unwrap().len(), MIGRATIONS.len());
}
