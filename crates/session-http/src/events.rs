//! `GET /v1/events`: the feed of session events, as Server-Sent Events or
//! as a long-poll JSON page, from a cursor (`after`, or the
//! `Last-Event-ID` an `EventSource` sends when it reconnects).
//!
//! [`EventFeed`] is what the route serves from: the store's
//! [`EventLog`], the newest position known (a `watch` every subscriber
//! waits on), the bound on concurrent subscribers, and the end at
//! shutdown. Its [`run`](EventFeed::run) loop is the one that sequences
//! (on a store that sequences after the fact) and learns new positions:
//! at once after a write through [`EventFeed::store`] or a
//! [`wake`](EventFeed::wake), and every poll interval otherwise.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use session_core::port::clock::{Clock, SystemClock};
use session_core::port::events::{EventCursor, EventKind, EventLog, EventRead, SessionEvent};
use session_core::port::store::{SessionStore, StoreDecorator, StoreError, StoreOperation};
use time::OffsetDateTime;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use utoipa::{IntoParams, ToSchema};

use crate::error::{ApiError, ErrorBody};
use crate::input::ApiQuery;
use crate::state::ApiState;

/// How many events one read of the store takes, for a page or a stream.
const READ_BATCH: u32 = 100;

/// The longest `wait` a long-poll may ask for, in seconds: below the
/// default request timeout (30 s), so a long-poll ends with its answer.
pub const MAX_WAIT_SECONDS: u64 = 25;

/// The comment sent on an idle stream this often, so gateways keep it and
/// clients notice a dead one: well inside the service's idle timeout (120 s
/// by default) and nginx's `proxy_read_timeout` (60 s).
pub const HEARTBEAT: Duration = Duration::from_secs(15);

/// Events the prune step deletes per statement.
const PRUNE_BATCH: u32 = 10_000;

/// The events feed the route serves: cheap to clone, one per process.
#[derive(Clone)]
pub struct EventFeed {
    inner: Arc<FeedInner>,
}

struct FeedInner {
    log: Arc<dyn EventLog>,
    /// What [`EventFeed::prune`] measures ages against.
    clock: Arc<dyn Clock>,
    /// The newest position known; `None` until the first step.
    head: watch::Sender<Option<EventCursor>>,
    /// `true` once the feed is closed: every stream ends.
    closed: watch::Sender<bool>,
    /// A write committed here, or a hint that another process wrote.
    wake: Notify,
    subscribers: Arc<Semaphore>,
    max_subscribers: usize,
}

impl std::fmt::Debug for EventFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventFeed")
            .field("max_subscribers", &self.inner.max_subscribers)
            .field("head", &*self.inner.head.borrow())
            .finish_non_exhaustive()
    }
}

impl EventFeed {
    /// A feed over `log` serving at most `max_subscribers` streams and
    /// long-polls at once; past it a subscriber is answered 503
    /// `too_many_subscribers`.
    #[must_use]
    pub fn new(log: Arc<dyn EventLog>, max_subscribers: usize) -> Self {
        Self {
            inner: Arc::new(FeedInner {
                log,
                clock: Arc::new(SystemClock),
                head: watch::channel(None).0,
                closed: watch::channel(false).0,
                wake: Notify::new(),
                subscribers: Arc::new(Semaphore::new(max_subscribers)),
                max_subscribers,
            }),
        }
    }

    /// Measures events' ages for [`prune`](Self::prune) against `clock`
    /// (default: the system clock): give it the service's clock, so both
    /// agree on the time an event has and the time it is now. Before the
    /// feed is cloned or run.
    ///
    /// # Panics
    ///
    /// If the feed was cloned already.
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        Arc::get_mut(&mut self.inner)
            .expect("EventFeed::with_clock before the feed is cloned")
            .clock = clock;
        self
    }

    /// Asks the [`run`](Self::run) loop for a step now: a write committed,
    /// or another process says it wrote. Several count as one.
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }

    /// `store`, waking this feed after each write that committed, so a
    /// subscriber here learns of it at once rather than at the next poll.
    #[must_use]
    pub fn store(&self, store: Arc<dyn SessionStore>) -> Arc<dyn SessionStore> {
        Arc::new(WakeOnWrite {
            inner: store,
            feed: self.clone(),
        })
    }

    /// Ends every stream and long-poll now, and makes [`run`](Self::run)
    /// return: at shutdown, so no subscriber holds the process open.
    pub fn close(&self) {
        self.inner.closed.send_replace(true);
    }

    /// One sequencing step: turns writes committed since into events (a
    /// store that sequences after the fact) and publishes the newest
    /// position to every subscriber.
    ///
    /// # Errors
    ///
    /// [`StoreError`] if the store cannot be read or written; subscribers
    /// keep what they have.
    pub async fn step(&self) -> Result<EventCursor, StoreError> {
        let head = self.inner.log.sequence().await?;
        self.inner.head.send_if_modified(|known| {
            let changed = *known != Some(head);
            *known = Some(head);
            changed
        });
        Ok(head)
    }

    /// Deletes events older than `retention` (by their time, against the
    /// feed's clock), in batches; returns how many went.
    ///
    /// # Errors
    ///
    /// [`StoreError`] if the store cannot be written.
    pub async fn prune(&self, retention: Duration) -> Result<u64, StoreError> {
        let before = self.inner.clock.now() - retention;
        let mut total = 0;
        loop {
            let gone = self.inner.log.prune(before, PRUNE_BATCH).await?;
            total += gone;
            if gone < u64::from(PRUNE_BATCH) {
                return Ok(total);
            }
        }
    }

    /// Steps at once when woken and every `poll` otherwise, and prunes
    /// every `prune_every` when a `retention` is given, until
    /// [`close`](Self::close). A failed step is logged and tried again at
    /// the next wake-up or poll.
    pub async fn run(&self, poll: Duration, retention: Option<Duration>, prune_every: Duration) {
        let mut closed = self.inner.closed.subscribe();
        let mut last_prune: Option<tokio::time::Instant> = None;
        loop {
            if *closed.borrow_and_update() {
                return;
            }
            if let Err(err) = self.step().await {
                tracing::warn!(error = %err, "could not sequence the events feed; retrying");
            }
            if let Some(retention) = retention
                && last_prune.is_none_or(|at| at.elapsed() >= prune_every)
            {
                last_prune = Some(tokio::time::Instant::now());
                match self.prune(retention).await {
                    Ok(0) => {}
                    Ok(gone) => tracing::info!(gone, "pruned events past their retention"),
                    Err(err) => tracing::warn!(error = %err, "could not prune the events feed"),
                }
            }
            tokio::select! {
                () = self.inner.wake.notified() => {}
                () = tokio::time::sleep(poll) => {}
                _ = closed.changed() => {}
            }
        }
    }

    fn subscribe(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        Arc::clone(&self.inner.subscribers)
            .try_acquire_owned()
            .map_err(|_| ApiError::too_many_subscribers())
    }

    /// The cursor to start from: the newest position known, else the store's.
    async fn head(&self) -> Result<EventCursor, StoreError> {
        let known = *self.inner.head.borrow();
        match known {
            Some(head) => Ok(head),
            None => self.inner.log.head().await,
        }
    }
}

/// A store that wakes the feed after each committed call that created or
/// revoked sessions ([`StoreOperation::creates_or_revokes`]).
struct WakeOnWrite {
    inner: Arc<dyn SessionStore>,
    feed: EventFeed,
}

impl StoreDecorator for WakeOnWrite {
    fn inner_store(&self) -> &dyn SessionStore {
        &*self.inner
    }

    async fn around<T: Send>(
        &self,
        operation: StoreOperation,
        call: impl Future<Output = Result<T, StoreError>> + Send,
    ) -> Result<T, StoreError> {
        let done = call.await?;
        if operation.creates_or_revokes() {
            self.feed.wake();
        }
        Ok(done)
    }
}

/// The cursor's text: the history and the position, each as 16 lowercase
/// hexadecimal digits. Opaque to clients.
fn encode(cursor: EventCursor) -> String {
    format!("{:016x}{:016x}", cursor.history, cursor.position)
}

/// A cursor's text back, strictly: exactly what [`encode`] writes.
fn decode(text: &str) -> Option<EventCursor> {
    let valid = text.len() == 32
        && text
            .bytes()
            .all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte));
    if !valid {
        return None;
    }
    Some(EventCursor {
        history: u64::from_str_radix(&text[..16], 16).ok()?,
        position: u64::from_str_radix(&text[16..], 16).ok()?,
    })
}

/// Options for following the feed.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct EventsParams {
    /// Where to start: the `id` of the last event read (or a page's
    /// `next`). Absent: from now, only events after the request. A
    /// `Last-Event-ID` header, as an `EventSource` sends when it
    /// reconnects, wins over it.
    after: Option<String>,
    /// Long-poll only: how long to wait for a first event when there is
    /// none yet, in seconds, 0 to 25 (default 0: answer at once).
    #[param(value_type = Option<u64>, minimum = 0, maximum = 25)]
    wait: Option<String>,
    /// Long-poll only: the most events in the page, 1 to 1000 (default 100).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
}

impl EventsParams {
    /// The cursor asked for: `Last-Event-ID` if sent, else `after`.
    fn cursor(&self, headers: &HeaderMap) -> Result<Option<EventCursor>, ApiError> {
        if let Some(value) = headers.get("last-event-id") {
            return value
                .to_str()
                .ok()
                .and_then(decode)
                .map(Some)
                .ok_or_else(|| ApiError::invalid_request("Last-Event-ID: not an event id"));
        }
        match self.after.as_deref() {
            None | Some("") => Ok(None),
            Some(text) => decode(text)
                .map(Some)
                .ok_or_else(|| ApiError::invalid_request("after: not an event id")),
        }
    }

    fn wait(&self) -> Result<Duration, ApiError> {
        match self.wait.as_deref() {
            None => Ok(Duration::ZERO),
            Some(text) => text
                .parse::<u64>()
                .ok()
                .filter(|&seconds| seconds <= MAX_WAIT_SECONDS)
                .map(Duration::from_secs)
                .ok_or_else(|| ApiError::invalid_request("wait: must be 0 to 25 seconds")),
        }
    }

    fn limit(&self) -> Result<u32, ApiError> {
        match self.limit.as_deref() {
            None => Ok(READ_BATCH),
            Some(text) => text
                .parse::<u32>()
                .ok()
                .filter(|limit| (1..=1_000).contains(limit))
                .ok_or_else(|| ApiError::invalid_request("limit: must be 1 to 1000")),
        }
    }
}

/// What happened to a session: `created`, or `revoked` with its reason.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum EventType {
    /// The session was created; `time` is its `created_at`.
    Created,
    /// The session was revoked; `time` is its `revoked_at`.
    Revoked,
}

/// One event of the feed. Never a token or a token hash.
#[derive(Serialize, ToSchema)]
pub(crate) struct EventView {
    /// The event's id: the cursor to resume after it (`after`, or
    /// `Last-Event-ID`). Opaque.
    id: String,
    /// What happened.
    #[serde(rename = "type")]
    kind: EventType,
    /// The session.
    session_id: uuid::Uuid,
    /// The session's account.
    account_id: uuid::Uuid,
    /// When it happened (RFC 3339, UTC, microseconds).
    #[serde(with = "time::serde::rfc3339")]
    time: OffsetDateTime,
    /// Why the session was revoked: a lowercase identifier; `null` for a
    /// creation and for a revocation recorded without a reason.
    reason: Option<String>,
}

impl EventView {
    fn new(history: u64, event: &SessionEvent) -> Self {
        let (kind, reason) = match &event.kind {
            EventKind::Created => (EventType::Created, None),
            EventKind::Revoked { reason } => (
                EventType::Revoked,
                reason.as_ref().map(|reason| reason.as_str().to_owned()),
            ),
        };
        Self {
            id: encode(EventCursor {
                history,
                position: event.position,
            }),
            kind,
            session_id: *event.session_id.as_uuid(),
            account_id: *event.account_id.as_uuid(),
            time: event.at,
            reason,
        }
    }

    fn sse(&self) -> Event {
        let kind = match self.kind {
            EventType::Created => "created",
            EventType::Revoked => "revoked",
        };
        Event::default()
            .id(self.id.clone())
            .event(kind)
            .data(serde_json::to_string(self).unwrap_or_default())
    }
}

/// A page of the feed, as the long-poll answers it.
#[derive(Serialize, ToSchema)]
pub(crate) struct EventPage {
    /// The events after the cursor, oldest first.
    events: Vec<EventView>,
    /// Where to continue: the last event's id, or the cursor given (the
    /// feed's head, without one) when there were none.
    next: String,
}

/// Whether the client asked for Server-Sent Events.
fn wants_sse(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|accept| {
            accept
                .split(',')
                .any(|part| part.trim().starts_with("text/event-stream"))
        })
}

/// Follow the feed of session events: created, and revoked with its reason.
///
/// With `Accept: text/event-stream`, a stream of Server-Sent Events, each
/// with `id` (its cursor), `event` (`created` or `revoked`) and `data`
/// (the event as JSON, as in the long-poll page); a comment every 15 s
/// while idle; a final `gone` event if the cursor expires while streaming;
/// the stream ends when the service shuts down (reconnect with
/// `Last-Event-ID`). Otherwise a long-poll: one JSON page, waiting up to
/// `wait` seconds for a first event. Events are in commit order; resuming
/// after an event's id gives every later event once.
#[utoipa::path(
    get, path = "/v1/events", tag = "events",
    params(
        EventsParams,
        ("Last-Event-ID" = Option<String>, Header, description = "The id of the last event read; wins over `after`"),
    ),
    responses(
        (status = 200, description = "`text/event-stream`: a stream of events (see above); otherwise a page",
         content((EventPage = "application/json"), (String = "text/event-stream"))),
        (status = 400, description = "A malformed cursor or parameter", body = ErrorBody),
        (status = 404, description = "This service keeps no events feed", body = ErrorBody),
        (status = 410, description = "`cursor_expired`: the cursor is older than the retention, of another database, or past its head; list again and follow from a fresh start", body = ErrorBody),
        (status = 503, description = "`too_many_subscribers` (see Retry-After), or the store is unavailable", body = ErrorBody),
    ),
    security(("api_key" = [])),
)]
pub(crate) async fn events(
    State(state): State<ApiState>,
    headers: HeaderMap,
    ApiQuery(params): ApiQuery<EventsParams>,
) -> Result<Response, ApiError> {
    let feed = state.events().ok_or_else(ApiError::no_events_feed)?.clone();
    let cursor = params.cursor(&headers)?;
    let sse = wants_sse(&headers);
    let (wait, limit) = (params.wait()?, params.limit()?);
    let permit = feed.subscribe()?;
    let cursor = match cursor {
        Some(cursor) => cursor,
        None => feed.head().await.map_err(ApiError::from)?,
    };
    let mut subscriber = Subscriber {
        feed,
        cursor,
        events: VecDeque::new(),
        ended: false,
        _permit: permit,
    };
    // The first read decides the status: a refused cursor is a 410, before
    // any stream starts.
    if !subscriber.fill(limit).await? {
        return Err(ApiError::cursor_expired());
    }
    if sse {
        let stream = futures_util::stream::unfold(subscriber, |mut subscriber| async move {
            let event = subscriber.next_sse().await?;
            Some((Ok::<_, Infallible>(event), subscriber))
        });
        let mut response = Sse::new(stream).into_response();
        // nginx buffers proxied responses unless told not to: each event
        // must reach the client when it is sent.
        response
            .headers_mut()
            .insert("x-accel-buffering", HeaderValue::from_static("no"));
        return Ok(response);
    }
    if subscriber.events.is_empty() && !wait.is_zero() {
        subscriber.wait_for_more(wait).await;
        if !subscriber.fill(limit).await? {
            return Err(ApiError::cursor_expired());
        }
    }
    let history = subscriber.cursor.history;
    let page = EventPage {
        events: subscriber
            .events
            .iter()
            .map(|event| EventView::new(history, event))
            .collect(),
        next: encode(subscriber.cursor),
    };
    Ok((StatusCode::OK, axum::Json(page)).into_response())
}

/// One stream or long-poll: its cursor, what it has read and not yet sent,
/// and its place among the subscribers.
struct Subscriber {
    feed: EventFeed,
    /// Every event up to here has been read (into `events`, or sent).
    cursor: EventCursor,
    events: VecDeque<SessionEvent>,
    ended: bool,
    _permit: OwnedSemaphorePermit,
}

impl Subscriber {
    /// Reads up to `limit` events after the cursor; `false` if the feed
    /// refused the cursor.
    async fn fill(&mut self, limit: u32) -> Result<bool, StoreError> {
        match self.feed.inner.log.read(self.cursor, limit).await? {
            EventRead::Page { events, next } => {
                self.cursor = next;
                self.events.extend(events);
                Ok(true)
            }
            EventRead::Gone => Ok(false),
        }
    }

    /// Whether the feed knows of events past the cursor (or of another
    /// history, which the next read refuses).
    fn behind(&self, head: Option<EventCursor>) -> bool {
        head.is_some_and(|head| {
            head.history != self.cursor.history || head.position > self.cursor.position
        })
    }

    /// Waits until the feed knows of more, `wait` passes, or it closes.
    async fn wait_for_more(&self, wait: Duration) {
        let mut head = self.feed.inner.head.subscribe();
        let mut closed = self.feed.inner.closed.subscribe();
        let more = head.wait_for(|head| self.behind(*head));
        tokio::select! {
            _ = more => {}
            () = tokio::time::sleep(wait) => {}
            _ = closed.wait_for(|closed| *closed) => {}
        }
    }

    /// The next thing to send on the stream: an event, a heartbeat, a
    /// final `gone`; `None` once it ends.
    async fn next_sse(&mut self) -> Option<Event> {
        let mut head = self.feed.inner.head.subscribe();
        let mut closed = self.feed.inner.closed.subscribe();
        loop {
            if *closed.borrow_and_update() || self.ended {
                return None;
            }
            if let Some(event) = self.events.pop_front() {
                return Some(EventView::new(self.cursor.history, &event).sse());
            }
            if self.behind(*head.borrow_and_update()) {
                match self.fill(READ_BATCH).await {
                    Ok(true) => continue,
                    Ok(false) => {
                        self.ended = true;
                        let body = ApiError::cursor_expired().body_json();
                        return Some(Event::default().event("gone").data(body));
                    }
                    Err(err) => {
                        // The client resumes from its last event id.
                        tracing::warn!(error = %err, "could not read the events feed; ending a stream");
                        return None;
                    }
                }
            }
            tokio::select! {
                _ = head.changed() => {}
                _ = closed.changed() => {}
                () = tokio::time::sleep(HEARTBEAT) => return Some(Event::default().comment("")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_reads_back_exactly_and_nothing_else_does() {
        let cursor = EventCursor {
            history: 0xfeed_0000_0000_beef,
            position: 42,
        };
        assert_eq!(decode(&encode(cursor)), Some(cursor));
        for text in [
            "",
            "feed00000000beef000000000000002A",
            "feed00000000beef00000000000002a",
            "feed00000000beef000000000000002a0",
            "+eed00000000beef000000000000002a",
        ] {
            assert_eq!(decode(text), None, "{text:?}");
        }
    }
}
