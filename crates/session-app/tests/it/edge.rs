//! The edge under real traffic: what browsers, gateways, local clients and
//! operators actually send, against the real binary.

use std::net::{IpAddr, Ipv4Addr};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::Method;
use reqwest::header::{COOKIE, HOST, HeaderValue};
use serde_json::Value;
use session_test_app::{App, Launch};
use session_test_postgres::TestDatabase;
use uuid::Uuid;

use crate::e2e::{Options, Server, cli, http_client, ready_on_sqlite, sqlite_url, temp_dir};

const BIN: &str = env!("CARGO_BIN_EXE_session-app");

fn keyless(database_url: String) -> Server {
    Server::start(Options {
        database_url,
        ..Options::default()
    })
}

/// Forward auth with `Cookie` fields given as raw bytes, as browsers send
/// them: status and `error.code`.
async fn forward_auth_with_cookies(server: &Server, fields: &[Vec<u8>]) -> (u16, Value) {
    let mut request = http_client().get(server.url("/v1/forward-auth"));
    for field in fields {
        request = request.header(COOKIE, HeaderValue::from_bytes(field).unwrap());
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// A browser sends every cookie of the site in `Cookie`, whatever bytes
/// other scripts put in theirs (analytics campaigns in UTF-8, Latin-1,
/// quotes, pieces without `=`): the session cookie is found beside them, in
/// one field or several, and two different session cookies are still
/// refused.
#[tokio::test]
async fn forward_auth_finds_the_session_cookie_beside_any_other_cookie_bytes() {
    let dir = temp_dir();
    let server = keyless(sqlite_url(dir.path()));
    server.wait_ready().await;
    let (token, _) = server.create(Uuid::new_v4()).await;
    let (other, _) = server.create(Uuid::new_v4()).await;
    let session = format!("__Host-session={token}").into_bytes();
    let campaign = "_ga=GA1.2.1517.1700000000; __utmz=111872281.1.1.1.utmcsr=facebook|\
                    utmccn=MinKampagneUnders\u{f8}gelse|utmcmd=social"
        .as_bytes()
        .to_vec();
    let join = |parts: &[&[u8]]| parts.join(&b"; "[..]);

    for (what, fields) in [
        ("a UTF-8 neighbour", vec![join(&[&campaign, &session])]),
        ("after it, UTF-8", vec![join(&[&session, &campaign])]),
        (
            "a Latin-1 neighbour",
            vec![join(&[b"name=Unders\xf8gelse", &session])],
        ),
        (
            "quotes and junk",
            vec![join(&[
                b"q=\"a b\"",
                b"=",
                b"novalue",
                b"x=\"",
                &session,
                b"",
            ])],
        ),
        ("its own field", vec![campaign.clone(), session.clone()]),
    ] {
        let (status, body) = forward_auth_with_cookies(&server, &fields).await;
        assert_eq!(status, 200, "{what}: {body}");
    }

    let (status, body) = forward_auth_with_cookies(&server, std::slice::from_ref(&campaign)).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (401, &Value::from("missing_token"))
    );
    let conflicting = format!("__Host-session={other}").into_bytes();
    let (status, body) =
        forward_auth_with_cookies(&server, &[join(&[&campaign, &session, &conflicting])]).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (401, &Value::from("invalid_token"))
    );
    let garbled = join(&[&campaign, b"__Host-session=sess_\xc3\xb8"]);
    let (status, body) = forward_auth_with_cookies(&server, &[garbled]).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (401, &Value::from("invalid_token")),
        "a session cookie no token can be is sent, and invalid"
    );
}

/// `serve --listen 127.0.0.2:P` without a key serves requests addressed to
/// it, its own CLI's included; loopback names still pass, and other names
/// are still refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyless_service_on_any_loopback_address_serves_requests_named_after_it() {
    let dir = temp_dir();
    let app = App::start(
        Launch::new(BIN, &sqlite_url(dir.path()))
            .listen_ip(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))),
    )
    .unwrap();
    app.wait_ready(Duration::from_secs(60)).await.unwrap();
    let port = app.address().port();
    let url = app.url("");
    let (status, stdout, stderr) = tokio::task::block_in_place(|| {
        cli(
            &["create", "--account", &Uuid::new_v4().to_string(), "--json"],
            &[("SESSION_SERVER", url.as_str())],
            "",
        )
    });
    assert!(status.success(), "the CLI is served: {stderr}");
    assert!(stdout.contains("sess_"), "{stdout}");

    let status_for = |host: String| {
        let client = http_client();
        let url = app.url("/healthz");
        async move {
            client
                .get(url)
                .header(HOST, host)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    for host in [
        format!("127.0.0.2:{port}"),
        "127.0.0.2".to_owned(),
        format!("127.255.255.254:{port}"),
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("LocalHost:{port}"),
        format!("[::1]:{port}"),
        "[0:0:0:0:0:0:0:1]".to_owned(),
    ] {
        assert_eq!(status_for(host.clone()).await, 200, "{host}");
    }
    for host in [
        format!("rebound.example:{port}"),
        format!("127.0.0.2.nip.io:{port}"),
        format!("localhost.example:{port}"),
        format!("128.0.0.1:{port}"),
        format!("0.0.0.0:{port}"),
        format!("[::]:{port}"),
        format!("127.1:{port}"),
        format!("user@127.0.0.2:{port}"),
    ] {
        assert_eq!(status_for(host.clone()).await, 421, "{host}");
    }
}

/// A token piped from a shell that writes a UTF-8 byte-order mark first
/// (PowerShell 5.1) resolves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_on_stdin_after_a_byte_order_mark_resolves() {
    let dir = temp_dir();
    let server = keyless(sqlite_url(dir.path()));
    server.wait_ready().await;
    let (token, id) = server.create(Uuid::new_v4()).await;
    let url = server.url("");
    let (status, stdout, stderr) = tokio::task::block_in_place(|| {
        cli(
            &["resolve"],
            &[("SESSION_SERVER", url.as_str())],
            &format!("\u{feff}{token}\r\n"),
        )
    });
    assert!(status.success(), "{stderr}");
    assert!(stdout.contains(&id), "{stdout}");
}

/// A cursor as `next_cursor` spells one, with `created_at` in Unix
/// nanoseconds.
fn forged_cursor(account: Uuid, nanos: i128) -> String {
    let mut bytes = vec![1, 0];
    bytes.extend_from_slice(account.as_bytes());
    bytes.extend_from_slice(&nanos.to_be_bytes());
    bytes.extend_from_slice(Uuid::now_v7().as_bytes());
    URL_SAFE_NO_PAD.encode(bytes)
}

/// `?cursor=` (empty) is no cursor: the first page. A cursor naming an
/// instant no store holds (year -5000, before year 1, a fraction of a
/// microsecond) is refused with 400 at the edge, on every store, before
/// any store sees it.
async fn cursors_at_the_edges(database_url: String) {
    let server = keyless(database_url);
    server.wait_ready().await;
    let account = Uuid::new_v4();
    for _ in 0..3 {
        server.create(account).await;
    }
    let list = |query: String| {
        let path = format!("/v1/accounts/{account}/sessions?{query}");
        let server = &server;
        async move { server.call(Method::GET, &path, None).await }
    };
    let (status, body) = list("cursor=".to_owned()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["sessions"].as_array().map(Vec::len), Some(3));
    let (status, body) = list("limit=2&cursor=".to_owned()).await;
    assert_eq!(status, 200, "{body}");
    let next = body["next_cursor"].as_str().unwrap().to_owned();
    let (status, body) = list(format!("limit=2&cursor={next}")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["sessions"].as_array().map(Vec::len), Some(1));

    const YEAR_SECONDS: i128 = 31_556_952;
    for (what, nanos) in [
        ("year -5000", -6_970 * YEAR_SECONDS * 1_000_000_000),
        ("year 0", -1_970 * YEAR_SECONDS * 1_000_000_000),
        ("a fraction of a microsecond", 1_700_000_000_000_000_001),
    ] {
        let (status, body) = list(format!("cursor={}", forged_cursor(account, nanos))).await;
        assert_eq!(status, 400, "{what}: {body}");
        assert_eq!(body["error"]["code"], "invalid_request", "{what}");
    }
    let log = server.log();
    let errors: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("\"level\":\"ERROR\""))
        .collect();
    assert!(errors.is_empty(), "client input logs no error: {errors:?}");
}

#[tokio::test]
async fn cursors_at_the_edges_on_sqlite() {
    let dir = temp_dir();
    cursors_at_the_edges(sqlite_url(dir.path())).await;
}

#[tokio::test]
async fn cursors_at_the_edges_on_postgres() {
    let database = TestDatabase::create();
    cursors_at_the_edges(database.url().to_owned()).await;
}

/// Caddy, Traefik and Envoy pass a client's `X_Session_Id` on to the
/// application, where CGI, WSGI, Rack and PHP read it as `X-Session-Id`:
/// forward auth refuses a request holding any spelling of an identity
/// header that only differs in `_` and `-`, and still lets through one
/// carrying a forged identity header under its own name, which every
/// gateway overwrites.
#[tokio::test]
async fn forward_auth_refuses_underscore_spellings_of_the_identity_headers() {
    let (server, _dir) =
        ready_on_sqlite(&["--forward-auth-account-id-header", "X-Remote-User"]).await;
    let (token, _) = server.create(Uuid::new_v4()).await;
    let check = |name: &'static str| {
        let request = http_client()
            .get(server.url("/v1/forward-auth"))
            .bearer_auth(&token)
            .header(name, "00000000-0000-0000-0000-00000000f00d");
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            (status, body)
        }
    };
    for name in ["x-session-id", "x-remote-user", "x-account_id"] {
        let (status, body) = check(name).await;
        assert_eq!(status, 200, "{name}: {body}");
    }
    for name in [
        "x_session_id",
        "X_Session-Id",
        "x-session_id",
        "x_remote_user",
    ] {
        let (status, body) = check(name).await;
        assert_eq!(status, 400, "{name}: {body}");
        assert_eq!(body["error"]["code"], "invalid_request", "{name}");
        assert!(
            !body.to_string().contains("f00d"),
            "the value is not repeated: {body}"
        );
    }
}

/// Runs `serve` with `env`, expecting it to refuse to start: its exit code
/// and stderr, or `None` if it was still running after a bound.
fn serve_refused(
    args: &[&str],
    env: &[(&str, &str)],
    bound: Duration,
) -> Option<(Option<i32>, String)> {
    let dir = temp_dir();
    let mut command = Command::new(BIN);
    for (key, _) in std::env::vars_os() {
        if key.to_str().is_some_and(|key| key.starts_with("OTEL_")) {
            command.env_remove(key);
        }
    }
    let mut child = command
        .args(["serve", "--listen", "127.0.0.1:0", "--database-url"])
        .arg(sqlite_url(dir.path()))
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while started.elapsed() < bound {
        if child.try_wait().unwrap().is_some() {
            let output = child.wait_with_output().unwrap();
            return Some((
                output.status.code(),
                String::from_utf8_lossy(&output.stderr).into_owned(),
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// OTLP headers often carry a collector's key: with any set, plain HTTP
/// to a collector that is not on loopback is refused at start (exit 2),
/// naming the variable and never its value; to loopback it is allowed.
/// (`0.0.0.0` is not a loopback address, yet what is sent to it stays on
/// this host, so the test sends nothing elsewhere even if the rule broke.)
#[test]
fn otlp_headers_never_go_over_plain_http_beyond_loopback() {
    const SECRET: &str = "collector-key-0123456789";
    let header = format!("api-key={SECRET}");
    for (what, args, env) in [
        (
            "the flag",
            vec!["--otlp-endpoint", "http://0.0.0.0:9"],
            vec![("OTEL_EXPORTER_OTLP_HEADERS", header.as_str())],
        ),
        (
            "the environment",
            vec![],
            vec![
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://0.0.0.0:9"),
                ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", header.as_str()),
            ],
        ),
    ] {
        let refused = serve_refused(&args, &env, Duration::from_secs(10));
        let Some((code, stderr)) = refused else {
            panic!("{what}: the service started");
        };
        assert_eq!(code, Some(2), "{what}: {stderr}");
        assert!(
            stderr.contains("OTEL_EXPORTER_OTLP") && stderr.contains("HEADERS"),
            "{what}: {stderr}"
        );
        assert!(!stderr.contains(SECRET), "{what}: {stderr}");
    }
    // To loopback, the same headers start the service.
    let started = serve_refused(
        &["--otlp-endpoint", "http://127.0.0.1:9"],
        &[("OTEL_EXPORTER_OTLP_HEADERS", header.as_str())],
        Duration::from_secs(3),
    );
    assert!(started.is_none(), "refused to loopback: {started:?}");
}
