//! Who gets a connection slot, and when, against the real binary on a real
//! socket: a socket gets a slot only once it has sent a whole request head,
//! so a flood of sockets that never speak cannot take the slots of
//! connections that do, nor keep new clients waiting; a client that has
//! asked and waits for a slot takes the next connection that turns idle;
//! and a request the service cannot answer in time gets an answer.
//!
//! The limits are small so the tests are quick. The one timed assertion is
//! the bound the service promises new clients during a flood (answered
//! within a second); every other wait is a bound on a test that would
//! otherwise hang, not a measurement.

use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::{Connection, SqliteConnection};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::e2e::{Options, Server, sqlite_url, temp_dir};
use crate::limits::{Answer, GIVE_UP, HEALTHZ, closed_at, read_answer, start_with};

/// Sends `request` on `stream` and reads its answer.
async fn ask(stream: &mut TcpStream, request: &[u8], who: &str) -> Answer {
    stream
        .write_all(request)
        .await
        .unwrap_or_else(|error| panic!("{who}: could not send: {error}"));
    read_answer(stream, who).await
}

/// A new client: connects, asks for `/healthz` and closes. Returns how long
/// it took from its connect to the whole answer.
async fn new_client(server: &Server, who: &str) -> Duration {
    let started = Instant::now();
    let mut stream = TcpStream::connect(server.address).await.unwrap();
    let answer = ask(
        &mut stream,
        b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        who,
    )
    .await;
    assert_eq!(answer.status, "HTTP/1.1 200 OK", "{who}: {answer:?}");
    started.elapsed()
}

#[tokio::test]
async fn a_silent_flood_leaves_gateway_connections_serving_and_new_clients_answered_within_a_second()
 {
    // Eight slots, heads due within a second: the old accept loop gave a
    // slot to every socket and freed it at the header read timeout, so a
    // flood above 8 a second held every slot, and each new socket closed
    // an idle gateway connection to take its place.
    const CAP: u32 = 8;
    const HEADER_READ: Duration = Duration::from_secs(1);
    // Ten times cap ÷ header read timeout, for three seconds.
    const FLOOD_PER_SECOND: u32 = 80;
    const FLOOD_FOR: Duration = Duration::from_secs(3);
    const GATEWAY_CONNECTIONS: usize = 4;
    const NEW_CLIENTS: usize = 5;
    /// What the service promises a new client during such a flood.
    const ANSWERED_WITHIN: Duration = Duration::from_secs(1);

    let (server, _dir) = start_with(vec![
        format!("--header-read-timeout={}ms", HEADER_READ.as_millis()),
        "--request-timeout=5s".to_owned(),
        "--idle-timeout=60s".to_owned(),
        format!("--max-connections={CAP}"),
    ]);

    // A gateway's pool: connections that ask, idle, and ask again.
    let mut gateways = Vec::new();
    for index in 0..GATEWAY_CONNECTIONS {
        let mut stream = TcpStream::connect(server.address).await.unwrap();
        let who = format!("gateway connection {index}");
        assert_eq!(
            ask(&mut stream, HEALTHZ, &who).await.status,
            "HTTP/1.1 200 OK"
        );
        gateways.push((stream, who));
    }

    let address = server.address;
    let flood = tokio::spawn(async move {
        let mut silent = Vec::new();
        let mut every = tokio::time::interval(Duration::from_secs(1) / FLOOD_PER_SECOND);
        let until = Instant::now() + FLOOD_FOR;
        while Instant::now() < until {
            every.tick().await;
            if let Ok(stream) = TcpStream::connect(address).await {
                silent.push(stream);
            }
        }
        silent
    });
    let gateway_traffic = tokio::spawn(async move {
        let until = Instant::now() + FLOOD_FOR + Duration::from_millis(500);
        while Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(250)).await;
            for (stream, who) in &mut gateways {
                let answer = ask(stream, HEALTHZ, who).await;
                assert_eq!(answer.status, "HTTP/1.1 200 OK", "{who}: {answer:?}");
                assert!(!answer.close, "{who} was told to close: {answer:?}");
            }
        }
        gateways
    });

    // Into the flood, once it has run longer than a head may take.
    tokio::time::sleep(HEADER_READ + Duration::from_millis(200)).await;
    let mut waits = Vec::new();
    for index in 0..NEW_CLIENTS {
        waits.push(new_client(&server, &format!("new client {index}")).await);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let silent = flood.await.unwrap();
    let gateways = gateway_traffic.await.unwrap();
    assert!(
        silent.len() > (FLOOD_PER_SECOND as usize) * 2,
        "the flood was not sent: {} sockets",
        silent.len()
    );
    for wait in &waits {
        assert!(
            *wait <= ANSWERED_WITHIN,
            "a new client waited {wait:?} during the flood (all: {waits:?})"
        );
    }
    drop(gateways);
    drop(silent);
    let dropped = server
        .metric("session_http_connection_timeouts_total{limit=\"first_byte\"}")
        .await;
    assert!(dropped >= 1.0, "no silent socket was dropped: {dropped}");
    let shed = server.metric("session_http_connections_shed_total").await;
    assert!(shed.abs() < f64::EPSILON, "{shed} connections shed");
}

/// The head of a resolve whose body is sent later: once the service invites
/// the body (`100 Continue`), the connection is busy (reading the body)
/// until the test sends it.
const RESOLVE_HEAD_EXPECTING_100_CONTINUE: &[u8] = b"POST /v1/sessions/resolve HTTP/1.1\r\n\
    Host: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 13\r\n\
    Expect: 100-continue\r\n\r\n";
const THE_BODY: &[u8] = b"{\"token\":\"x\"}";

/// Reads the service's `100 Continue`, and nothing more (nothing more comes
/// before the body).
async fn invited(stream: &mut TcpStream, who: &str) {
    let mut received = Vec::new();
    let mut buf = [0u8; 256];
    while !received.ends_with(b"\r\n\r\n") {
        let read = tokio::time::timeout(GIVE_UP, stream.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("{who}: not invited to send its body"))
            .unwrap();
        assert_ne!(read, 0, "{who}: closed before the invitation");
        received.extend_from_slice(&buf[..read]);
    }
    assert!(
        received.starts_with(b"HTTP/1.1 100 Continue\r\n"),
        "{who}: {}",
        String::from_utf8_lossy(&received)
    );
}

#[tokio::test]
async fn a_client_waiting_for_a_slot_takes_each_connection_that_turns_idle() {
    // Timeouts far beyond the test, so only a connection that turns idle
    // can make room.
    let (server, _dir) = start_with(
        [
            "--header-read-timeout=60s",
            "--request-timeout=60s",
            "--idle-timeout=60s",
            "--max-connections=2",
        ]
        .map(String::from)
        .to_vec(),
    );
    // Both slots taken by connections that have each been served once and
    // are now in the middle of a request: invited to send its body, which
    // proves the service is reading it.
    let mut busy = Vec::new();
    for name in ["first busy connection", "second busy connection"] {
        let mut stream = TcpStream::connect(server.address).await.unwrap();
        assert_eq!(
            ask(&mut stream, HEALTHZ, name).await.status,
            "HTTP/1.1 200 OK"
        );
        stream
            .write_all(RESOLVE_HEAD_EXPECTING_100_CONTINUE)
            .await
            .unwrap();
        invited(&mut stream, name).await;
        busy.push(stream);
    }
    let [mut first, mut second] = <[TcpStream; 2]>::try_from(busy).unwrap();

    // Two clients ask and wait: no slot is free and none is idle.
    let mut waiting = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(server.address).await.unwrap();
        stream.write_all(HEALTHZ).await.unwrap();
        waiting.push(stream);
    }
    // So that both heads have most likely arrived before a connection turns
    // idle (the old loop looked for a slot once, at accept, and a client
    // that then found none waited out the idle timeout). Which of the two
    // the service read first, and so serves first, is not known.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let [mut one, mut other] = <[TcpStream; 2]>::try_from(waiting).unwrap();

    // The first busy connection answers and turns idle: it makes room, and
    // the clients waiting are served, each in the slot of the one before:
    // a connection that turns idle while a client waits closes after its
    // answer (`Connection: close`), and one idle when a client starts
    // waiting closes at once.
    first.write_all(THE_BODY).await.unwrap();
    read_answer(&mut first, "first busy connection").await;
    let one_served = read_answer(&mut one, "one waiting client").await;
    let other_served = read_answer(&mut other, "the other waiting client").await;
    for served in [&one_served, &other_served] {
        assert_eq!(served.status, "HTTP/1.1 200 OK", "{served:?}");
    }
    // The client served first closes for the other; no one waits after the
    // second, whose answer keeps its connection.
    assert!(
        one_served.close != other_served.close,
        "exactly one closes: {one_served:?} {other_served:?}"
    );
    let first_served = if one_served.close {
        &mut one
    } else {
        &mut other
    };
    for (stream, who) in [
        (&mut first, "first busy"),
        (first_served, "the first served"),
    ] {
        closed_at(stream)
            .await
            .unwrap_or_else(|| panic!("{who} connection was kept open, making no room"));
    }

    // The second busy connection was never idle, and was left alone.
    second.write_all(THE_BODY).await.unwrap();
    let answered = read_answer(&mut second, "second busy connection").await;
    assert!(!answered.close, "{answered:?}");
    let metrics = ask(
        &mut second,
        b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        "second busy connection",
    )
    .await;
    for line in [
        "session_http_connections_shed_total 2",
        "session_http_accepts_deferred_total 2",
    ] {
        assert!(
            metrics.body.lines().any(|l| l == line),
            "no {line} in:\n{}",
            metrics.body
        );
    }
}

#[tokio::test]
async fn a_socket_that_never_speaks_never_takes_the_slot_of_an_idle_connection() {
    let (server, _dir) = start_with(
        [
            "--header-read-timeout=500ms",
            "--request-timeout=60s",
            "--idle-timeout=60s",
            "--max-connections=1",
        ]
        .map(String::from)
        .to_vec(),
    );
    let mut kept = TcpStream::connect(server.address).await.unwrap();
    assert_eq!(
        ask(&mut kept, HEALTHZ, "kept-alive").await.status,
        "HTTP/1.1 200 OK"
    );
    // The server is full; a socket connects and says nothing until the
    // server gives up on it.
    let mut silent = TcpStream::connect(server.address).await.unwrap();
    closed_at(&mut silent)
        .await
        .expect("a silent socket was held open");
    let answer = ask(&mut kept, HEALTHZ, "kept-alive, after the silent socket").await;
    assert_eq!(answer.status, "HTTP/1.1 200 OK", "{answer:?}");
    assert!(!answer.close, "{answer:?}");
}

#[tokio::test]
async fn a_full_pending_pool_closes_its_oldest_silent_socket_for_a_new_one() {
    let (server, _dir) = start_with(
        [
            "--first-byte-timeout=60s",
            "--header-read-timeout=60s",
            "--request-timeout=60s",
            "--max-pending-connections=2",
        ]
        .map(String::from)
        .to_vec(),
    );
    let mut oldest = TcpStream::connect(server.address).await.unwrap();
    // Half a head: still no request, so it can be closed as well.
    oldest
        .write_all(b"GET /healthz HTTP/1.1\r\n")
        .await
        .unwrap();
    let mut newer = TcpStream::connect(server.address).await.unwrap();
    // The pool is full: the next socket closes the oldest one.
    let _newest = TcpStream::connect(server.address).await.unwrap();
    closed_at(&mut oldest)
        .await
        .expect("the oldest silent socket was kept open");
    // A new client too, closing the next oldest.
    let mut client = TcpStream::connect(server.address).await.unwrap();
    let served = ask(&mut client, HEALTHZ, "a new client").await;
    assert_eq!(served.status, "HTTP/1.1 200 OK", "{served:?}");
    closed_at(&mut newer)
        .await
        .expect("the next oldest silent socket was kept open");
    let metrics = ask(
        &mut client,
        b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        "a new client",
    )
    .await;
    assert!(
        metrics
            .body
            .lines()
            .any(|l| l == "session_http_connections_evicted_total 2"),
        "{}",
        metrics.body
    );
}

#[tokio::test]
async fn a_create_that_cannot_finish_in_time_is_answered_503_timeout() {
    let dir = temp_dir();
    let server = Server::start(Options {
        database_url: sqlite_url(dir.path()),
        extra: ["--header-read-timeout=500ms", "--request-timeout=1s"]
            .map(String::from)
            .to_vec(),
        ..Options::default()
    });
    server.wait_ready().await;
    // Another program holds the database's write lock: every write waits
    // for it (SQLite's busy timeout, 5 s), longer than a request may take.
    let mut holder =
        SqliteConnection::establish(dir.path().join("sessions.db").to_str().unwrap()).unwrap();
    holder.batch_execute("BEGIN IMMEDIATE").unwrap();

    let mut stream = TcpStream::connect(server.address).await.unwrap();
    let body = format!("{{\"account_id\":\"{}\"}}", uuid::Uuid::new_v4());
    let request = format!(
        "POST /v1/sessions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let answered = ask(&mut stream, request.as_bytes(), "a create").await;
    assert_eq!(
        answered.status, "HTTP/1.1 503 Service Unavailable",
        "{answered:?}"
    );
    let error: serde_json::Value = serde_json::from_str(&answered.body).unwrap();
    assert_eq!(error["error"]["code"], "timeout", "{answered:?}");
    assert!(answered.close, "{answered:?}");
    assert!(
        answered
            .headers
            .lines()
            .any(|line| line.eq_ignore_ascii_case("retry-after: 1")),
        "{answered:?}"
    );
    // Then a clean end of stream, not a reset.
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(GIVE_UP, stream.read(&mut buf))
        .await
        .expect("the connection closed after its answer");
    assert!(matches!(read, Ok(0)), "{read:?}");

    holder.batch_execute("ROLLBACK").unwrap();
    drop(holder);
    let (status, body) = server
        .call(
            reqwest::Method::POST,
            "/v1/sessions",
            Some(serde_json::json!({ "account_id": uuid::Uuid::new_v4() })),
        )
        .await;
    assert_eq!(status, 201, "{body}");
}

/// Runs `serve` under `sh -c "ulimit <ulimit> && exec …"` with `args`,
/// and returns its exit status and what it wrote once it exits; a service
/// still running after [`GIVE_UP`] is killed and the test fails.
fn serve_under_ulimit(ulimit: &str, args: &[&str]) -> (std::process::ExitStatus, String) {
    let dir = temp_dir();
    let mut child = std::process::Command::new("sh")
        .args(["-c", &format!("ulimit {ulimit} && exec \"$@\""), "sh"])
        .arg(env!("CARGO_BIN_EXE_session-app"))
        .args(["serve", "--listen", "127.0.0.1:0", "--database-url"])
        .arg(sqlite_url(dir.path()))
        .args(args)
        .env_remove("SESSION_MAX_PENDING_CONNECTIONS")
        .env_remove("SESSION_MAX_CONNECTIONS")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > GIVE_UP {
            child.kill().unwrap();
            let output = child.wait_with_output().unwrap();
            panic!(
                "still serving after {GIVE_UP:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    (status, stderr)
}

#[test]
fn an_open_file_limit_below_what_the_limits_need_refuses_the_start() {
    // The hard limit too: it cannot be raised.
    let (status, stderr) = serve_under_ulimit("-n 100", &["--max-connections", "64"]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    for named in [
        "--max-connections",
        "--max-pending-connections",
        "ulimit -n",
    ] {
        assert!(stderr.contains(named), "{named} not named: {stderr}");
    }
    assert!(!stderr.contains("listening"), "{stderr}");
}

#[tokio::test]
async fn a_soft_open_file_limit_below_what_the_limits_need_is_raised_to_the_hard_one() {
    let dir = temp_dir();
    let server = Server::start(Options {
        database_url: sqlite_url(dir.path()),
        extra: vec!["--max-connections=512".to_owned()],
        soft_open_files: Some(100),
        ..Options::default()
    });
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", server.pid())).unwrap();
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .unwrap();
    let numbers: Vec<&str> = line.split_whitespace().skip(3).take(2).collect();
    assert!(
        numbers[0] != "100" && numbers[0] == numbers[1],
        "the soft limit was not raised to the hard one: {line}"
    );
}
