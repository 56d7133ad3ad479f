//! End to end on PostgreSQL: a fresh database per test on a throwaway server.

use serde_json::json;
use session_test_postgres::TestDatabase;
use uuid::Uuid;

use crate::e2e::{KEY, Options, Server};
use crate::scenarios;

#[tokio::test]
async fn create_resolve_revoke_resolve() {
    let database = TestDatabase::create();
    scenarios::create_resolve_revoke_resolve(database.url()).await;
}

#[tokio::test]
async fn restart_keeps_sessions() {
    let database = TestDatabase::create();
    scenarios::restart_keeps_sessions(database.url()).await;
}

#[tokio::test]
async fn api_key_is_enforced() {
    let database = TestDatabase::create();
    scenarios::api_key_is_enforced(database.url()).await;
}

#[tokio::test]
async fn cli_round_trip() {
    let database = TestDatabase::create();
    scenarios::cli_round_trip(database.url()).await;
}

#[tokio::test]
async fn not_before_through_the_cli_and_across_a_restart() {
    let database = TestDatabase::create();
    scenarios::not_before_through_the_cli(database.url()).await;
}

#[tokio::test]
async fn revocation_reasons_round_trip() {
    let database = TestDatabase::create();
    scenarios::revocation_reasons_round_trip(database.url()).await;
}

/// While the warm cannot read (a transaction holds the sessions table
/// locked), the service is live, not ready, and resolves answer 503
/// `not_ready`, never 401; once the warm completes, the same token resolves.
#[tokio::test]
async fn resolve_is_not_ready_until_the_warm_completes() {
    let database = TestDatabase::create();
    let options = || Options {
        database_url: database.url().to_owned(),
        api_key: Some(KEY.to_owned()),
        ..Options::default()
    };
    let server = Server::start(options());
    server.wait_ready().await;
    let (token, _) = server.create(Uuid::new_v4()).await;
    server.kill_hard();

    let (client, connection) = tokio_postgres::connect(database.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .batch_execute("BEGIN; LOCK TABLE session.sessions IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();

    let server = Server::start(options());
    let (status, body) = server
        .call(
            reqwest::Method::POST,
            "/v1/sessions/resolve",
            Some(json!({ "token": token })),
        )
        .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(
        serde_json::from_value::<session_http::ErrorCode>(body["error"]["code"].clone()).unwrap(),
        session_http::ErrorCode::NotReady
    );
    let (status, body) = server.call(reqwest::Method::GET, "/readyz", None).await;
    assert_eq!(status, 503);
    assert_eq!(body["checks"]["cache"]["status"], "warming");
    assert_eq!(body["checks"]["store"]["status"], "ok");
    assert_eq!(
        server.call(reqwest::Method::GET, "/healthz", None).await.0,
        200
    );

    client.batch_execute("COMMIT").await.unwrap();
    server.wait_ready().await;
    assert_eq!(server.resolve(&token).await, 200);
}

#[tokio::test]
async fn migrate_prints_what_it_applied_then_nothing() {
    let database = TestDatabase::create();
    let url = database.url();
    let (status, first, stderr) = crate::e2e::cli(&["migrate", "--database-url", url], &[], "");
    assert!(status.success(), "{stderr}");
    assert!(first.contains("applied"), "{first}");
    let (status, second, _) = crate::e2e::cli(&["migrate", "--database-url", url], &[], "");
    assert!(status.success());
    assert!(second.contains("already up to date"), "{second}");
    assert!(
        !first.contains("secret") && !second.contains(url),
        "no credentials printed"
    );
}

/// `serve --no-migrate` on a database whose schema is not this build's
/// exits with a message saying what to run, before it listens.
#[test]
fn serve_without_migrations_refuses_an_unmigrated_schema() {
    let database = TestDatabase::create();
    let (status, _, stderr) = crate::e2e::cli(
        &[
            "serve",
            "--no-migrate",
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            database.url(),
        ],
        &[],
        "",
    );
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("session-app migrate"), "{stderr}");
    assert!(
        !stderr.contains("listening"),
        "refused before listening: {stderr}"
    );
}

#[tokio::test]
async fn events_resume_across_restarts() {
    let database = TestDatabase::create();
    scenarios::events_resume_across_restarts(database.url()).await;
}
