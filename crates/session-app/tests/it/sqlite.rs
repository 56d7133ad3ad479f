//! End to end on the embedded default, SQLite.

use crate::e2e::{Options, Server, cli, sqlite_url, temp_dir};
use crate::scenarios;

#[tokio::test]
async fn create_resolve_revoke_resolve() {
    let dir = temp_dir();
    scenarios::create_resolve_revoke_resolve(&sqlite_url(dir.path())).await;
}

#[tokio::test]
async fn restart_keeps_sessions() {
    let dir = temp_dir();
    scenarios::restart_keeps_sessions(&sqlite_url(dir.path())).await;
}

#[tokio::test]
async fn api_key_is_enforced() {
    let dir = temp_dir();
    scenarios::api_key_is_enforced(&sqlite_url(dir.path())).await;
}

#[tokio::test]
async fn cli_round_trip() {
    let dir = temp_dir();
    scenarios::cli_round_trip(&sqlite_url(dir.path())).await;
}

#[tokio::test]
async fn restart_keeps_sessions_with_the_moka_cache() {
    let dir = temp_dir();
    scenarios::restart_keeps_sessions_with(&sqlite_url(dir.path()), &["--cache", "moka"]).await;
}

/// A second `serve` on the file of a running one exits with a message naming
/// the file and the first server's pid, and never listens: the store is
/// opened before the port is bound. The test holds the port it gives the
/// second server, so a server that bound first would fail with "could not
/// listen" instead. `migrate` is refused the same way, and both work once the
/// first server has stopped.
#[tokio::test]
async fn a_second_process_on_the_same_file_is_refused_before_it_listens() {
    let dir = temp_dir();
    let url = sqlite_url(dir.path());
    let database = dir.path().join("sessions.db");
    let first = Server::start(Options {
        database_url: url.clone(),
        ..Options::default()
    });
    first.wait_ready().await;
    let (token, _) = first.create(uuid::Uuid::new_v4()).await;

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().to_string();
    let (status, _, stderr) = cli(
        &[
            "--log-format",
            "json",
            "serve",
            "--listen",
            &port,
            "--database-url",
            &url,
        ],
        &[],
        "",
    );
    assert!(!status.success(), "{stderr}");
    let holder = format!("pid {}", first.pid());
    assert!(
        stderr.contains("in use by") && stderr.contains(&holder),
        "names the holder: {stderr}"
    );
    assert!(
        stderr.contains(&database.display().to_string()),
        "names the file: {stderr}"
    );
    assert!(
        !stderr.contains("could not listen") && !stderr.contains("listening"),
        "failed before binding its port: {stderr}"
    );
    drop(taken);

    let (status, stdout, stderr) = cli(&["migrate", "--database-url", &url], &[], "");
    assert!(!status.success(), "{stdout}{stderr}");
    assert!(stderr.contains(&holder), "{stderr}");

    assert_eq!(
        first.resolve(&token).await,
        200,
        "the first server is unharmed"
    );
    assert!(first.terminate().success());
    let (status, stdout, stderr) = cli(&["migrate", "--database-url", &url], &[], "");
    assert!(status.success(), "the lock went with the process: {stderr}");
    assert!(stdout.contains("up to date"), "{stdout}");
}
