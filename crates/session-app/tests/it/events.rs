//! The events feed of the real binary at its edges: shutdown ends every
//! open stream; on PostgreSQL, one listening connection per instance.

use std::time::Duration;

use axum::http::header;
use reqwest::Method;
use session_test_postgres::TestDatabase;
use session_test_process::until_async;
use uuid::Uuid;

use crate::e2e::{KEY, Options, Server, ready_on_sqlite};

/// A bound on waiting for what a stream should deliver, not a timing.
const STREAM_BOUND: Duration = Duration::from_secs(30);

/// SIGTERM ends an open event stream: the subscriber has every event sent
/// before it, then a clean end of the body (not a connection cut), and the
/// process exits on its own without waiting out its shutdown grace for the
/// stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_an_open_event_stream_cleanly() {
    let (server, _dir) = ready_on_sqlite(&["--shutdown-timeout", "10s"]).await;
    let mut stream = crate::e2e::http_client()
        .get(server.url("/v1/events"))
        .header(header::ACCEPT, "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(server.create(Uuid::new_v4()).await.1);
    }
    let mut received = String::new();
    tokio::time::timeout(STREAM_BOUND, async {
        while !ids.iter().all(|id| received.contains(id)) {
            let chunk = stream
                .chunk()
                .await
                .unwrap()
                .expect("the stream stays open");
            received.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the events never arrived:\n{received}"));

    let stopping = tokio::task::spawn_blocking(move || server.terminate_with_log());
    // A hang guard: the process exits within its 10 s grace, the test
    // process's 30 s bound on SIGTERM, or is killed.
    let end = tokio::time::timeout(STREAM_BOUND * 2, async {
        loop {
            match stream.chunk().await {
                Ok(Some(chunk)) => received.push_str(std::str::from_utf8(&chunk).unwrap()),
                Ok(None) => return Ok(()),
                Err(err) => return Err(err),
            }
        }
    })
    .await;
    let (status, log) = stopping.await.unwrap();
    match end {
        Ok(Ok(())) => {}
        Ok(Err(err)) => panic!("the stream was cut, not ended: {err:?}\n{received}\n{log}"),
        Err(_) => panic!("the stream never ended:\n{received}\n{log}"),
    }
    assert!(status.success(), "{status}\n{log}");
    assert!(
        !log.contains("did not finish in time"),
        "the stream held the shutdown for its whole grace:\n{log}"
    );
    assert_eq!(received.matches("event: created").count(), 3, "{received}");
    for id in &ids {
        assert_eq!(received.matches(id.as_str()).count(), 1, "{id}: {received}");
    }
}

/// An instance on `database` with `extra` arguments, once ready.
async fn ready_on(database: &TestDatabase, extra: &[&str]) -> Server {
    let server = Server::start(Options {
        database_url: database.url().to_owned(),
        api_key: Some(KEY.to_owned()),
        extra: extra.iter().map(|arg| (*arg).to_owned()).collect(),
        ..Options::default()
    });
    server.wait_ready().await;
    server
}

/// Connections to `database` listening for the change log's wake-ups.
async fn listening(database: &TestDatabase) -> i64 {
    let (client, connection) = tokio_postgres::connect(database.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .query_one(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND query = $1",
            &[&format!("LISTEN {}", session_postgres::CHANGES_CHANNEL)],
        )
        .await
        .unwrap()
        .get(0)
}

/// Each instance holds one listening connection, its change-log follower's,
/// and its events feed learns of another instance's writes through it: with
/// polling out of reach (an hour), an event written on A reaches a stream
/// on B by the follower's wake-up alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_events_feed_wakes_through_the_followers_one_listening_connection() {
    let database = TestDatabase::create();
    let args = ["--log-poll-interval", "1h", "--max-staleness", "2h"];
    let a = ready_on(&database, &args).await;
    let b = ready_on(&database, &args).await;
    let mut stream = crate::e2e::http_client()
        .get(b.url("/v1/events"))
        .bearer_auth(KEY)
        .header(header::ACCEPT, "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let (_, id) = a.create(Uuid::new_v4()).await;
    let mut received = String::new();
    tokio::time::timeout(STREAM_BOUND, async {
        while !received.contains(&id) {
            let chunk = stream
                .chunk()
                .await
                .unwrap()
                .expect("the stream stays open");
            received.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    })
    .await
    .unwrap_or_else(|_| panic!("B's feed was never woken:\n{received}\n{}", b.log()));
    for server in [&a, &b] {
        let listens = until_async("the follower listens", STREAM_BOUND, async || {
            let (_, ready) = server.call(Method::GET, "/readyz", None).await;
            ready["checks"]["change_log"]["wake_ups"] == "listening"
        })
        .await;
        listens.unwrap_or_else(|err| panic!("{err}\n{}", server.log()));
    }
    assert_eq!(listening(&database).await, 2, "one per instance");
}
