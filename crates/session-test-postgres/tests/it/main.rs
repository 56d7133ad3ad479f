//! Servers start, serve fresh databases, and leave nothing behind, however
//! the test process ends.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use session_test_postgres::{TEST_DATABASE_URL, TestDatabase, TestServer};
use session_test_process::{until, until_async};
use tokio_postgres::NoTls;

/// Set in child processes: which role to play.
const CHILD_ROLE: &str = "SESSION_TEST_POSTGRES_CHILD";
const REPORT: &str = "child report:";

/// Runs one test of this binary in a child process with `role`, and returns
/// the child with the first line it reports.
#[expect(
    clippy::zombie_processes,
    reason = "the caller waits for the child it is handed"
)]
fn spawn_child(test: &str, role: &str, env: &[(&str, &str)]) -> (Child, String) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(CHILD_ROLE, role)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut output = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        if output.read_line(&mut line).unwrap() == 0 {
            let status = child.wait().unwrap();
            panic!("the child exited ({status}) without reporting");
        }
        // The test harness prints the test's name on the same line first.
        if let Some(at) = line.find(REPORT) {
            // Keep reading, so the child never writes into a closed pipe.
            std::thread::spawn(move || std::io::copy(&mut output, &mut std::io::sink()));
            return (child, line[at + REPORT.len()..].trim().to_owned());
        }
    }
}

fn accepts_connections(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// A bound on waiting for an outside process to finish its work, not a
/// measure of speed.
const MINUTE: Duration = Duration::from_secs(60);

#[test]
fn dropping_a_server_stops_it_and_removes_its_files() {
    let server = TestServer::start();
    let (directory, port) = (server.directory().to_owned(), server.port());
    assert!(directory.join("data").is_dir());
    assert!(accepts_connections(port));
    drop(server);
    assert!(!directory.exists(), "{} is left", directory.display());
    assert!(!accepts_connections(port), "the server still listens");
}

/// The process holding the server is killed outright: no destructor runs,
/// and the server and its directory still go away.
#[test]
fn a_killed_test_process_leaves_no_server_behind() {
    if std::env::var(CHILD_ROLE).as_deref() == Ok("hold-server") {
        let server = TestServer::start();
        println!(
            "{REPORT} {} {}",
            server.port(),
            server.directory().display()
        );
        // Until killed.
        std::io::stdin().read_line(&mut String::new()).unwrap();
        return;
    }
    let (mut child, report) = spawn_child(
        "a_killed_test_process_leaves_no_server_behind",
        "hold-server",
        &[],
    );
    let (port, directory) = report.split_once(' ').unwrap();
    let (port, directory): (u16, PathBuf) = (port.parse().unwrap(), directory.into());
    assert!(accepts_connections(port));
    assert!(directory.is_dir());

    child.kill().unwrap();
    child.wait().unwrap();
    until("the server stops listening", MINUTE, || {
        !accepts_connections(port)
    })
    .unwrap();
    until("its directory is gone", MINUTE, || !directory.exists()).unwrap();
}

#[tokio::test]
async fn databases_are_fresh_separate_and_dropped() {
    let first = TestDatabase::create();
    let second = TestDatabase::create();
    assert_ne!(first.name(), second.name());

    let (client, connection) = tokio_postgres::connect(first.url(), NoTls).await.unwrap();
    tokio::spawn(connection);
    let row = client
        .query_one(
            "SELECT current_database()::text, \
             (SELECT count(*) FROM pg_tables WHERE schemaname = 'public')",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), first.name());
    assert_eq!(row.get::<_, i64>(1), 0, "empty");

    // Dropping ends the open connection too.
    let name = first.name().to_owned();
    drop(first);
    assert!(client.query_one("SELECT 1", &[]).await.is_err());
    assert_eq!(database_count(second.admin_url(), &name).await, 0);
    assert_eq!(database_count(second.admin_url(), second.name()).await, 1);
}

async fn database_count(admin_url: &str, name: &str) -> i64 {
    let (client, connection) = tokio_postgres::connect(admin_url, NoTls).await.unwrap();
    tokio::spawn(connection);
    client
        .query_one(
            "SELECT count(*) FROM pg_database WHERE datname = $1",
            &[&name],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn terminating_connections_ends_every_one() {
    let database = TestDatabase::create();
    let mut clients = Vec::new();
    for _ in 0..3 {
        let (client, connection) = tokio_postgres::connect(database.url(), NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        clients.push(client);
    }
    assert_eq!(database.terminate_connections(), 3);
    for client in clients {
        assert!(client.query_one("SELECT 1", &[]).await.is_err());
    }
    assert_eq!(database.terminate_connections(), 0);
}

/// With `TEST_DATABASE_URL`, databases are made on that server.
#[tokio::test]
async fn test_database_url_names_the_server_to_use() {
    if std::env::var(CHILD_ROLE).as_deref() == Ok("create-database") {
        let database = TestDatabase::create();
        println!("{REPORT} {}", database.url());
        std::io::stdin().read_line(&mut String::new()).unwrap();
        return;
    }
    let server = TestServer::start();
    let (mut child, url) = spawn_child(
        "test_database_url_names_the_server_to_use",
        "create-database",
        &[(TEST_DATABASE_URL, server.admin_url())],
    );
    let (on_server, name) = url.rsplit_once('/').unwrap();
    assert_eq!(
        on_server,
        format!("postgres://postgres@127.0.0.1:{}", server.port())
    );
    assert_eq!(database_count(server.admin_url(), name).await, 1);
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
    assert_eq!(
        database_count(server.admin_url(), name).await,
        0,
        "dropped when the child's test ended"
    );
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

async fn count_rows(client: &tokio_postgres::Client) -> i64 {
    client
        .query_one("SELECT count(*) FROM replicated", &[])
        .await
        .unwrap()
        .get(0)
}

/// A standby has every row the primary acknowledged (the primary does not
/// acknowledge a commit while the standby is away), refuses writes while it
/// follows, and after the primary crashes and it is promoted, takes writes
/// with every acknowledged row still there.
#[tokio::test]
async fn a_standby_has_every_acknowledged_row_and_takes_over_when_promoted() {
    let primary = TestServer::start_primary();
    let standby = primary.start_standby();
    let database = primary.create_database();
    let on_standby = format!(
        "postgres://postgres@127.0.0.1:{}/{}",
        standby.port(),
        database.name()
    );
    let writer = connect(database.url()).await;
    writer
        .batch_execute("CREATE TABLE replicated (n int); INSERT INTO replicated VALUES (1)")
        .await
        .unwrap();
    let reader = connect(&on_standby).await;
    until_async("the row reaches the standby", MINUTE, async || {
        count_rows(&reader).await == 1
    })
    .await
    .unwrap();
    let refused = reader
        .batch_execute("INSERT INTO replicated VALUES (0)")
        .await
        .unwrap_err();
    let message = refused.as_db_error().map(|err| err.message().to_owned());
    assert!(
        message.as_deref().unwrap_or_default().contains("read-only"),
        "{refused:?}"
    );

    // Synchronous: while the standby is down, a commit is not acknowledged.
    standby.stop();
    let waiting = tokio::spawn(async move {
        writer
            .batch_execute("INSERT INTO replicated VALUES (2)")
            .await
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!waiting.is_finished(), "acknowledged without the standby");
    standby.start_again();
    tokio::time::timeout(MINUTE, waiting)
        .await
        .expect("still not acknowledged with the standby back")
        .unwrap()
        .unwrap();

    let directory = primary.directory().to_owned();
    primary.crash();
    assert!(
        !accepts_connections(primary.port()),
        "crashed, yet listening"
    );
    standby.promote();
    let reader = connect(&on_standby).await;
    reader
        .batch_execute("INSERT INTO replicated VALUES (3)")
        .await
        .unwrap();
    assert_eq!(count_rows(&reader).await, 3);

    // A crashed server is removed like any other.
    drop(database);
    drop(primary);
    assert!(!directory.exists(), "{} is left", directory.display());
}
