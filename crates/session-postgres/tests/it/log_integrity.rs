//! The change log is written by its triggers alone, running as the schema's
//! owner: the service's role reads it and cannot change it, yet each of its
//! writes is logged. What the log cannot carry to the caches (a session's
//! identity rewritten, a revocation undone) is refused.

use session_core::port::change_log::{Change, ChangeLog, LogPosition, LogRead};
use session_core::port::store::{RevokeOutcome, SessionStore};
use session_core::testkit::{account, epoch, session_at};
use session_postgres::{PgConfig, PgSessionStore};
use tokio_postgres::error::SqlState;

use crate::change_log::{changes_since, role_with_documented_grants};
use crate::support::{fresh_store, sql_client};

/// A position after every entry visible now. The head is not one: it is the
/// oldest transaction running anywhere on the server (other tests' too), so
/// a read from it may return writes this test made just before.
async fn past_every_entry(store: &PgSessionStore) -> LogPosition {
    let mut at = store.head().await.unwrap();
    loop {
        let LogRead::Page(page) = store.read(at, 1_000).await.unwrap() else {
            panic!("the log expired a live position");
        };
        at = page.read_to;
        if !page.more {
            return at;
        }
    }
}

/// The SQLSTATE and, if it names one, the constraint of a failed statement.
async fn refusal(client: &tokio_postgres::Client, statement: &str) -> (SqlState, Option<String>) {
    let err = client
        .batch_execute(statement)
        .await
        .expect_err(&format!("refused: {statement}"));
    let db = err
        .as_db_error()
        .unwrap_or_else(|| panic!("{statement}: not a database error: {err}"));
    (db.code().clone(), db.constraint().map(str::to_owned))
}

/// The service's role (the documented grants) can neither add, change nor
/// remove an entry of the log, nor move its pruned bound, nor attach the
/// logging functions to a table of its own to write through them; its
/// writes to the sessions are logged all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_role_cannot_write_the_log_yet_its_writes_are_logged() {
    let (database, owner) = fresh_store().await;
    let url = role_with_documented_grants(&database, "app").await;
    let app = sql_client(&url).await;
    // Migrated by its owner already: this role could not.
    let store = PgSessionStore::connect(PgConfig::from_url(&url).unwrap())
        .await
        .unwrap();
    let start = owner.head().await.unwrap();

    let (_, revoked) = session_at(account(), epoch());
    let (_, kept) = session_at(account(), epoch());
    store.insert(&revoked).await.unwrap();
    store.insert(&kept).await.unwrap();
    assert!(matches!(
        store.revoke(revoked.id, epoch()).await.unwrap(),
        RevokeOutcome::Revoked { .. }
    ));
    let forgeries = [
        "INSERT INTO session.changes (kind) VALUES ('t')".to_owned(),
        "UPDATE session.changes SET kind = 'c' WHERE kind = 'r'".to_owned(),
        "DELETE FROM session.changes WHERE kind = 'r'".to_owned(),
        "TRUNCATE session.changes".to_owned(),
        "UPDATE session.change_log_state SET pruned_through = '0'".to_owned(),
        // Deleting is not granted either (the store never deletes).
        format!("DELETE FROM session.sessions WHERE id = '{}'", kept.id),
    ];
    // Through the logging functions, on a table of its own: a temporary
    // one needs no grant beyond the database's default.
    app.batch_execute(
        "CREATE TEMPORARY TABLE forged (id uuid, token_hash bytea, revoked_at timestamptz, \
         user_agent text, ip inet, label text)",
    )
    .await
    .unwrap();
    let attachments = [
        (
            "log_inserted",
            "INSERT",
            "REFERENCING NEW TABLE AS new_rows",
        ),
        (
            "log_updated",
            "UPDATE",
            "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows",
        ),
        ("log_deleted", "DELETE", "REFERENCING OLD TABLE AS old_rows"),
        ("log_truncated", "TRUNCATE", ""),
    ]
    .map(|(function, event, transitions)| {
        format!(
            "CREATE TRIGGER forge_{function} AFTER {event} ON pg_temp.forged {transitions} \
             FOR EACH STATEMENT EXECUTE FUNCTION session.{function}()"
        )
    });
    for statement in forgeries.iter().chain(&attachments) {
        assert_eq!(
            refusal(&app, statement).await,
            (SqlState::INSUFFICIENT_PRIVILEGE, None),
            "{statement}"
        );
    }

    assert_eq!(
        changes_since(&owner, start).await,
        vec![
            Change::Created(kept),
            Change::Revoked(vec![revoked.token_hash]),
        ],
        "every write is logged, nothing else; the revoked one's creation is left out"
    );
}

/// An UPDATE of a session's id, account, token hash or creation time is
/// refused, whoever runs it, and so is undoing or moving a revocation; the
/// row and the log stay as they were. Revoking, and the store's revoke of a
/// session already revoked, still work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewriting_a_sessions_identity_or_undoing_its_revocation_is_refused() {
    let (database, store) = fresh_store().await;
    let app = sql_client(&role_with_documented_grants(&database, "app").await).await;
    let owner = sql_client(database.url()).await;
    let (_, active) = session_at(account(), epoch());
    let (_, revoked) = session_at(account(), epoch());
    store.insert(&active).await.unwrap();
    store.insert(&revoked).await.unwrap();
    store.revoke(revoked.id, epoch()).await.unwrap();
    let revoked = store.get(revoked.id).await.unwrap().unwrap();
    let start = past_every_entry(&store).await;

    let rewrites = [
        format!("SET account_id = '{}'", account()),
        format!("SET token_hash = '\\x{}'", "ab".repeat(32)),
        format!("SET id = '{}'", session_core::SessionId::new()),
        "SET created_at = created_at + interval '1 microsecond'".to_owned(),
        // Alongside an allowed change, still refused whole.
        "SET label = 'renamed', account_id = gen_random_uuid()".to_owned(),
    ];
    for client in [&owner, &app] {
        for session in [&active, &revoked] {
            for rewrite in &rewrites {
                let statement = format!(
                    "UPDATE session.sessions {rewrite} WHERE id = '{}'",
                    session.id
                );
                assert_eq!(
                    refusal(client, &statement).await,
                    (
                        SqlState::CHECK_VIOLATION,
                        Some("sessions_identity_unchanged".to_owned())
                    ),
                    "{statement}"
                );
            }
        }
        for unrevoke in [
            "SET revoked_at = NULL",
            "SET revoked_at = revoked_at + interval '1 second'",
        ] {
            let statement = format!(
                "UPDATE session.sessions {unrevoke} WHERE id = '{}'",
                revoked.id
            );
            assert_eq!(
                refusal(client, &statement).await,
                (
                    SqlState::CHECK_VIOLATION,
                    Some("sessions_revoked_at_set_once".to_owned())
                ),
                "{statement}"
            );
        }
    }
    let message = app
        .batch_execute(&format!(
            "UPDATE session.sessions SET account_id = '{}' WHERE id = '{}'",
            account(),
            active.id
        ))
        .await
        .unwrap_err()
        .as_db_error()
        .unwrap()
        .message()
        .to_owned();
    assert!(
        message.contains(&active.id.to_string()) && message.contains("account_id"),
        "names the session and the column: {message}"
    );

    assert_eq!(store.get(active.id).await.unwrap().unwrap(), active);
    assert_eq!(store.get(revoked.id).await.unwrap().unwrap(), revoked);
    assert_eq!(changes_since(&store, start).await, Vec::new());
    // What the store does is allowed: revoke, and revoke again.
    assert!(matches!(
        store.revoke(revoked.id, epoch()).await.unwrap(),
        RevokeOutcome::AlreadyRevoked { .. }
    ));
    assert_eq!(
        store
            .revoke_all_for_account(active.account_id, None, epoch())
            .await
            .unwrap(),
        vec![active.token_hash]
    );
}
