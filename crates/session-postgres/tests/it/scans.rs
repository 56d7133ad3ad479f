//! Statements that run for every change look each session up by its token
//! hash, so what they cost follows the entries they read, never the size of
//! the sessions table. (The change log's read is checked the same way, on
//! its statement, in `session-postgres`'s own unit tests.)

use std::future::poll_fn;

use session_test_postgres::TestDatabase;
use tokio_postgres::{AsyncMessage, NoTls};

use crate::support::migrated_store;

/// Sessions in the table, all in the change log: enough that hashing the
/// whole table costs the planner less than a step's index probes.
const SESSIONS: u32 = 20_000;

/// The plan of every statement `call` runs, nested ones included (those in
/// a PL/pgSQL function), as `auto_explain` reports them.
async fn plans_of(url: &str, call: &str) -> String {
    let (client, mut connection) = tokio_postgres::connect(url, NoTls).await.unwrap();
    let (sender, mut notices) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(message) = poll_fn(|cx| connection.poll_message(cx)).await {
            if let Ok(AsyncMessage::Notice(notice)) = message {
                let _closed = sender.send(notice.message().to_owned());
            }
        }
    });
    client
        .batch_execute(
            "LOAD 'auto_explain'; SET auto_explain.log_min_duration = 0; \
             SET auto_explain.log_nested_statements = on; \
             SET auto_explain.log_level = notice",
        )
        .await
        .expect("auto_explain (in PostgreSQL's contrib modules) loads, as a superuser");
    client.batch_execute(call).await.unwrap();
    drop(client);
    let mut plans = String::new();
    while let Some(plan) = notices.recv().await {
        plans.push_str(&plan);
        plans.push('\n');
    }
    plans
}

#[tokio::test]
async fn a_sequencing_step_looks_each_session_up_by_index() {
    let database = TestDatabase::create();
    let _store =
        migrated_store(session_postgres::PgConfig::from_url(database.url()).unwrap()).await;
    let client = crate::support::sql_client(database.url()).await;
    client
        .batch_execute(&format!(
            "INSERT INTO session.sessions (id, account_id, token_hash, created_at) \
             SELECT gen_random_uuid(), gen_random_uuid(), sha256(i::text::bytea), now() \
             FROM generate_series(1, {SESSIONS}) AS i; \
             ANALYZE session.sessions; ANALYZE session.changes"
        ))
        .await
        .unwrap();
    // The step the store runs (events.rs), as the service's role may.
    let plans = plans_of(
        database.url(),
        "SELECT * FROM session.sequence_events(5000)",
    )
    .await;
    assert!(
        plans.contains("sessions_token_hash_key"),
        "no lookup by hash:\n{plans}"
    );
    assert!(
        !plans.contains("Seq Scan on sessions"),
        "a sequencing step scans the sessions table:\n{plans}"
    );
}
