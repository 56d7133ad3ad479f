//! End to end on the embedded default, SQLite.

use crate::e2e::{KEY, Options, Server, cli, sqlite_url, temp_dir};
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
async fn not_before_through_the_cli_and_across_a_restart() {
    let dir = temp_dir();
    scenarios::not_before_through_the_cli(&sqlite_url(dir.path())).await;
}

#[tokio::test]
async fn revocation_reasons_round_trip() {
    let dir = temp_dir();
    scenarios::revocation_reasons_round_trip(&sqlite_url(dir.path())).await;
}

#[tokio::test]
async fn restart_keeps_sessions_with_the_moka_cache() {
    let dir = temp_dir();
    scenarios::restart_keeps_sessions_with(&sqlite_url(dir.path()), &["--cache", "moka"]).await;
}

#[tokio::test]
async fn restart_keeps_sessions_with_the_compact_cache() {
    let dir = temp_dir();
    scenarios::restart_keeps_sessions_with(&sqlite_url(dir.path()), &["--cache", "compact"]).await;
}

#[tokio::test]
async fn compact_mode_resolves_to_the_identity_and_reads_keep_the_record() {
    let dir = temp_dir();
    scenarios::compact_mode_answers(&sqlite_url(dir.path())).await;
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

/// A key file saved with a UTF-8 byte-order mark (and Windows line ends)
/// works: the key in it is accepted. Readable by others, it draws a warning
/// naming the file and its mode.
#[tokio::test]
async fn a_key_file_with_a_byte_order_mark_accepts_its_key() {
    use std::os::unix::fs::PermissionsExt;

    let dir = temp_dir();
    let key_file = dir.path().join("api-keys");
    std::fs::write(&key_file, format!("\u{feff}{KEY}\r\n")).unwrap();
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let server = Server::start(Options {
        database_url: sqlite_url(dir.path()),
        extra: vec!["--api-key-file".into(), key_file.display().to_string()],
        ..Options::default()
    });
    server.wait_ready().await;

    let create = |key: &'static str| {
        crate::e2e::http_client()
            .post(server.url("/v1/sessions"))
            .bearer_auth(key)
            .json(&serde_json::json!({ "account_id": uuid::Uuid::new_v4() }))
            .send()
    };
    assert_eq!(create(KEY).await.unwrap().status(), 201);
    assert_eq!(
        create("not-the-key-0123456789").await.unwrap().status(),
        401
    );

    let log = server.log();
    let warning = log
        .lines()
        .find(|line| line.contains("can be read by other users"))
        .unwrap_or_else(|| panic!("no warning about the key file's mode:\n{log}"));
    assert!(
        warning.contains(&key_file.display().to_string()) && warning.contains("644"),
        "{warning}"
    );
    assert!(!log.contains(KEY), "the key never reaches the log");
}

/// Over a real socket, as hyper parses it: without a key, HTTP/1.0 with no
/// `Host` and HTTP/1.1 naming a loopback host are served; a foreign `Host`
/// (what a DNS-rebinding page's browser sends) gets 421.
#[tokio::test]
async fn without_a_key_a_foreign_host_is_refused_on_the_wire() {
    use std::io::{Read, Write};

    let dir = temp_dir();
    let server = Server::start(Options {
        database_url: sqlite_url(dir.path()),
        ..Options::default()
    });
    server.wait_ready().await;
    let status_line = |request: &str| {
        let mut stream = std::net::TcpStream::connect(server.address).unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response.lines().next().unwrap_or_default().to_owned()
    };
    let served = [
        "GET /healthz HTTP/1.0\r\n\r\n".to_owned(),
        format!(
            "GET /healthz HTTP/1.1\r\nHost: localhost:{}\r\nConnection: close\r\n\r\n",
            server.address.port()
        ),
    ];
    for request in served {
        assert!(status_line(&request).contains(" 200 "), "{request:?}");
    }
    let refused = "GET /healthz HTTP/1.1\r\nHost: rebound.example\r\nConnection: close\r\n\r\n";
    assert!(status_line(refused).contains(" 421 "), "{refused:?}");
}

/// A client that asks before uploading (`Expect: 100-continue`) a body whose
/// declared length is over the limit is told 413 at once, never invited to
/// send it; a body within the limit is invited and served.
#[tokio::test]
async fn an_oversized_body_is_refused_before_it_is_invited() {
    use std::io::{BufRead, BufReader, Write};

    let dir = temp_dir();
    let server = Server::start(Options {
        database_url: sqlite_url(dir.path()),
        ..Options::default()
    });
    server.wait_ready().await;
    let first_line = |length: usize| {
        let mut stream = std::net::TcpStream::connect(server.address).unwrap();
        write!(
            stream,
            "POST /v1/sessions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
             Content-Length: {length}\r\nExpect: 100-continue\r\n\r\n"
        )
        .unwrap();
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line).unwrap();
        line
    };
    let refused = first_line(10 * 1024 * 1024);
    assert!(refused.starts_with("HTTP/1.1 413 "), "{refused:?}");
    let invited = first_line(64);
    assert!(invited.starts_with("HTTP/1.1 100 "), "{invited:?}");
}

/// At the default `--log info` every request gets a log line carrying its
/// request id (the one sent back), method, route template, status and
/// latency, inside the request's span; the lines are written by a thread of
/// their own, and every line still waiting at SIGTERM, up to the last
/// (`stopped`), reaches stderr before the process exits.
#[tokio::test]
async fn request_lines_carry_the_request_and_are_all_written_by_exit() {
    let dir = temp_dir();
    let app = session_test_app::App::start(session_test_app::Launch::new(
        env!("CARGO_BIN_EXE_session-app"),
        &sqlite_url(dir.path()),
    ))
    .expect("start session-app");
    app.wait_ready(std::time::Duration::from_secs(60))
        .await
        .expect("ready");
    let http = crate::e2e::http_client();
    let response = http
        .post(app.url("/v1/sessions/resolve"))
        .json(&serde_json::json!({ "token": "sess_not-a-token" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(app.terminate().expect("exits on SIGTERM").success());

    let lines: Vec<serde_json::Value> = app
        .log()
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    let finished = lines
        .iter()
        .find(|line| line["message"] == "request finished" && line["span"]["request_id"] == id)
        .unwrap_or_else(|| panic!("no line for request {id} in {lines:#?}"));
    assert_eq!(finished["status"], 401);
    assert!(finished["latency_us"].is_u64(), "{finished}");
    assert_eq!(finished["span"]["http.request.method"], "POST");
    assert_eq!(finished["span"]["http.route"], "/v1/sessions/resolve");
    assert_eq!(
        lines.last().map(|line| &line["message"]),
        Some(&serde_json::json!("stopped")),
        "the last line is written before exit"
    );
}

/// A copy of the database taken before an incident's revocation, restored,
/// brings the revoked session back, unless the instance is started with
/// `--sessions-not-before` the incident's time: then it answers 401 for
/// every session created before it, and sessions created since resolve.
#[tokio::test]
async fn a_restored_copy_cannot_bring_back_sessions_from_before_the_mark() {
    let dir = temp_dir();
    let url = sqlite_url(dir.path());
    let start = |extra: Vec<String>| {
        Server::start(Options {
            database_url: url.clone(),
            extra,
            ..Options::default()
        })
    };
    let server = start(Vec::new());
    server.wait_ready().await;
    let (old, id) = server.create(uuid::Uuid::new_v4()).await;
    assert!(server.terminate().success());
    // The backup: the file (and its write-ahead log, if any) as it is now.
    let backup = temp_dir();
    let files: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .filter(|name| name.to_string_lossy().starts_with("sessions.db"))
        .collect();
    for name in &files {
        std::fs::copy(dir.path().join(name), backup.path().join(name)).unwrap();
    }

    // The incident: the session is revoked, at a time after it was created.
    let server = start(Vec::new());
    server.wait_ready().await;
    assert_eq!(server.revoke(&id).await, 204);
    let incident = humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string();
    assert!(server.terminate().success());

    // The restore.
    for name in &files {
        std::fs::copy(backup.path().join(name), dir.path().join(name)).unwrap();
    }
    let server = start(Vec::new());
    server.wait_ready().await;
    assert_eq!(
        server.resolve(&old).await,
        200,
        "the restored copy has it active"
    );
    assert!(server.terminate().success());

    let server = start(vec!["--sessions-not-before".to_owned(), incident]);
    server.wait_ready().await;
    assert_eq!(server.resolve(&old).await, 401, "created before the mark");
    let (new, _) = server.create(uuid::Uuid::new_v4()).await;
    assert_eq!(server.resolve(&new).await, 200, "created after it");
}

#[tokio::test]
async fn events_resume_across_restarts() {
    let dir = temp_dir();
    scenarios::events_resume_across_restarts(&sqlite_url(dir.path())).await;
}
