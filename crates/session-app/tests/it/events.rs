//! The events feed of the real binary at its edges: shutdown ends every
//! open stream.

use std::time::Duration;

use axum::http::header;
use uuid::Uuid;

use crate::e2e::ready_on_sqlite;

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
