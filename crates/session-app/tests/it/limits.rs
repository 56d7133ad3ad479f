//! Slow clients, against the real binary on a real socket: every
//! connection is held to the header read, request and idle timeouts, and a
//! full server closes its longest idle connection for a new client (the
//! admission of new connections is `admission.rs`'s).
//!
//! The limits are small so the tests are quick. The bounds asserted are
//! loose on purpose: "not closed before its limit" and "closed well within
//! a few times its limit"; nothing here measures speed.

use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::e2e::{Options, Server, sqlite_url, temp_dir};

const HEADER_READ: Duration = Duration::from_millis(1_000);
const REQUEST: Duration = Duration::from_millis(2_500);
const IDLE: Duration = Duration::from_millis(2_000);
/// How long a test waits for the server to close a connection before it
/// calls the connection held open for ever.
pub(crate) const GIVE_UP: Duration = Duration::from_secs(15);
/// Scheduling may fire a timer a little early relative to the client's clock.
const SLACK: Duration = Duration::from_millis(100);

fn limit_args(max_connections: u32) -> Vec<String> {
    let secs = |duration: Duration| format!("{}ms", duration.as_millis());
    vec![
        "--header-read-timeout".into(),
        secs(HEADER_READ),
        "--request-timeout".into(),
        secs(REQUEST),
        "--idle-timeout".into(),
        secs(IDLE),
        "--max-connections".into(),
        max_connections.to_string(),
    ]
}

async fn start(max_connections: u32) -> (Server, tempfile::TempDir) {
    let (server, dir) = start_with(limit_args(max_connections));
    server.wait_ready().await;
    (server, dir)
}

/// Starts the server without waiting for readiness (which would leave the
/// test's HTTP client holding a kept-alive connection).
pub(crate) fn start_with(extra: Vec<String>) -> (Server, tempfile::TempDir) {
    let dir = temp_dir();
    let server = Server::start(Options {
        database_url: sqlite_url(dir.path()),
        extra,
        ..Options::default()
    });
    (server, dir)
}

/// Reads until the server closes the connection (end of stream or reset)
/// and returns when that was, or `None` if it was still open at `GIVE_UP`.
pub(crate) async fn closed_at(stream: &mut TcpStream) -> Option<Instant> {
    let mut buf = [0u8; 1024];
    let read_until_closed = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return Instant::now(),
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(GIVE_UP, read_until_closed).await.ok()
}

/// Reads one whole response with a `Content-Length` and returns its status
/// line and body.
pub(crate) async fn read_response(stream: &mut TcpStream) -> (String, String) {
    let mut received = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let read = tokio::time::timeout(GIVE_UP, stream.read(&mut buf))
            .await
            .expect("a response in time")
            .expect("read");
        assert_ne!(read, 0, "closed before a whole response");
        received.extend_from_slice(&buf[..read]);
        let text = String::from_utf8_lossy(&received);
        if let Some(end) = text.find("\r\n\r\n") {
            let length: usize = text[..end]
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().unwrap())
                })
                .expect("a Content-Length");
            if received.len() >= end + 4 + length {
                let status = text.lines().next().unwrap().to_owned();
                return (status, text[end + 4..end + 4 + length].to_owned());
            }
        }
    }
}

const HALF_SENT_HEAD: &[u8] = b"POST /v1/sessions/resolve HTTP/1.1\r\nHost: 127.0.0.1\r\n";

#[tokio::test]
async fn a_half_sent_request_head_is_closed_at_the_header_read_timeout() {
    let (server, _dir) = start(64).await;
    let mut stream = TcpStream::connect(server.address).await.unwrap();
    let opened = Instant::now();
    stream.write_all(HALF_SENT_HEAD).await.unwrap();

    let closed = closed_at(&mut stream)
        .await
        .expect("a half-sent head held the connection open");
    let held = closed - opened;
    assert!(held + SLACK >= HEADER_READ, "closed after {held:?}");
    assert!(
        held < REQUEST,
        "closed after {held:?}, not by the header read timeout"
    );
    let timeouts = server
        .metric("session_http_connection_timeouts_total{limit=\"header_read\"}")
        .await;
    assert!((timeouts - 1.0).abs() < f64::EPSILON, "{timeouts}");
}

#[tokio::test]
async fn a_head_sent_slowly_on_a_kept_alive_connection_is_closed_too() {
    let (server, _dir) = start(64).await;
    let mut stream = TcpStream::connect(server.address).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_response(&mut stream).await.0, "HTTP/1.1 200 OK");
    // The next head starts but never ends: the header read timeout counts
    // from its first byte, not the longer idle timeout from the response.
    let started = Instant::now();
    stream.write_all(HALF_SENT_HEAD).await.unwrap();
    let held = closed_at(&mut stream).await.expect("held open") - started;
    assert!(held + SLACK >= HEADER_READ, "closed after {held:?}");
    assert!(
        held < IDLE,
        "closed after {held:?}, not by the header read timeout"
    );
}

#[tokio::test]
async fn a_slow_body_upload_is_closed_at_the_request_timeout() {
    let (server, _dir) = start(64).await;
    let stream = TcpStream::connect(server.address).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let started = Instant::now();
    writer
        .write_all(
            b"POST /v1/sessions/resolve HTTP/1.1\r\nHost: 127.0.0.1\r\n\
              Content-Type: application/json\r\nContent-Length: 2000\r\n\r\n{\"token\": \"",
        )
        .await
        .unwrap();
    // One byte every 100 ms: never silent for long, never done in time.
    let trickle = tokio::spawn(async move {
        for _ in 0..1_900 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if writer.write_all(b"a").await.is_err() {
                return;
            }
        }
    });
    let mut buf = [0u8; 1024];
    let read_until_closed = async {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => Instant::now(),
            Ok(read) => panic!(
                "answered before the body was sent: {}",
                String::from_utf8_lossy(&buf[..read])
            ),
        }
    };
    let closed = tokio::time::timeout(GIVE_UP, read_until_closed)
        .await
        .expect("a slow upload held the connection open");
    trickle.abort();
    let held = closed - started;
    assert!(held + SLACK >= REQUEST, "closed after {held:?}");
    let timeouts = server
        .metric("session_http_connection_timeouts_total{limit=\"request\"}")
        .await;
    assert!((timeouts - 1.0).abs() < f64::EPSILON, "{timeouts}");
}

#[tokio::test]
async fn an_idle_kept_alive_connection_is_closed_at_the_idle_timeout() {
    let (server, _dir) = start(64).await;
    let mut stream = TcpStream::connect(server.address).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_response(&mut stream).await.0, "HTTP/1.1 200 OK");
    let answered = Instant::now();

    let held = closed_at(&mut stream)
        .await
        .expect("an idle connection was held open")
        - answered;
    // Not the shorter header read timeout: a kept-alive connection may wait
    // for its next request longer than a head may take to arrive.
    assert!(held + SLACK >= IDLE, "closed after {held:?}");
}

pub(crate) const HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";

#[tokio::test]
async fn a_full_server_closes_its_longest_idle_connection_for_a_new_client() {
    // Timeouts far beyond the test, so only shedding can free a slot.
    let (server, _dir) = start_with(
        [
            "--header-read-timeout=60s",
            "--request-timeout=60s",
            "--idle-timeout=60s",
            "--max-connections=3",
        ]
        .map(String::from)
        .to_vec(),
    );
    let connect = || TcpStream::connect(server.address);

    let mut oldest = connect().await.unwrap();
    oldest.write_all(HEALTHZ).await.unwrap();
    assert_eq!(read_response(&mut oldest).await.0, "HTTP/1.1 200 OK");
    let mut idle = connect().await.unwrap();
    idle.write_all(HEALTHZ).await.unwrap();
    assert_eq!(read_response(&mut idle).await.0, "HTTP/1.1 200 OK");
    // Served once, then mid-head: busy, not idle.
    let mut sending = connect().await.unwrap();
    sending.write_all(HEALTHZ).await.unwrap();
    assert_eq!(read_response(&mut sending).await.0, "HTTP/1.1 200 OK");
    sending
        .write_all(b"GET /healthz HTTP/1.1\r\n")
        .await
        .unwrap();

    // Every slot is taken: the new client is served once the connection
    // idle the longest is closed for it (before any timeout could).
    let mut newcomer = connect().await.unwrap();
    newcomer.write_all(HEALTHZ).await.unwrap();
    assert_eq!(read_response(&mut newcomer).await.0, "HTTP/1.1 200 OK");
    closed_at(&mut oldest)
        .await
        .expect("the longest idle connection was kept open");

    // The others were left alone: the half-sent head finishes and is answered,
    // and the more recently idle connection still serves.
    sending.write_all(b"Host: 127.0.0.1\r\n\r\n").await.unwrap();
    assert_eq!(read_response(&mut sending).await.0, "HTTP/1.1 200 OK");
    idle.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let (status, metrics) = read_response(&mut idle).await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    for line in [
        "session_http_connections_shed_total 1",
        "session_http_accepts_deferred_total 1",
        "session_http_connections_open 3",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no {line} in:\n{metrics}"
        );
    }
}

/// One answer as the client read it off the socket.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: String,
    /// Whether the answer said `Connection: close`.
    pub(crate) close: bool,
    pub(crate) headers: String,
    pub(crate) body: String,
    /// Bytes read past the answer's end (none, unless the server sent more
    /// than one answer to one request).
    pub(crate) after: usize,
}

/// Reads one whole answer with a `Content-Length` from `reader`, or panics
/// naming `who` if the connection fails or closes first, or nothing comes
/// within [`GIVE_UP`].
pub(crate) async fn read_answer(reader: &mut (impl AsyncRead + Unpin), who: &str) -> Answer {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let read = tokio::time::timeout(GIVE_UP, reader.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("{who}: no answer within {GIVE_UP:?}"))
            .unwrap_or_else(|error| {
                panic!(
                    "{who}: reading the answer failed: {error}; read so far: {}",
                    String::from_utf8_lossy(&received)
                )
            });
        assert_ne!(
            read,
            0,
            "{who}: the connection closed before a whole answer: {}",
            String::from_utf8_lossy(&received)
        );
        received.extend_from_slice(&buf[..read]);
        let text = String::from_utf8_lossy(&received);
        let Some(end) = text.find("\r\n\r\n") else {
            continue;
        };
        let header = |wanted: &str| {
            text[..end].lines().find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case(wanted)
                    .then(|| value.trim().to_ascii_lowercase())
            })
        };
        let length: usize = header("content-length")
            .expect("a Content-Length")
            .parse()
            .unwrap();
        if received.len() < end + 4 + length {
            continue;
        }
        return Answer {
            status: text.lines().next().unwrap().to_owned(),
            close: header("connection").is_some_and(|value| value.contains("close")),
            headers: text[..end].to_owned(),
            body: text[end + 4..end + 4 + length].to_owned(),
            after: received.len() - (end + 4 + length),
        };
    }
}
