//! `GET /v1/events`, in process over the memory store: the long-poll page,
//! resuming, the header that wins, refused cursors, the subscriber bound,
//! and a stream that follows writes, beats while idle and ends at close.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use session_core::memory::MemoryStore;
use session_core::port::clock::{Clock, ManualClock, SystemClock};
use session_core::port::store::SessionStore;
use session_core::{MemoryCache, RevocationReason, SessionService};
use session_http::{ApiKeys, ApiState, ErrorCode, EventFeed, Scope, router};
use tower::ServiceExt;
use uuid::Uuid;

use crate::router::{KEY, keyed, scoped_key};

struct Feed {
    router: Router,
    feed: EventFeed,
    /// The store the service writes through, which wakes the feed.
    store: Arc<dyn SessionStore>,
}

async fn feed(max_subscribers: usize) -> Feed {
    feed_with(max_subscribers, ApiKeys::new([KEY]).unwrap()).await
}

async fn feed_with(max_subscribers: usize, keys: ApiKeys) -> Feed {
    feed_on(max_subscribers, keys, Arc::new(SystemClock)).await
}

/// A feed whose service and pruning both read `clock`.
async fn feed_on(max_subscribers: usize, keys: ApiKeys, clock: Arc<dyn Clock>) -> Feed {
    let store = Arc::new(MemoryStore::new());
    let feed = EventFeed::new(store.clone(), max_subscribers).with_clock(Arc::clone(&clock));
    let store = feed.store(store);
    let service = SessionService::builder(Arc::clone(&store), Arc::new(MemoryCache::new()))
        .clock(clock)
        .build();
    service.warm().await.unwrap();
    let state = ApiState::builder(service)
        .api_keys(keys)
        .events(feed.clone())
        .build();
    Feed {
        router: router(state),
        feed,
        store,
    }
}

fn request(method: Method, uri: &str) -> axum::http::request::Builder {
    keyed(KEY, method, uri)
}

impl Feed {
    async fn send(&self, request: Request<Body>) -> axum::response::Response {
        self.router.clone().oneshot(request).await.unwrap()
    }

    async fn json(&self, request: Request<Body>) -> (StatusCode, axum::http::HeaderMap, Value) {
        let response = self.send(request).await;
        let (status, headers) = (response.status(), response.headers().clone());
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            headers,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    async fn page(&self, uri: &str) -> Value {
        let (status, _, body) = self
            .json(request(Method::GET, uri).body(Body::empty()).unwrap())
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    /// Creates a session through the API; returns its token and id.
    async fn create(&self, account: Uuid) -> (String, String) {
        let (status, _, body) = self
            .json(
                request(Method::POST, "/v1/sessions")
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(Body::from(json!({ "account_id": account }).to_string()))
                    .unwrap(),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let id = body["session"]["id"].as_str().unwrap().to_owned();
        (body["token"].as_str().unwrap().to_owned(), id)
    }

    async fn revoke_all(&self, account: Uuid, reason: &str) {
        let uri = format!("/v1/accounts/{account}/sessions?reason={reason}");
        let (status, _, body) = self
            .json(request(Method::DELETE, &uri).body(Body::empty()).unwrap())
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    fn sse(&self, uri: &str) -> Request<Body> {
        request(Method::GET, uri)
            .header(header::ACCEPT, "text/event-stream")
            .body(Body::empty())
            .unwrap()
    }
}

fn kinds(page: &Value) -> Vec<(String, String)> {
    page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| {
            (
                event["type"].as_str().unwrap().to_owned(),
                event["session_id"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

async fn next_text(body: &mut Body) -> Option<String> {
    loop {
        let frame = body.frame().await?.unwrap();
        if let Ok(data) = frame.into_data() {
            return Some(String::from_utf8(data.to_vec()).unwrap());
        }
    }
}

/// Without a cursor the page starts at the head; from it, every later
/// event comes once, in commit order, page after page; a revoke-all is
/// one event per session with its reason; no token or hash is in any.
#[tokio::test]
async fn pages_resume_after_each_event_with_no_gap_or_duplicate() {
    let feed = feed(4).await;
    let start = feed.page("/v1/events").await;
    assert_eq!(start["events"], json!([]));
    let start = start["next"].as_str().unwrap().to_owned();
    let account = Uuid::new_v4();
    let (token_a, a) = feed.create(account).await;
    let (token_b, b) = feed.create(account).await;
    feed.revoke_all(account, "password_change").await;
    feed.feed.step().await.unwrap();

    let first = feed
        .page(&format!("/v1/events?after={start}&limit=3"))
        .await;
    let after = first["next"].as_str().unwrap();
    let rest = feed.page(&format!("/v1/events?after={after}")).await;
    let mut all = kinds(&first);
    all.extend(kinds(&rest));
    assert_eq!(
        &all[..2],
        [("created".into(), a.clone()), ("created".into(), b.clone())]
    );
    let mut revoked = all[2..].to_vec();
    revoked.sort();
    let mut expected = vec![("revoked".to_owned(), a), ("revoked".to_owned(), b)];
    expected.sort();
    assert_eq!(revoked, expected);
    assert_eq!(rest["events"][0]["reason"], "password_change");
    assert_eq!(rest["events"][0]["account_id"], account.to_string());
    assert_eq!(first["events"][0]["reason"], Value::Null);
    let end = rest["next"].as_str().unwrap();
    assert_eq!(
        feed.page(&format!("/v1/events?after={end}")).await["events"],
        json!([])
    );
    for page in [&first, &rest] {
        let text = page.to_string();
        assert!(!text.contains(&token_a) && !text.contains(&token_b));
        assert!(!text.contains("hash"), "{text}");
    }

    // `Last-Event-ID` wins over `after`, as an EventSource reconnects with
    // its first URL and its progress in the header.
    let (status, _, resumed) = feed
        .json(
            request(Method::GET, &format!("/v1/events?after={start}"))
                .header("last-event-id", after)
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(resumed, rest);
}

/// A cursor of another feed, or past the head, is 410 `cursor_expired`; a
/// malformed one is 400 and is not repeated.
#[tokio::test]
async fn a_foreign_or_future_cursor_is_gone_and_a_malformed_one_is_refused() {
    let feed = feed(4).await;
    let head = feed.page("/v1/events").await["next"]
        .as_str()
        .unwrap()
        .to_owned();
    let other = feed_cursor_of_another_feed().await;
    let future = format!("{}{:016x}", &head[..16], 7);
    for cursor in [other, future] {
        let (status, _, body) = feed
            .json(
                request(Method::GET, &format!("/v1/events?after={cursor}"))
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        assert_eq!(status, StatusCode::GONE, "{body}");
        assert_eq!(body["error"]["code"], json!(ErrorCode::CursorExpired));
        let response = feed
            .send(feed.sse(&format!("/v1/events?after={cursor}")))
            .await;
        assert_eq!(
            response.status(),
            StatusCode::GONE,
            "a stream is refused before it starts"
        );
    }
    let (status, _, body) = feed
        .json(
            request(Method::GET, "/v1/events?after=not-a-cursor-XYZ")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(!body.to_string().contains("XYZ"));
}

async fn feed_cursor_of_another_feed() -> String {
    feed(1).await.page("/v1/events").await["next"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Past `max_subscribers`, 503 `too_many_subscribers` with `Retry-After`;
/// a subscriber that leaves frees its place.
#[tokio::test]
async fn subscribers_past_the_bound_are_refused_until_one_leaves() {
    let feed = feed(2).await;
    let first = feed.send(feed.sse("/v1/events")).await;
    let second = feed.send(feed.sse("/v1/events")).await;
    assert_eq!(
        (first.status(), second.status()),
        (StatusCode::OK, StatusCode::OK)
    );
    let (status, headers, body) = feed
        .json(
            request(Method::GET, "/v1/events")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["error"]["code"], json!(ErrorCode::TooManySubscribers));
    assert_eq!(headers[header::RETRY_AFTER], "5");
    drop(first);
    assert_eq!(
        feed.send(feed.sse("/v1/events")).await.status(),
        StatusCode::OK
    );
    drop(second);
}

/// A stream sends each event as it is sequenced, with its id and type, a
/// heartbeat comment while idle (time here is paused, and advances only
/// while everything waits), and ends when the feed closes.
#[tokio::test(start_paused = true)]
async fn a_stream_follows_writes_beats_while_idle_and_ends_at_close() {
    let feed = feed(2).await;
    let response = feed.send(feed.sse("/v1/events")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "text/event-stream"
    );
    assert_eq!(response.headers()["x-accel-buffering"], "no");
    let mut body = response.into_body();
    let (_, id) = feed.create(Uuid::new_v4()).await;
    feed.feed.step().await.unwrap();
    let text = next_text(&mut body).await.unwrap();
    assert!(text.contains("event: created\n"), "{text}");
    assert!(
        text.contains("\nid: ") || text.starts_with("id: "),
        "{text}"
    );
    assert!(text.contains(&id), "{text}");
    assert_eq!(next_text(&mut body).await.unwrap(), ": \n\n", "a heartbeat");
    feed.feed.close();
    assert_eq!(next_text(&mut body).await, None, "the stream ended");
}

/// Every write that creates or revokes sessions wakes the feed, whichever
/// store method made it: here the not-before sweep's, which a long-poll
/// learns of at once although the feed polls only hourly. Time is paused,
/// so the long-poll's end at its `wait` is as exact as the sweep's moment:
/// the page must come before it, not from the read a long-poll makes as it
/// ends.
#[tokio::test(start_paused = true)]
async fn a_sweep_of_the_not_before_mark_wakes_a_waiting_long_poll() {
    let feed = feed(2).await;
    feed.create(Uuid::new_v4()).await;
    feed.feed.step().await.unwrap();
    let next = feed.page("/v1/events?wait=0").await["next"]
        .as_str()
        .unwrap()
        .to_owned();
    let hourly = Duration::from_secs(3_600);
    let running = tokio::spawn({
        let feed = feed.feed.clone();
        async move { feed.run(hourly, None, hourly).await }
    });
    let sweep = {
        let store = Arc::clone(&feed.store);
        async move {
            // The long-poll below is waiting by then.
            tokio::time::sleep(Duration::from_millis(200)).await;
            let now = time::OffsetDateTime::now_utc() + time::Duration::seconds(1);
            store
                .revoke_marked(now, None, 1_000, now, RevocationReason::ADMIN, None)
                .await
                .unwrap()
        }
    };
    let uri = format!("/v1/events?wait=20&after={next}");
    let asked = tokio::time::Instant::now();
    let (page, _) = tokio::join!(feed.page(&uri), sweep);
    assert!(
        asked.elapsed() < Duration::from_secs(20),
        "the long-poll waited out its 20 s: the sweep did not wake the feed"
    );
    let events = page["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{page}");
    assert_eq!(events[0]["type"], "revoked", "{page}");
    assert_eq!(events[0]["reason"], "admin", "{page}");
    feed.feed.close();
    running.await.unwrap();
}

/// The feed needs the `events` scope: a key holding only it follows the
/// feed and can do nothing else; a key for reading or writing sessions is
/// refused the feed, as the OpenAPI document says.
#[tokio::test]
async fn the_feed_needs_the_events_scope_and_the_events_scope_nothing_else() {
    const FEED: &str = "feed-key-0123456789ab";
    const READER: &str = "reader-key-0123456789";
    const WRITER: &str = "writer-key-0123456789";
    let key = |name: &str, scope: Scope, secret: &str| scoped_key(name, &[scope], secret);
    let app = feed_with(
        4,
        ApiKeys::scoped([
            key("feed", Scope::Events, FEED),
            key("reader", Scope::Read, READER),
            key("writer", Scope::Write, WRITER),
        ]),
    )
    .await;
    let call = |secret: &str, method: Method, uri: &str| {
        keyed(secret, method, uri).body(Body::empty()).unwrap()
    };
    let (status, _, page) = app.json(call(FEED, Method::GET, "/v1/events?wait=0")).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    for secret in [READER, WRITER] {
        let (status, headers, body) = app
            .json(call(secret, Method::GET, "/v1/events?wait=0"))
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        let code: ErrorCode = serde_json::from_value(body["error"]["code"].clone()).unwrap();
        assert_eq!(code, ErrorCode::InsufficientScope);
        assert_eq!(
            headers[header::WWW_AUTHENTICATE],
            r#"Bearer error="insufficient_scope", scope="events""#
        );
    }
    let one = format!("/v1/sessions/{}", Uuid::new_v4());
    let (status, _, body) = app.json(call(FEED, Method::GET, &one)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, _, body) = app.json(call(FEED, Method::DELETE, &one)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");

    let (_, _, doc) = app.json(call(FEED, Method::GET, "/openapi.json")).await;
    let forbidden = &doc["paths"]["/v1/events"]["get"]["responses"]["403"]["description"];
    assert!(
        forbidden
            .as_str()
            .is_some_and(|text| text.contains("`events` scope")),
        "{forbidden}"
    );
}

/// The run loop prunes at every interval, not only when it starts: an
/// event that was new at the first round and is past the retention by a
/// later one goes, a cursor before it gets 410, and the newer event stays.
/// Wall time is a manual clock and tokio's time is paused (it advances
/// only while everything waits), so nothing is waited out.
#[tokio::test(start_paused = true)]
async fn the_run_loop_prunes_events_past_their_retention_at_every_interval() {
    const RETENTION: Duration = Duration::from_secs(3_600);
    const PRUNE_EVERY: Duration = Duration::from_secs(600);
    let clock = Arc::new(ManualClock::new(
        time::macros::datetime!(2026-12-07 0:00 UTC),
    ));
    let feed = feed_on(2, ApiKeys::new([KEY]).unwrap(), clock.clone()).await;
    let start = feed.page("/v1/events").await["next"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, old) = feed.create(Uuid::new_v4()).await;
    let running = tokio::spawn({
        let feed = feed.feed.clone();
        async move {
            feed.run(Duration::from_secs(1), Some(RETENTION), PRUNE_EVERY)
                .await;
        }
    });
    // Paused time moves only once every task waits: the loop's first round
    // has run by then, and pruned nothing (the event is new).
    tokio::time::sleep(Duration::from_millis(1)).await;
    let first = feed.page(&format!("/v1/events?after={start}")).await;
    assert_eq!(kinds(&first), [("created".to_owned(), old.clone())]);
    let old_id = first["events"][0]["id"].as_str().unwrap().to_owned();

    clock.advance(time::Duration::hours(2));
    let (_, new) = feed.create(Uuid::new_v4()).await;
    // Polls in paused time: each sleep lets the loop run its rounds, up to
    // well past its next prune.
    let mut gone = false;
    for _ in 0..(PRUNE_EVERY.as_secs() * 3) {
        let (status, _, _) = feed
            .json(
                request(Method::GET, &format!("/v1/events?after={start}"))
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        if status == StatusCode::GONE {
            gone = true;
            break;
        }
        assert_eq!(status, StatusCode::OK);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(gone, "the old event was never pruned");
    let rest = feed.page(&format!("/v1/events?after={old_id}")).await;
    assert_eq!(
        kinds(&rest),
        [("created".to_owned(), new)],
        "the newer one stays"
    );
    feed.feed.close();
    running.await.unwrap();
}
