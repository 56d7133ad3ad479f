//! The events feed of the real binary at its edges: shutdown ends every
//! open stream; on PostgreSQL, one listening connection per instance, and a
//! change log pruned past the sequencer starts a new history.

use std::sync::Arc;
use std::time::Duration;

use axum::http::header;
use reqwest::Method;
use serde_json::Value;
use session_core::{AccountId, ClientMetadata, MemoryCache, SessionService};
use session_postgres::{PgConfig, PgSessionStore};
use session_test_postgres::TestDatabase;
use session_test_process::until_async;
use uuid::Uuid;

use crate::e2e::{KEY, Options, Server, ready_on_sqlite};

/// A bound on waiting for what a stream should deliver, not a timing.
const STREAM_BOUND: Duration = Duration::from_secs(30);

/// Appends what `stream` sends to `received` until `done` says so; `false`
/// if [`STREAM_BOUND`] passed first. The stream must stay open meanwhile.
async fn read_until(
    stream: &mut reqwest::Response,
    received: &mut String,
    done: impl Fn(&str) -> bool,
) -> bool {
    tokio::time::timeout(STREAM_BOUND, async {
        while !done(received) {
            let chunk = stream
                .chunk()
                .await
                .unwrap()
                .expect("the stream stays open");
            received.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    })
    .await
    .is_ok()
}

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
    let arrived = read_until(&mut stream, &mut received, |received| {
        ids.iter().all(|id| received.contains(id))
    })
    .await;
    assert!(arrived, "the events never arrived:\n{received}");

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

/// A long-poll page from `after` (`None`: from now): status and body.
async fn page(server: &Server, after: Option<&str>) -> (u16, Value) {
    let path = after.map_or_else(
        || "/v1/events".to_owned(),
        |after| format!("/v1/events?wait=1&after={after}"),
    );
    server.call(Method::GET, &path, None).await
}

/// Every event after `start` once `count` have arrived, within the bound.
async fn events_after(server: &Server, start: &str, count: usize) -> Vec<Value> {
    let mut events: Vec<Value> = Vec::new();
    let mut after = start.to_owned();
    let served = until_async("the events arrive", STREAM_BOUND, async || {
        let (status, body) = page(server, Some(&after)).await;
        assert_eq!(status, 200, "{body}");
        events.extend(body["events"].as_array().unwrap().iter().cloned());
        after = body["next"].as_str().unwrap().to_owned();
        events.len() >= count
    })
    .await;
    served.unwrap_or_else(|err| panic!("{err}: {events:?}"));
    events
}

/// An event id's position: its last 16 hexadecimal digits.
fn position(id: &str) -> u64 {
    u64::from_str_radix(&id[16..], 16).unwrap()
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
    let woken = read_until(&mut stream, &mut received, |received| {
        received.contains(&id)
    })
    .await;
    assert!(woken, "B's feed was never woken:\n{received}\n{}", b.log());
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

/// The sequencer's reset: every instance down while the change log is
/// pruned past the sequencer's cursor (as `--pg-change-retention` prunes,
/// through `session.prune_change_log`). The next step starts a new
/// history: a cursor of the old one gets 410, and a fresh start reads what
/// follows with no gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_log_pruned_past_the_sequencer_starts_a_new_history() {
    let database = TestDatabase::create();
    let server = ready_on(&database, &[]).await;
    let (_, start) = page(&server, None).await;
    let start = start["next"].as_str().unwrap().to_owned();
    let (_, first) = server.create(Uuid::new_v4()).await;
    let read = events_after(&server, &start, 1).await;
    assert_eq!(read[0]["session_id"], first.as_str());
    let old = read[0]["id"].as_str().unwrap().to_owned();
    server.kill();

    // While no instance runs: a write by another process, never sequenced,
    // then the change log pruned past it.
    let store = PgSessionStore::connect(PgConfig::from_url(database.url()).unwrap())
        .await
        .unwrap();
    let writer = SessionService::builder(Arc::new(store), Arc::new(MemoryCache::new())).build();
    writer
        .create(
            AccountId::new(Uuid::new_v4()).unwrap(),
            ClientMetadata::default(),
        )
        .await
        .unwrap();
    let (sql, connection) = tokio_postgres::connect(database.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    // The first call marks the log's head; once the mark is older than the
    // retention (an hour here, moved back by hand), the second prunes to it.
    sql.batch_execute(
        "SELECT session.prune_change_log(3600, 10000); \
         UPDATE session.change_log_marks SET taken_at = taken_at - interval '2 hours';",
    )
    .await
    .unwrap();
    let pruned: i64 = sql
        .query_one("SELECT session.prune_change_log(3600, 10000)", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(pruned, 2, "both creations' entries are pruned");

    server.restart();
    server.wait_ready().await;
    for cursor in [&old, &start] {
        let (status, body) = page(&server, Some(cursor)).await;
        assert_eq!(status, 410, "{cursor}: {body}");
        assert_eq!(body["error"]["code"], "cursor_expired", "{body}");
    }
    let (status, fresh) = page(&server, None).await;
    assert_eq!(status, 200, "{fresh}");
    let fresh = fresh["next"].as_str().unwrap().to_owned();
    assert_ne!(&fresh[..16], &old[..16], "a new history");
    let mut created = Vec::new();
    for _ in 0..2 {
        created.push(server.create(Uuid::new_v4()).await.1);
    }
    let read = events_after(&server, &fresh, 2).await;
    assert_eq!(read.len(), 2, "{read:?}");
    for (n, (event, id)) in read.iter().zip(&created).enumerate() {
        assert_eq!(event["session_id"], id.as_str(), "{read:?}");
        let at = position(event["id"].as_str().unwrap());
        assert_eq!(
            at,
            position(&fresh) + 1 + u64::try_from(n).unwrap(),
            "no gap: {read:?}"
        );
    }
}
