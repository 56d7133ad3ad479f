//! The plans of the statements that run for every change, on a real
//! server: the follower's log read and the events sequencer's step each
//! look a session up by its token hash, so what they cost follows the
//! entries they read, never the size of the sessions table. A plan is no
//! part of the API, so these tests read the statements themselves, here
//! rather than in `tests/it`.

use std::future::poll_fn;

use session_test_postgres::TestDatabase;
use tokio_postgres::{AsyncMessage, Client, NoTls};

use crate::change_log::read_log_text;
use crate::events::SEQUENCE_BATCH;
use crate::{PgConfig, PgSessionStore};

/// Sessions in the table, all in the change log: enough that hashing the
/// whole table costs the planner less than a page's index probes.
const SESSIONS: u32 = 20_000;
/// The entries a follower asks for in one read.
const PAGE: u32 = 1_000;

/// A migrated database holding [`SESSIONS`] sessions, analyzed, and a
/// client whose notices (`auto_explain`'s plans among them) arrive on the
/// returned channel.
async fn filled() -> (
    TestDatabase,
    Client,
    tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    let database = TestDatabase::create();
    let config = PgConfig::from_url(database.url()).unwrap();
    PgSessionStore::connect(config)
        .await
        .unwrap()
        .migrate()
        .await
        .unwrap();
    let (client, mut connection) = tokio_postgres::connect(database.url(), NoTls)
        .await
        .unwrap();
    let (sender, notices) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(message) = poll_fn(|cx| connection.poll_message(cx)).await {
            if let Ok(AsyncMessage::Notice(notice)) = message {
                let _closed = sender.send(notice.message().to_owned());
            }
        }
    });
    client
        .batch_execute(&format!(
            "INSERT INTO session.sessions (id, account_id, token_hash, created_at) \
             SELECT gen_random_uuid(), gen_random_uuid(), sha256(i::text::bytea), now() \
             FROM generate_series(1, {SESSIONS}) AS i; \
             ANALYZE session.sessions; ANALYZE session.changes"
        ))
        .await
        .unwrap();
    (database, client, notices)
}

/// Asserts that `plans` (of `what`) find sessions by their token hash's
/// index and never scan the table.
fn looks_up_by_hash(plans: &str, what: &str) {
    assert!(
        plans.contains("sessions_token_hash_key"),
        "{what}: no lookup by hash:\n{plans}"
    );
    assert!(
        !plans.contains("Seq Scan on sessions"),
        "{what}: scans the sessions table:\n{plans}"
    );
}

#[tokio::test]
async fn a_log_read_looks_each_creation_up_by_index() {
    let (_database, client, _notices) = filled().await;
    client
        .batch_execute(&format!(
            "PREPARE read_log (bigint, bigint[], bigint[], bigint, bigint) AS {}",
            read_log_text()
        ))
        .await
        .unwrap();
    // Both plans a prepared statement may run: planned for these
    // parameters, and the generic one kept after five executions. A cursor
    // at the start: a full page of creations past it.
    for mode in ["force_custom_plan", "force_generic_plan"] {
        client
            .batch_execute(&format!("SET plan_cache_mode = {mode}"))
            .await
            .unwrap();
        let rows = client
            .query(
                &format!("EXPLAIN EXECUTE read_log(0, '{{}}', '{{}}', {PAGE}, 0)"),
                &[],
            )
            .await
            .unwrap();
        let plan: Vec<String> = rows.iter().map(|row| row.get(0)).collect();
        looks_up_by_hash(&plan.join("\n"), mode);
    }
}

#[tokio::test]
async fn a_sequencing_step_looks_each_session_up_by_index() {
    let (_database, client, mut notices) = filled().await;
    client
        .batch_execute(
            "LOAD 'auto_explain'; SET auto_explain.log_min_duration = 0; \
             SET auto_explain.log_nested_statements = on; \
             SET auto_explain.log_level = notice",
        )
        .await
        .expect("auto_explain (in PostgreSQL's contrib modules) loads, as a superuser");
    // The step the store runs (events.rs); its statements report their
    // plans as notices, which arrive before its result.
    client
        .batch_execute(&format!(
            "SELECT * FROM session.sequence_events({SEQUENCE_BATCH})"
        ))
        .await
        .unwrap();
    let mut plans = String::new();
    while let Ok(plan) = notices.try_recv() {
        plans.push_str(&plan);
        plans.push('\n');
    }
    looks_up_by_hash(&plans, "a sequencing step");
}
