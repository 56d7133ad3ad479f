//! Idle revocation and retention in the real binary: two instances on one
//! PostgreSQL that revoke each idle session once between them and both stop
//! resolving it, retention deleting old revoked sessions, and the
//! `revoke-idle` CLI, on PostgreSQL beside running instances and refused on
//! a SQLite file a server holds.

use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use session_core::port::clock::ManualClock;
use session_core::{ClientMetadata, MemoryCache, RevocationReason, SessionService};
use session_postgres::{PgConfig, PgSessionStore};
use session_test_postgres::TestDatabase;
use session_test_process::until_async;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::e2e::{KEY, Options, Server, cli, ready_on_sqlite, sqlite_url};

/// A correctness bound (the revocations must arrive), not a speed.
const BOUND: Duration = Duration::from_secs(20);

/// A third writer whose clock stands 100 days back: what it creates has
/// been idle that long.
async fn writer_100_days_ago(database: &TestDatabase) -> SessionService {
    let store = PgSessionStore::connect(PgConfig::from_url(database.url()).unwrap())
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let at = OffsetDateTime::now_utc() - time::Duration::days(100);
    SessionService::builder(Arc::new(store), Arc::new(MemoryCache::new()))
        .clock(Arc::new(ManualClock::new(at)))
        .build()
}

/// `count` sessions created by `writer`; their tokens and ids.
async fn created(writer: &SessionService, count: usize) -> Vec<(String, String)> {
    let mut sessions = Vec::new();
    for _ in 0..count {
        let new = writer
            .create(
                session_core::AccountId::new(Uuid::new_v4()).unwrap(),
                ClientMetadata::default(),
            )
            .await
            .unwrap();
        sessions.push((
            new.token.expose_secret().to_owned(),
            new.session.id.to_string(),
        ));
    }
    sessions
}

fn start(database: &TestDatabase, extra: &[&str]) -> Server {
    Server::start(Options {
        database_url: database.url().to_owned(),
        api_key: Some(KEY.to_owned()),
        extra: extra.iter().map(|arg| (*arg).to_owned()).collect(),
        ..Options::default()
    })
}

async fn all_rejected(servers: &[&Server], sessions: &[(String, String)]) -> bool {
    for server in servers {
        for (token, _) in sessions {
            if server.resolve(token).await != 401 {
                return false;
            }
        }
    }
    true
}

#[tokio::test]
async fn two_instances_revoke_idle_sessions_once_and_the_cli_reports_its_batches() {
    let database = TestDatabase::create();
    let writer = writer_100_days_ago(&database).await;
    let idle = created(&writer, 30).await;
    let old_revoked = created(&writer, 2).await;
    for (_, id) in &old_revoked {
        writer
            .revoke(
                session_core::SessionId::from_uuid(id.parse().unwrap()),
                RevocationReason::LOGOUT,
            )
            .await
            .unwrap();
    }
    // The first round runs at start, so both run one at once.
    let jobs = [
        "--last-seen",
        "--revoke-idle-after",
        "90d",
        "--maintenance-interval",
        "1h",
    ];
    let a = start(
        &database,
        &[&jobs[..], &["--retain-revoked-for", "30d"]].concat(),
    );
    let b = start(&database, &jobs);
    a.wait_ready().await;
    b.wait_ready().await;
    let (fresh, _) = a.create(Uuid::new_v4()).await;

    let mut revoked = 0.0;
    until_async("both instances' rounds end", BOUND, async || {
        revoked = a.metric("session_idle_revoked_total").await
            + b.metric("session_idle_revoked_total").await;
        let rounds = a.metric("session_idle_rounds_total").await
            + a.metric("session_idle_rounds_busy_total").await
            + b.metric("session_idle_rounds_total").await
            + b.metric("session_idle_rounds_busy_total").await;
        rounds >= 2.0
    })
    .await
    .unwrap();
    assert_eq!(revoked, 30.0, "each idle session revoked and counted once");
    until_async(
        "both instances reject every idle session",
        BOUND,
        async || all_rejected(&[&a, &b], &idle).await,
    )
    .await
    .unwrap();
    assert_eq!(b.resolve(&fresh).await, 200, "a new session is not idle");
    let (_, body) = a
        .call(Method::GET, &format!("/v1/sessions/{}", idle[0].1), None)
        .await;
    assert_eq!(body["session"]["revocation_reason"], "idle", "{body}");

    until_async(
        "retention deletes the old revoked sessions",
        BOUND,
        async || a.metric("session_retention_sessions_total").await == 2.0,
    )
    .await
    .unwrap();
    for (_, id) in &old_revoked {
        let (status, _) = a
            .call(Method::GET, &format!("/v1/sessions/{id}"), None)
            .await;
        assert_eq!(status, 404);
    }

    // The CLI, beside the running instances.
    let later = created(&writer, 3).await;
    let revoke_idle = |dry: bool| {
        let mut args = vec![
            "revoke-idle",
            "--older-than",
            "90d",
            "--database-url",
            database.url(),
        ];
        if dry {
            args.push("--dry-run");
        }
        cli(&args, &[], "")
    };
    let (status, stdout, stderr) = revoke_idle(true);
    assert!(status.success(), "{stderr}");
    assert!(stdout.contains("batch 1: would revoke 3\n"), "{stdout}");
    assert_eq!(
        a.resolve(&later[0].0).await,
        200,
        "a dry run revokes nothing"
    );
    let (status, stdout, stderr) = revoke_idle(false);
    assert!(status.success(), "{stderr}");
    assert!(stdout.contains("batch 1: revoked 3\n"), "{stdout}");
    until_async(
        "both instances learn of the CLI's revocations",
        BOUND,
        async || all_rejected(&[&a, &b], &later).await,
    )
    .await
    .unwrap();
    let log = a.log();
    assert!(log.contains("idle revocation round"), "one line per round");
}

#[tokio::test]
async fn the_cli_is_refused_on_a_sqlite_file_a_server_holds() {
    let (server, dir) = ready_on_sqlite(&[]).await;
    let url = sqlite_url(dir.path());
    let (status, _, stderr) = cli(
        &["revoke-idle", "--older-than", "90d", "--database-url", &url],
        &[],
        "",
    );
    assert!(!status.success());
    assert!(
        stderr.contains("only one process may use a SQLite file"),
        "{stderr}"
    );
    drop(server);
}
