//! The change log is written by its triggers alone, running as the schema's
//! owner: the service's role reads it and cannot change it, yet each of its
//! writes is logged. What the log cannot carry to the caches (a session's
//! identity rewritten, a revocation undone) is refused; what it can (a
//! rewritten user agent, IP or label) reaches them.

use std::time::Duration;

use session_core::port::change_log::{Change, ChangeLog, LogCursor, LogRead};
use session_core::port::store::{RevokeOutcome, SessionStore};
use session_core::testkit::{account, epoch, session_at};
use session_core::{ClientMetadata, Label};
use session_postgres::{PgConfig, PgSessionStore};
use session_test_postgres::TestDatabase;
use tokio_postgres::error::SqlState;

use crate::change_log::{changes_since, role_with_documented_grants};
use crate::support::{fresh_store, ready_pair, sql_client, until};

/// A cursor after every entry visible now: the head, read to the end.
async fn past_every_entry(store: &PgSessionStore) -> LogCursor {
    let mut at = store.head().await.unwrap();
    loop {
        let LogRead::Page(page) = store.read(&at, 1_000).await.unwrap() else {
            panic!("the log expired a live cursor");
        };
        at = page.next;
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
    let (_, relabelled) = session_at(account(), epoch());
    store.insert(&revoked).await.unwrap();
    store.insert(&relabelled).await.unwrap();
    assert!(matches!(
        store
            .revoke(
                revoked.id,
                epoch(),
                session_core::RevocationReason::LOGOUT,
                None
            )
            .await
            .unwrap(),
        RevokeOutcome::Revoked { .. }
    ));
    app.batch_execute(&format!(
        "UPDATE session.sessions SET label = 'renamed' WHERE id = '{}'",
        relabelled.id
    ))
    .await
    .unwrap();

    let forgeries = [
        "INSERT INTO session.changes (kind) VALUES ('t')".to_owned(),
        "UPDATE session.changes SET kind = 'c' WHERE kind = 'r'".to_owned(),
        "DELETE FROM session.changes WHERE kind = 'r'".to_owned(),
        "TRUNCATE session.changes".to_owned(),
        "UPDATE session.change_log_state SET pruned_through = '0'".to_owned(),
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

    let relabelled = owner.get(relabelled.id).await.unwrap().unwrap();
    assert_eq!(
        relabelled.metadata.label.as_ref().map(Label::as_str),
        Some("renamed")
    );
    assert_eq!(
        changes_since(&owner, &start).await,
        vec![
            // Its creation and its relabelling, each joined to the row as it is now.
            Change::Created(relabelled.clone()),
            Change::Revoked(vec![revoked.token_hash]),
            Change::Created(relabelled),
        ],
        "every write is logged, nothing else; the revoked one's creation is left out"
    );
}

/// An UPDATE of a session's id, account, token hash or creation time is
/// refused, whoever runs it, and so is undoing or moving a revocation or
/// rewriting its reason; the
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
    store
        .revoke(
            revoked.id,
            epoch(),
            session_core::RevocationReason::LOGOUT,
            None,
        )
        .await
        .unwrap();
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
        for rewrite in [
            "SET revocation_reason = 'admin'",
            "SET revocation_reason = NULL",
        ] {
            let statement = format!(
                "UPDATE session.sessions {rewrite} WHERE id = '{}'",
                revoked.id
            );
            assert_eq!(
                refusal(client, &statement).await,
                (
                    SqlState::CHECK_VIOLATION,
                    Some("sessions_revocation_reason_set_once".to_owned())
                ),
                "{statement}"
            );
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
    assert_eq!(changes_since(&store, &start).await, Vec::new());
    // What the store does is allowed: revoke, and revoke again.
    assert!(matches!(
        store
            .revoke(
                revoked.id,
                epoch(),
                session_core::RevocationReason::LOGOUT,
                None
            )
            .await
            .unwrap(),
        RevokeOutcome::AlreadyRevoked { .. }
    ));
    assert_eq!(
        store
            .revoke_all_for_account(
                active.account_id,
                None,
                epoch(),
                session_core::RevocationReason::LOGOUT,
                None
            )
            .await
            .unwrap(),
        vec![active.token_hash]
    );
}

/// A rewrite of an active session's user agent, IP or label is logged as
/// its creation, so a reader takes the row as it is now; one that changes
/// nothing, or touches a revoked session, is not logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metadata_rewrite_of_an_active_session_is_logged() {
    let (database, store) = fresh_store().await;
    let (_, active) = session_at(account(), epoch());
    let (_, revoked) = session_at(account(), epoch());
    store.insert(&active).await.unwrap();
    store.insert(&revoked).await.unwrap();
    store
        .revoke(
            revoked.id,
            epoch(),
            session_core::RevocationReason::LOGOUT,
            None,
        )
        .await
        .unwrap();
    let start = past_every_entry(&store).await;

    let client = sql_client(database.url()).await;
    for statement in [
        format!(
            "UPDATE session.sessions SET label = label, ip = ip WHERE id = '{}'",
            active.id
        ),
        format!(
            "UPDATE session.sessions SET label = 'gone' WHERE id = '{}'",
            revoked.id
        ),
    ] {
        client.batch_execute(&statement).await.unwrap();
    }
    assert_eq!(
        changes_since(&store, &start).await,
        Vec::new(),
        "nothing changed"
    );

    for change in [
        "user_agent = 'curl/8.5.0'",
        "ip = '192.0.2.7'",
        "label = 'work laptop'",
    ] {
        let start = past_every_entry(&store).await;
        client
            .batch_execute(&format!(
                "UPDATE session.sessions SET {change} WHERE id = '{}'",
                active.id
            ))
            .await
            .unwrap();
        let now = store.get(active.id).await.unwrap().unwrap();
        assert_eq!(
            changes_since(&store, &start).await,
            vec![Change::Created(now)],
            "{change}"
        );
    }
}

/// A label rewritten by other SQL reaches every instance's cache: a resolve
/// there answers the new label, with no restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_label_rewritten_by_other_sql_reaches_every_instance() {
    let database = TestDatabase::create();
    let (a, b) = ready_pair(database.url()).await;
    let created = a
        .service
        .create(
            account(),
            ClientMetadata {
                label: Label::new("laptop").ok(),
                ..ClientMetadata::default()
            },
        )
        .await
        .unwrap();
    until("B applies the creation", || {
        b.service.status().cached_sessions == 1
    })
    .await;

    sql_client(database.url())
        .await
        .batch_execute(&format!(
            "UPDATE session.sessions SET label = 'work laptop' WHERE id = '{}'",
            created.session.id
        ))
        .await
        .unwrap();
    for (name, instance) in [("A", &a), ("B", &b)] {
        let answers_the_new_label = async || {
            let identity = instance
                .service
                .resolve(created.token.expose_secret())
                .await
                .unwrap();
            let session = instance.service.session(&identity).await.unwrap();
            session.metadata.label.as_ref().map(Label::as_str) == Some("work laptop")
        };
        session_test_process::until_async(
            &format!("{name} answers the new label"),
            Duration::from_secs(60),
            answers_the_new_label,
        )
        .await
        .unwrap();
    }
    assert_eq!(b.service.status().cached_sessions, 1);
}
