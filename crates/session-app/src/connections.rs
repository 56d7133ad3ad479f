//! The accept loop: HTTP/1.1 connections with the limits a public-facing
//! server needs, all enforced before a request reaches the router (and so
//! before the API-key check).
//!
//! - **Admission**: a socket gets one of `--max-connections` slots only once
//!   it has sent a whole request head. Until then it is *pending*, one of at
//!   most `--max-pending-connections`; when that pool is full, a new socket
//!   closes the pending one that has gone longest without a whole head, so
//!   sockets that never speak can neither keep new clients out nor close a
//!   connection that has spoken. A client whose head finds every slot taken
//!   waits for one, and takes the slot of a kept-alive connection: the one
//!   idle the longest when it starts waiting, and after that each
//!   connection that turns idle while it waits (that connection's answer
//!   says `Connection: close`), as nginx reuses its idle keep-alive
//!   connections. A connection whose response is still streaming is busy,
//!   not idle.
//! - **First-byte timeout**: a new connection must send its first byte
//!   within this time of opening (sockets that never speak leave quickly).
//! - **Header read timeout**: a request head must arrive whole within this
//!   time of the connection opening, or of its first byte on a kept-alive
//!   connection (a slowloris client holds a place no longer).
//! - **Request timeout**: from the first byte of a head until the response is
//!   ready, the wait for a slot included. A request the service has not
//!   answered by then is answered 503 `timeout` with `Connection: close`
//!   and its handler dropped; one whose body is still arriving is closed
//!   without an answer (its client has not finished asking).
//! - **Idle timeout**: how long a kept-alive connection may wait for its next
//!   request, and how long a response body may go without being taken by
//!   the client.
//!
//! A connection past its first-byte, header read or idle timeout is closed
//! without a response (its client has not finished asking, or stopped
//! reading).
//!
//! A request body the router leaves unread is drained or the connection
//! closed, and every close the server starts is a lingering close, so the
//! client reads its answer without a reset: see [`crate::unread`]. hyper's own
//! `header_read_timeout` is not used: hyper 1.x restarts it as soon as a
//! kept-alive connection goes idle, so it cannot give an idle timeout longer
//! than the header read timeout. The upstream work that would let this loop
//! go: hyperium/hyper#1628 (server idle, read and write timeouts, open) and
//! hyperium/hyper#3828 (a header read timeout for every request, which
//! leaves room for a separate idle timeout, open).
//!
//! The timeouts cost no timer operation per request: each connection keeps
//! its phase and when it began in one atomic word, and one timer that is
//! moved only when a deadline comes earlier than the one armed; when it
//! fires early, it is re-armed for the phase the connection is in by then.
//! A busy connection so touches its timer about twice per header read
//! timeout, however many requests it carries. Admission touches only a
//! connection's first request; later ones read two atomics more.

use std::cell::Cell;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::future::{Future, poll_fn};
use std::io;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use hyper::body::{Body as _, Bytes, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

use crate::unread::{Lingering, RequestBody, UnreadSlot};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The limits every client connection is held to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConnectionLimits {
    /// The most a new connection may take to send its first byte, from its
    /// opening (at most the header read timeout: a longer one is moot).
    pub(crate) first_byte_timeout: Duration,
    /// The most a request head may take to arrive, from the connection
    /// opening or from the head's first byte.
    pub(crate) header_read_timeout: Duration,
    /// The most a request may take from the first byte of its head until its
    /// response is ready (reading the head, waiting for a slot, reading the
    /// body, and handling it).
    pub(crate) request_timeout: Duration,
    /// The most a kept-alive connection may wait for its next request, and
    /// a response body for its client to take more of it.
    pub(crate) idle_timeout: Duration,
    /// Connections that have sent a whole request head, served at once.
    pub(crate) max_connections: usize,
    /// Connections accepted and not yet given a slot (no whole head yet, or
    /// waiting for a slot) at once.
    pub(crate) max_pending_connections: usize,
}

/// What the accept loop counts, served on `/metrics` beside the API's own
/// families. Cheap to clone; clones share the counts.
#[derive(Debug, Clone, Default)]
pub(crate) struct ConnectionMetrics {
    /// Client connections open now, pending or holding a slot.
    open: Gauge,
    /// Connections without a slot now: no whole head yet, or waiting.
    pending: Gauge,
    /// Connections whose first head found every slot taken, and waited.
    accepts_deferred: Counter,
    /// Kept-alive connections closed to make room for a waiting client.
    shed: Counter,
    /// Pending connections closed, before a whole head, to make room in
    /// the pending pool.
    evicted: Counter,
    /// Connections closed by a limit, by the limit.
    timeouts: Family<TimeoutLabels, Counter>,
    /// Request bodies answered before they were read to the end, by what
    /// became of their connection.
    unread_bodies: Family<UnreadLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UnreadLabels {
    /// `drained` (the connection was kept) or `closed`.
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TimeoutLabels {
    limit: &'static str,
}

impl ConnectionMetrics {
    /// Registers every family in `registry` (the service's, which prefixes
    /// each name with `session_`).
    pub(crate) fn register(&self, registry: &mut Registry) {
        registry.register(
            "http_connections_open",
            "Client connections open now, pending or holding a slot",
            self.open.clone(),
        );
        registry.register(
            "http_connections_pending",
            "Client connections without a slot now: no whole request head yet (at most --max-pending-connections), or waiting for a slot",
            self.pending.clone(),
        );
        registry.register(
            "http_accepts_deferred",
            "Connections whose first request head found every slot (--max-connections) taken, and waited for one",
            self.accepts_deferred.clone(),
        );
        registry.register(
            "http_connections_shed",
            "Kept-alive connections closed, once idle, to give their slot to a client waiting for one",
            self.shed.clone(),
        );
        registry.register(
            "http_connections_evicted",
            "Connections closed before they sent a whole request head, to make room for a new one at --max-pending-connections",
            self.evicted.clone(),
        );
        registry.register(
            "http_connection_timeouts",
            "Connections closed by a limit (first_byte, header_read, request or idle)",
            self.timeouts.clone(),
        );
        // Both outcomes from the start, as every outcome family.
        for outcome in [UNREAD_DRAINED, UNREAD_CLOSED] {
            drop(self.unread_bodies.get_or_create(&UnreadLabels { outcome }));
        }
        registry.register(
            "http_unread_bodies",
            "Request bodies answered before they were read to the end: drained (the connection kept) or closed (Connection: close)",
            self.unread_bodies.clone(),
        );
    }

    /// Counts a body answered unread, by what became of its connection.
    fn unread_body(&self, outcome: &'static str) {
        self.unread_bodies
            .get_or_create(&UnreadLabels { outcome })
            .inc();
    }

    /// Counts a connection closed by the limit of `phase`.
    fn timed_out(&self, phase: Phase) {
        self.timeouts
            .get_or_create(&TimeoutLabels {
                limit: phase.timeout_label(),
            })
            .inc();
    }
}

const UNREAD_DRAINED: &str = "drained";
const UNREAD_CLOSED: &str = "closed";

/// How long a request past its time limit has to be answered once told to
/// (the answer is made on the next poll, so this is only a backstop for a
/// connection that cannot write it): then it is closed without one.
const EXPIRED_ANSWER_GRACE: Duration = Duration::from_secs(1);

/// What a connection is doing, which decides the limit that applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Opened, and not a byte received yet.
    Silent = 0,
    /// Waiting for, or reading, a request head.
    Head = 1,
    /// Waiting for a slot, reading a request's body or handling it.
    Request = 2,
    /// Sending a response body of unknown length (a stream): busy, and
    /// held to the idle timeout between the parts the client takes.
    Responding = 3,
    /// Between requests on a kept-alive connection.
    Idle = 4,
}

impl Phase {
    const BITS: u32 = 3;

    fn from_bits(bits: u64) -> Self {
        match bits & 0b111 {
            0 => Self::Silent,
            1 => Self::Head,
            2 => Self::Request,
            3 => Self::Responding,
            _ => Self::Idle,
        }
    }

    /// The label counted in metrics when this phase's limit closes a connection.
    pub(crate) fn timeout_label(self) -> &'static str {
        match self {
            Self::Silent => "first_byte",
            Self::Head => "header_read",
            Self::Request => "request",
            Self::Responding | Self::Idle => "idle",
        }
    }
}

/// A connection's phase and when it began, shared by the socket (which sees
/// a new request's first byte), the service (which sees its head parsed and
/// its response ready) and the task enforcing the limits. All three run in
/// the connection's one task; the atomic only makes the sharing `Sync`.
#[derive(Debug)]
struct ConnectionClock {
    opened: Instant,
    /// Nanoseconds since `opened` shifted left by [`Phase::BITS`], ORed
    /// with the phase.
    state: AtomicU64,
}

impl ConnectionClock {
    fn new() -> Self {
        Self {
            opened: Instant::now(),
            state: AtomicU64::new(Phase::Silent as u64),
        }
    }

    fn load(&self) -> (Phase, Instant) {
        let bits = self.state.load(Ordering::Relaxed);
        (
            Phase::from_bits(bits),
            self.opened + Duration::from_nanos(bits >> Phase::BITS),
        )
    }

    fn enter(&self, phase: Phase, since: Instant) {
        let nanos = u64::try_from(since.saturating_duration_since(self.opened).as_nanos())
            .unwrap_or(u64::MAX >> Phase::BITS);
        self.state
            .store((nanos << Phase::BITS) | phase as u64, Ordering::Relaxed);
    }

    /// A byte arrived: on a new connection it starts the first head, whose
    /// clock runs from the opening; on an idle one, the next head.
    fn on_bytes_read(&self) {
        match self.load().0 {
            Phase::Silent => self.enter(Phase::Head, self.opened),
            Phase::Idle => self.enter(Phase::Head, Instant::now()),
            _ => {}
        }
    }

    /// hyper parsed a head: the request's clock keeps running from the head's
    /// first byte (or from now, if the whole head was already buffered).
    fn on_request(&self) {
        let (phase, since) = self.load();
        let since = if phase == Phase::Head {
            since
        } else {
            Instant::now()
        };
        self.enter(Phase::Request, since);
    }

    fn on_response(&self) {
        self.enter(Phase::Idle, Instant::now());
    }

    /// The phase and the instant its limit runs out.
    fn deadline(&self, limits: &ConnectionLimits) -> (Phase, Instant) {
        let (phase, since) = self.load();
        let limit = match phase {
            Phase::Silent => limits.first_byte_timeout.min(limits.header_read_timeout),
            Phase::Head => limits.header_read_timeout,
            Phase::Request => limits.request_timeout,
            Phase::Responding | Phase::Idle => limits.idle_timeout,
        };
        (phase, since + limit)
    }
}

/// It holds a slot.
const ADMITTED: u8 = 1;
/// Asked to make room while busy: its next answer says `Connection: close`,
/// and once idle it closes.
const CLOSE_AFTER: u8 = 2;
/// Its request ran out of time: the answer in flight is replaced by 503.
const EXPIRED: u8 = 4;

/// What a connection's parts share: its clock, its standing, and the
/// server's admission. One per connection, so cloning it per request
/// touches no cache line other connections use.
struct Connection {
    id: u64,
    clock: ConnectionClock,
    flags: AtomicU8,
    admission: Arc<Admission>,
}

impl Connection {
    fn has(&self, flag: u8) -> bool {
        self.flags.load(Ordering::Relaxed) & flag != 0
    }

    fn set(&self, flag: u8) {
        self.flags.fetch_or(flag, Ordering::Relaxed);
    }

    fn clear(&self, flag: u8) {
        self.flags.fetch_and(!flag, Ordering::Relaxed);
    }
}

/// Where a connection stands in the admission.
enum Standing {
    /// Accepted, no whole head yet: may be evicted to make room.
    Pending,
    /// A whole head, waiting for a slot; told by this sender.
    Waiting(oneshot::Sender<()>),
    /// Gave up waiting (its request ran out of time): leaves with its answer.
    Leaving,
    /// Holds a slot; `closing` once asked to close for a waiting client.
    Admitted { closing: bool },
}

struct Entry {
    connection: Arc<Connection>,
    /// Asks the connection to close: evicted while pending, shed once
    /// admitted. Sent at most once.
    close: Option<oneshot::Sender<()>>,
    standing: Standing,
}

/// The slots, the pending pool and the queue of clients waiting, under one
/// lock taken when a connection opens, closes or sends its first head, and
/// when one turns idle while clients wait: never for a later request.
#[derive(Default)]
struct Slots {
    entries: HashMap<u64, Entry>,
    free_slots: usize,
    /// Pending and waiting connections (every one not holding a slot).
    pending: usize,
    /// Pending connections with no whole head, oldest (smallest id) first.
    unspoken: BTreeSet<u64>,
    /// Connections with a whole head waiting for a slot, first come first.
    waiters: VecDeque<u64>,
    /// Admitted connections asked to close for a waiter, not closed yet.
    closing: usize,
}

/// Admission to the server's slots, shared by the accept loop and every
/// connection.
struct Admission {
    registry: Mutex<Slots>,
    max_pending: usize,
    /// Waiters that no closing connection will make room for yet: read
    /// without the lock by every connection whose response is ready, which
    /// then closes after it to make room.
    owed: AtomicUsize,
    /// Told when the pending pool has room again.
    room: Notify,
    metrics: ConnectionMetrics,
}

/// What a connection's first head finds.
enum Asked {
    /// A slot.
    Admitted,
    /// Every slot taken: told by this receiver when one is its.
    Wait(oneshot::Receiver<()>),
    /// The connection was evicted meanwhile: it is closing.
    Gone,
}

impl Admission {
    fn new(limits: &ConnectionLimits, metrics: ConnectionMetrics) -> Self {
        Self {
            registry: Mutex::new(Slots {
                free_slots: limits.max_connections,
                ..Slots::default()
            }),
            max_pending: limits.max_pending_connections,
            owed: AtomicUsize::new(0),
            room: Notify::new(),
            metrics,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Slots> {
        // Every critical section leaves the registry whole, so a panic cannot leave it torn.
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Puts a new connection in the pending pool, closing the oldest one
    /// without a whole head if the pool is full. `None` when the pool is
    /// full of clients waiting for a slot: try again once it has room.
    fn try_enter(&self, connection: &Arc<Connection>) -> Option<oneshot::Receiver<()>> {
        let mut registry = self.lock();
        if registry.pending >= self.max_pending {
            let oldest = registry.unspoken.pop_first()?;
            if let Some(entry) = registry.entries.remove(&oldest)
                && let Some(close) = entry.close
            {
                let _ = close.send(());
            }
            registry.pending -= 1;
            self.metrics.evicted.inc();
        }
        let (close, closed) = oneshot::channel();
        registry.entries.insert(
            connection.id,
            Entry {
                connection: Arc::clone(connection),
                close: Some(close),
                standing: Standing::Pending,
            },
        );
        registry.unspoken.insert(connection.id);
        registry.pending += 1;
        self.metrics.pending.set(registry.pending as i64);
        Some(closed)
    }

    /// Puts a new connection in the pending pool, waiting while the pool is
    /// full of clients waiting for a slot.
    async fn enter(&self, connection: &Arc<Connection>) -> oneshot::Receiver<()> {
        loop {
            let mut room = pin!(self.room.notified());
            room.as_mut().enable();
            if let Some(closed) = self.try_enter(connection) {
                return closed;
            }
            tracing::debug!("the pending pool is full of clients waiting for a slot");
            room.await;
        }
    }

    /// A connection's first head arrived: a slot, or a place in the queue.
    fn ask(&self, id: u64) -> Asked {
        let mut registry = self.lock();
        let registry = &mut *registry;
        let Some(entry) = registry.entries.get_mut(&id) else {
            return Asked::Gone;
        };
        registry.unspoken.remove(&id);
        if registry.free_slots > 0 && registry.waiters.is_empty() {
            registry.free_slots -= 1;
            entry.standing = Standing::Admitted { closing: false };
            entry.connection.set(ADMITTED);
            registry.pending -= 1;
            self.metrics.pending.set(registry.pending as i64);
            self.room.notify_waiters();
            return Asked::Admitted;
        }
        let (admit, admitted) = oneshot::channel();
        entry.standing = Standing::Waiting(admit);
        registry.waiters.push_back(id);
        self.metrics.accepts_deferred.inc();
        self.make_room(registry);
        Asked::Wait(admitted)
    }

    /// Asks idle connections, longest idle first, to close for the clients
    /// waiting that no closing connection makes room for yet.
    fn make_room(&self, registry: &mut Slots) {
        while registry.waiters.len() > registry.closing {
            let idle = registry
                .entries
                .iter()
                .filter_map(
                    |(id, entry)| match (&entry.standing, entry.connection.clock.load()) {
                        (Standing::Admitted { closing: false }, (Phase::Idle, since)) => {
                            Some((since, *id))
                        }
                        _ => None,
                    },
                )
                .min();
            let Some((_, id)) = idle else { break };
            let Some(entry) = registry.entries.get_mut(&id) else {
                break;
            };
            entry.standing = Standing::Admitted { closing: true };
            if let Some(close) = entry.close.take() {
                let _ = close.send(());
            }
            registry.closing += 1;
            self.metrics.shed.inc();
        }
        self.owe(registry);
    }

    fn owe(&self, registry: &Slots) {
        self.owed.store(
            registry.waiters.len().saturating_sub(registry.closing),
            Ordering::Relaxed,
        );
    }

    /// Whether clients wait for a slot that no closing connection will free.
    fn owes(&self) -> bool {
        self.owed.load(Ordering::Relaxed) > 0
    }

    /// Connection `id` is about to turn idle with an answer of known length:
    /// whether it closes after that answer, for a client waiting.
    fn turning_idle(&self, id: u64) -> bool {
        let mut registry = self.lock();
        let registry = &mut *registry;
        if registry.waiters.len() <= registry.closing {
            return false;
        }
        let Some(entry) = registry.entries.get_mut(&id) else {
            return false;
        };
        if !matches!(entry.standing, Standing::Admitted { closing: false }) {
            return false;
        }
        entry.standing = Standing::Admitted { closing: true };
        // It closes on its own once its answer is out: a signal now would
        // cut the answer.
        entry.close = None;
        registry.closing += 1;
        self.metrics.shed.inc();
        self.owe(registry);
        true
    }

    /// A connection gave up waiting for a slot (its request ran out of time).
    fn stop_waiting(&self, id: u64) {
        let mut registry = self.lock();
        let registry = &mut *registry;
        if let Some(entry) = registry.entries.get_mut(&id)
            && matches!(entry.standing, Standing::Waiting(_))
        {
            entry.standing = Standing::Leaving;
            registry.waiters.retain(|waiter| *waiter != id);
            self.owe(registry);
        }
    }

    /// A connection closed: its place or its slot is free, the slot for the
    /// client that has waited longest.
    fn leave(&self, id: u64) {
        let mut registry = self.lock();
        let registry = &mut *registry;
        let Some(entry) = registry.entries.remove(&id) else {
            // Evicted: its place was taken at once.
            return;
        };
        match entry.standing {
            Standing::Pending | Standing::Waiting(_) | Standing::Leaving => {
                registry.unspoken.remove(&id);
                registry.waiters.retain(|waiter| *waiter != id);
                registry.pending -= 1;
                self.room.notify_waiters();
            }
            Standing::Admitted { closing } => {
                if closing {
                    registry.closing -= 1;
                }
                self.hand_over_slot(registry);
            }
        }
        self.metrics.pending.set(registry.pending as i64);
        self.owe(registry);
    }

    /// A slot came free: to the client that has waited longest, if any.
    fn hand_over_slot(&self, registry: &mut Slots) {
        while let Some(waiter) = registry.waiters.pop_front() {
            let Some(entry) = registry.entries.get_mut(&waiter) else {
                continue;
            };
            let standing =
                std::mem::replace(&mut entry.standing, Standing::Admitted { closing: false });
            entry.connection.set(ADMITTED);
            registry.pending -= 1;
            self.room.notify_waiters();
            if let Standing::Waiting(admit) = standing {
                // A waiter that gave up meanwhile still holds the slot
                // until it closes, and then hands it on.
                let _ = admit.send(());
            }
            return;
        }
        registry.free_slots += 1;
    }
}

/// Resolves once connection `id` holds a slot (never, if it was evicted:
/// it is closing). Dropped before, it leaves the queue.
async fn admitted(admission: Arc<Admission>, id: u64) {
    struct LeaveQueueOnDrop<'a>(&'a Admission, u64);
    impl Drop for LeaveQueueOnDrop<'_> {
        fn drop(&mut self) {
            self.0.stop_waiting(self.1);
        }
    }
    match admission.ask(id) {
        Asked::Admitted => {}
        Asked::Wait(admit) => {
            let _leave = LeaveQueueOnDrop(&admission, id);
            if admit.await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        Asked::Gone => std::future::pending::<()>().await,
    }
}

/// Accepts connections on `listener` and serves `app` on each, within
/// `limits`, until `shutdown` completes; then stops accepting, lets every
/// connection finish its request in flight and returns once all are closed.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    metrics: ConnectionMetrics,
    shutdown: impl Future<Output = ()>,
) {
    let mut listener = listener;
    let admission = Arc::new(Admission::new(&limits, metrics.clone()));
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    // The limits below replace it (see the module comment). Without a timer
    // hyper could not run it anyway, but the default must not depend on that.
    builder.header_read_timeout(None);
    let mut shutdown = pin!(shutdown);
    let mut next_id = 0;
    loop {
        let stream = tokio::select! {
            // axum's accept retries, after a pause, on errors such as
            // running out of file descriptors.
            (stream, _peer) = axum::serve::Listener::accept(&mut listener) => stream,
            () = &mut shutdown => break,
        };
        // A response may leave in more than one write (head, then body):
        // Nagle's algorithm would hold the second back until the client's
        // delayed acknowledgement of the first.
        let _ = stream.set_nodelay(true);
        let connection = Arc::new(Connection {
            id: next_id,
            clock: ConnectionClock::new(),
            flags: AtomicU8::new(0),
            admission: Arc::clone(&admission),
        });
        next_id += 1;
        let close = tokio::select! {
            close = admission.enter(&connection) => close,
            () = &mut shutdown => break,
        };
        let io = TokioIo::new(WatchedStream {
            stream,
            connection: Arc::clone(&connection),
            lingering: None,
        });
        let unread = UnreadSlot::default();
        let service = TrackedService {
            inner: TowerToHyperService::new(app.clone()),
            connection: Arc::clone(&connection),
            unread: unread.clone(),
            first_request: Cell::new(true),
        };
        let served = graceful.watch(builder.serve_connection(io, service));
        let metrics = metrics.clone();
        tokio::spawn(async move {
            metrics.open.inc();
            // hyper's own errors (a malformed head, a reset) are the client's
            // and already answered or moot.
            let _ = within_limits(served, &connection, &limits, close, &unread).await;
            connection.admission.leave(connection.id);
            metrics.open.dec();
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Why a connection was closed before it ended on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closed {
    /// The limit of this phase ran out.
    TimedOut(Phase),
    /// Idle, and asked to make room for a client waiting for a slot.
    Shed,
    /// Pending, and asked to make room in the pending pool.
    Evicted,
}

/// Drives `connection` until it ends (`Ok`, with what hyper returned), the
/// limit of the phase it is in runs out, or `close` asks it to make room
/// (`Err`, counted in the metrics before the connection is dropped, which
/// closes the socket). A request past its limit is first told to answer
/// (503, see [`TrackedResponse`]), unless its body is still arriving.
async fn within_limits<F: Future>(
    served: F,
    connection: &Connection,
    limits: &ConnectionLimits,
    close: oneshot::Receiver<()>,
    unread: &UnreadSlot,
) -> Result<F::Output, Closed> {
    let metrics = &connection.admission.metrics;
    let mut served = pin!(served);
    let (_, mut armed) = connection.clock.deadline(limits);
    let mut timer = pin!(tokio::time::sleep_until(armed));
    let mut close = Some(close);
    // Once a request has run out of time and been told to answer: until
    // when it may take to.
    let mut answer_by = None;
    poll_fn(|cx| {
        if let Poll::Ready(output) = served.as_mut().poll(cx) {
            return Poll::Ready(Ok(output));
        }
        // The phase only changes while the connection is polled, so this is
        // the deadline until the next poll.
        let (phase, mut deadline) = connection.clock.deadline(limits);
        if let Some(receiver) = &mut close
            && let Poll::Ready(asked) = Pin::new(receiver).poll(cx)
        {
            close = None;
            // An error means the sender was dropped unsent: with this
            // connection's entry, or when it was told to close after its
            // answer instead. Not asked, either way.
            if asked.is_ok() {
                if !connection.has(ADMITTED) {
                    return Poll::Ready(Err(Closed::Evicted));
                }
                // A connection asked to make room while serving a request
                // closes once it is idle again.
                connection.set(CLOSE_AFTER);
            }
        }
        if phase == Phase::Idle && connection.has(CLOSE_AFTER) {
            return Poll::Ready(Err(Closed::Shed));
        }
        if phase == Phase::Request
            && let Some(until) = answer_by
        {
            deadline = until;
        }
        if deadline < armed {
            armed = deadline;
            timer.as_mut().reset(deadline);
        }
        while timer.as_mut().poll(cx).is_ready() {
            let now = Instant::now();
            if deadline > now {
                // Armed for an earlier phase that has since moved on.
                armed = deadline;
                timer.as_mut().reset(deadline);
                continue;
            }
            if phase == Phase::Request && answer_by.is_none() && !unread.awaiting_client() {
                // The service has not answered in time: the answer in
                // flight becomes a 503 at the next poll, which comes now.
                metrics.timed_out(phase);
                connection.set(EXPIRED);
                let until = now + EXPIRED_ANSWER_GRACE;
                answer_by = Some(until);
                armed = until;
                timer.as_mut().reset(until);
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            if answer_by.is_none() || phase != Phase::Request {
                metrics.timed_out(phase);
            }
            return Poll::Ready(Err(Closed::TimedOut(phase)));
        }
        Poll::Pending
    })
    .await
}

/// The router as a hyper service that admits the connection at its first
/// request, tells the connection's clock when a request starts and when its
/// response is ready, and drains what the router left unread of the
/// request body before the response goes out.
struct TrackedService {
    inner: TowerToHyperService<Router>,
    connection: Arc<Connection>,
    unread: UnreadSlot,
    /// Not yet called: the next call is the connection's first request.
    first_request: Cell<bool>,
}

type RouterFuture =
    <TowerToHyperService<Router> as hyper::service::Service<hyper::Request<RequestBody>>>::Future;

/// A connection's wait for a slot, made only at its first request.
type Admitting = Pin<Box<dyn Future<Output = ()> + Send>>;

impl hyper::service::Service<hyper::Request<Incoming>> for TrackedService {
    type Response = hyper::Response<TrackedBody>;
    type Error = std::convert::Infallible;
    type Future = TrackedResponse<RouterFuture>;

    fn call(&self, request: hyper::Request<Incoming>) -> Self::Future {
        self.connection.clock.on_request();
        let admitting: Option<Admitting> = self.first_request.replace(false).then(|| {
            Box::pin(admitted(
                Arc::clone(&self.connection.admission),
                self.connection.id,
            )) as Admitting
        });
        let expects_continue = request
            .headers()
            .get(hyper::header::EXPECT)
            .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        let request = request.map(|body| self.unread.wrap(body, expects_continue));
        TrackedResponse {
            // Lazy: the router sees the request only once polled, after admission.
            inner: self.inner.call(request),
            connection: Arc::clone(&self.connection),
            unread: self.unread.clone(),
            admitting,
            draining: None,
        }
    }
}

/// A response waiting for the rest of its request's body to be drained.
struct Draining {
    /// Resolves to whether the whole body was drained.
    rest: Pin<Box<dyn Future<Output = bool> + Send>>,
    response: axum::response::Response,
}

pin_project_lite::pin_project! {
    /// A response future that waits for the connection's admission (first
    /// request only), drains the request body left unread (or marks the
    /// response `Connection: close` when it cannot), then marks the
    /// connection idle, or responding for a body of unknown length, once
    /// the response is ready; or answers 503 when told the request ran out
    /// of time.
    struct TrackedResponse<F> {
        #[pin]
        inner: F,
        connection: Arc<Connection>,
        unread: UnreadSlot,
        admitting: Option<Admitting>,
        draining: Option<Draining>,
    }
}

impl<F> Future for TrackedResponse<F>
where
    F: Future<Output = Result<axum::response::Response, std::convert::Infallible>>,
{
    type Output = Result<hyper::Response<TrackedBody>, std::convert::Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let connection: &Arc<Connection> = this.connection;
        if connection.has(EXPIRED) {
            // Returning drops this future, and the router's with it.
            let mut response = match this.draining.take() {
                // The answer was ready; only the drain ran out of time.
                Some(Draining { response, .. }) => response,
                None => {
                    tracing::warn!(
                        "a request was not answered within --request-timeout; answered 503 timeout"
                    );
                    session_http::timeout_response()
                }
            };
            close_after(&mut response);
            return Poll::Ready(Ok(ready(connection, response)));
        }
        if let Some(admitting) = this.admitting {
            std::task::ready!(admitting.as_mut().poll(cx));
            *this.admitting = None;
        }
        if this.draining.is_none() {
            let mut response = match std::task::ready!(this.inner.poll(cx)) {
                Ok(response) => response,
                Err(never) => match never {},
            };
            // By now the router has dropped the request, and with it any
            // body it did not read to the end.
            match this.unread.take().map(crate::unread::Unread::drain) {
                Some(Some(rest)) => {
                    *this.draining = Some(Draining {
                        rest: Box::pin(rest),
                        response,
                    });
                }
                unread => {
                    if unread.is_some() {
                        connection.admission.metrics.unread_body(UNREAD_CLOSED);
                        close_after(&mut response);
                    }
                    return Poll::Ready(Ok(ready(connection, response)));
                }
            }
        }
        let Some(draining) = this.draining.as_mut() else {
            unreachable!("set above when not already set");
        };
        let drained = std::task::ready!(draining.rest.as_mut().poll(cx));
        let Some(Draining { mut response, .. }) = this.draining.take() else {
            unreachable!("polled just above");
        };
        if drained {
            connection.admission.metrics.unread_body(UNREAD_DRAINED);
        } else {
            connection.admission.metrics.unread_body(UNREAD_CLOSED);
            close_after(&mut response);
        }
        Poll::Ready(Ok(ready(connection, response)))
    }
}

/// A response is ready on `connection`: it closes after it if asked to make
/// room, or if it turns the connection idle while a client waits for a slot;
/// the connection is idle now (a body of known length leaves at once), or
/// responding until a body of unknown length (a stream) ends.
fn ready(
    connection: &Arc<Connection>,
    mut response: axum::response::Response,
) -> hyper::Response<TrackedBody> {
    let whole = response.body().size_hint().exact().is_some();
    let closes = connection.has(CLOSE_AFTER)
        || (whole
            && connection.admission.owes()
            && connection.admission.turning_idle(connection.id));
    if closes {
        close_after(&mut response);
        // hyper closes it once the answer is written, with a lingering close.
        connection.clear(CLOSE_AFTER);
    }
    if whole {
        connection.clock.on_response();
        response.map(|body| TrackedBody { body, stream: None })
    } else {
        connection.clock.enter(Phase::Responding, Instant::now());
        response.map(|body| TrackedBody {
            body,
            stream: Some(Arc::clone(connection)),
        })
    }
}

/// A response body. A stream (of unknown length) keeps its connection
/// responding, so busy and never shed, while the client takes each part
/// within the idle timeout, and idle once it ends.
pub(crate) struct TrackedBody {
    body: Body,
    /// The connection of a stream, until it ends.
    stream: Option<Arc<Connection>>,
}

impl TrackedBody {
    fn end(&mut self) {
        if let Some(connection) = self.stream.take() {
            connection.clock.on_response();
            if connection.admission.owes() {
                let mut registry = connection.admission.lock();
                connection.admission.make_room(&mut registry);
            }
        }
    }
}

impl hyper::body::Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let frame = std::task::ready!(Pin::new(&mut self.body).poll_frame(cx));
        match (&frame, &self.stream) {
            (Some(Ok(_)), Some(connection)) => {
                // The client took the last part: the idle timeout starts over.
                connection.clock.enter(Phase::Responding, Instant::now());
            }
            (Some(Ok(_)), None) => {}
            _ => self.end(),
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for TrackedBody {
    fn drop(&mut self) {
        self.end();
    }
}

/// Says the connection closes after `response`: hyper reads the header,
/// closes once the response is written, and the close lingers
/// ([`WatchedStream`]'s shutdown).
fn close_after(response: &mut axum::response::Response) {
    response.headers_mut().insert(
        hyper::header::CONNECTION,
        hyper::header::HeaderValue::from_static("close"),
    );
}

/// The client's socket, telling the connection's clock when bytes arrive,
/// and closing with a lingering close when hyper shuts it down.
struct WatchedStream {
    stream: TcpStream,
    connection: Arc<Connection>,
    /// Set once the write side is shut down.
    lingering: Option<Lingering>,
}

impl AsyncRead for WatchedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.connection.clock.on_bytes_read();
        }
        polled
    }
}

impl AsyncWrite for WatchedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    /// hyper shuts the socket down when it closes a connection, and drops
    /// it when this is ready: a lingering close, so what the client still
    /// sends does not turn the close into a reset (see [`crate::unread`]).
    /// hyper has no such option, hence it is done here.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let lingering = match &mut this.lingering {
            Some(lingering) => lingering,
            None => {
                std::task::ready!(Pin::new(&mut this.stream).poll_shutdown(cx))?;
                this.lingering.insert(Lingering::new())
            }
        };
        lingering.poll_discard(&mut this.stream, cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: ConnectionLimits = ConnectionLimits {
        first_byte_timeout: Duration::from_secs(2),
        header_read_timeout: Duration::from_secs(10),
        request_timeout: Duration::from_secs(30),
        idle_timeout: Duration::from_secs(75),
        max_connections: 1,
        max_pending_connections: 1,
    };

    #[tokio::test(start_paused = true)]
    async fn each_phase_is_held_to_its_own_limit_from_when_it_began() {
        let clock = ConnectionClock::new();
        let opened = clock.opened;
        assert_eq!(clock.deadline(&LIMITS), (Phase::Silent, opened + 2 * SEC));

        // The first byte: the head's clock runs from the opening.
        tokio::time::advance(SEC).await;
        clock.on_bytes_read();
        assert_eq!(clock.deadline(&LIMITS), (Phase::Head, opened + 10 * SEC));

        tokio::time::advance(SEC).await;
        clock.on_request();
        // The request's clock started with its head, at the opening.
        assert_eq!(clock.deadline(&LIMITS), (Phase::Request, opened + 30 * SEC));

        tokio::time::advance(SEC).await;
        clock.on_response();
        assert_eq!(clock.deadline(&LIMITS), (Phase::Idle, opened + 78 * SEC));

        tokio::time::advance(40 * SEC).await;
        clock.on_bytes_read();
        assert_eq!(clock.deadline(&LIMITS), (Phase::Head, opened + 53 * SEC));
        // More bytes of the same head do not restart its clock.
        tokio::time::advance(SEC).await;
        clock.on_bytes_read();
        assert_eq!(clock.deadline(&LIMITS), (Phase::Head, opened + 53 * SEC));

        // A head hyper had already buffered starts its request when parsed.
        clock.on_request();
        clock.on_response();
        tokio::time::advance(SEC).await;
        clock.on_request();
        assert_eq!(clock.deadline(&LIMITS), (Phase::Request, opened + 75 * SEC));
    }

    #[test]
    fn a_first_byte_timeout_past_the_header_read_timeout_is_moot() {
        let clock = ConnectionClock::new();
        let limits = ConnectionLimits {
            first_byte_timeout: 20 * SEC,
            ..LIMITS
        };
        assert_eq!(
            clock.deadline(&limits),
            (Phase::Silent, clock.opened + 10 * SEC)
        );
    }

    /// A body of unknown length: `parts` frames, then its end.
    struct Stream {
        parts: usize,
    }

    impl hyper::body::Body for Stream {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            if self.parts == 0 {
                return Poll::Ready(None);
            }
            self.parts -= 1;
            Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"event\n")))))
        }
    }

    fn connection() -> Arc<Connection> {
        Arc::new(Connection {
            id: 0,
            clock: ConnectionClock::new(),
            flags: AtomicU8::new(ADMITTED),
            admission: Arc::new(Admission::new(&LIMITS, ConnectionMetrics::default())),
        })
    }

    #[tokio::test]
    async fn a_streaming_response_keeps_its_connection_busy_until_it_ends() {
        let connection = connection();
        connection.clock.on_request();
        let response = ready(
            &connection,
            axum::response::Response::new(Body::new(Stream { parts: 2 })),
        );
        assert_eq!(connection.clock.load().0, Phase::Responding);
        let mut body = response.into_body();
        for _ in 0..2 {
            let frame = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
            assert!(matches!(frame, Some(Ok(_))));
            assert_eq!(connection.clock.load().0, Phase::Responding);
        }
        assert!(
            poll_fn(|cx| Pin::new(&mut body).poll_frame(cx))
                .await
                .is_none()
        );
        assert_eq!(connection.clock.load().0, Phase::Idle);
    }

    #[tokio::test]
    async fn a_whole_response_turns_its_connection_idle_at_once() {
        let connection = connection();
        connection.clock.on_request();
        let response = ready(&connection, axum::response::Response::new(Body::from("{}")));
        assert_eq!(connection.clock.load().0, Phase::Idle);
        assert!(response.headers().get(hyper::header::CONNECTION).is_none());
    }

    const SEC: Duration = Duration::from_secs(1);
}
