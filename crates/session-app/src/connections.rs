//! The accept loop: HTTP/1.1 connections with the limits a public-facing
//! server needs, all enforced before a request reaches the router (and so
//! before the API-key check).
//!
//! - **Header read timeout**: a request head must arrive whole within this
//!   time of the connection opening, or of its first byte on a kept-alive
//!   connection (a slowloris client holds a slot no longer).
//! - **Request timeout**: from the first byte of a head until the response is
//!   ready: a slow body upload, or a handler that cannot answer, ends here.
//! - **Idle timeout**: how long a kept-alive connection may wait for its next
//!   request.
//! - **Max connections**: when every slot is taken, one idle kept-alive
//!   connection is closed to make room (as nginx reuses its idle keep-alive
//!   connections); with none idle the loop stops accepting until a
//!   connection closes, and new clients wait in the kernel's listen
//!   backlog. A client that never finishes a head frees its slot at the
//!   header read timeout, so a flood of them delays others by about that
//!   timeout, and cannot shut them out.
//!
//! A connection past a timeout is closed without a response (its client has
//! not finished asking, or stopped reading).
//!
//! A request body the router leaves unread is drained or the connection
//! closed, and every close the server starts lingers, so the client reads
//! its answer without a reset: see [`crate::unread`]. hyper's own
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
//! timeout, however many requests it carries.

use std::collections::HashMap;
use std::future::{Future, poll_fn};
use std::io;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
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
    /// The most a request head may take to arrive, from the connection
    /// opening or from the head's first byte.
    pub(crate) header_read_timeout: Duration,
    /// The most a request may take from the first byte of its head until its
    /// response is ready (reading the head and body, and handling it).
    pub(crate) request_timeout: Duration,
    /// The most a kept-alive connection may wait for its next request.
    pub(crate) idle_timeout: Duration,
    /// Connections served at once; past it, new ones wait to be accepted.
    pub(crate) max_connections: usize,
}

/// What the accept loop counts, served on `/metrics` beside the API's own
/// families. Cheap to clone; clones share the counts.
#[derive(Debug, Clone, Default)]
pub(crate) struct ConnectionMetrics {
    /// Client connections open now.
    open: Gauge,
    /// Connections that found every slot taken and waited to be accepted.
    accepts_deferred: Counter,
    /// Idle connections closed to make room for a new one.
    shed: Counter,
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
            "Client connections open now",
            self.open.clone(),
        );
        registry.register(
            "http_accepts_deferred",
            "Accepted connections that found every slot (--max-connections) taken and waited for one",
            self.accepts_deferred.clone(),
        );
        registry.register(
            "http_connections_shed",
            "Idle kept-alive connections closed to make room for a new one at --max-connections",
            self.shed.clone(),
        );
        registry.register(
            "http_connection_timeouts",
            "Connections closed by a limit (header_read, request or idle)",
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

/// What a connection is doing, which decides the limit that applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Waiting for, or reading, a request head.
    Head = 0,
    /// Reading a request's body or handling it.
    Request = 1,
    /// Between requests on a kept-alive connection.
    Idle = 2,
}

impl Phase {
    fn from_bits(bits: u64) -> Self {
        match bits & 0b11 {
            0 => Self::Head,
            1 => Self::Request,
            _ => Self::Idle,
        }
    }

    /// The label counted in metrics when this phase's limit closes a connection.
    pub(crate) fn timeout_label(self) -> &'static str {
        match self {
            Self::Head => "header_read",
            Self::Request => "request",
            Self::Idle => "idle",
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
    /// Nanoseconds since `opened` shifted left by two, ORed with the phase.
    state: AtomicU64,
}

impl ConnectionClock {
    fn new() -> Self {
        Self {
            opened: Instant::now(),
            state: AtomicU64::new(Phase::Head as u64),
        }
    }

    fn load(&self) -> (Phase, Instant) {
        let bits = self.state.load(Ordering::Relaxed);
        (
            Phase::from_bits(bits),
            self.opened + Duration::from_nanos(bits >> 2),
        )
    }

    fn enter(&self, phase: Phase, since: Instant) {
        let nanos = u64::try_from(since.saturating_duration_since(self.opened).as_nanos())
            .unwrap_or(u64::MAX >> 2);
        self.state
            .store((nanos << 2) | phase as u64, Ordering::Relaxed);
    }

    /// A byte arrived: on an idle connection it starts the next request head.
    fn on_bytes_read(&self) {
        if self.load().0 == Phase::Idle {
            self.enter(Phase::Head, Instant::now());
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
            Phase::Head => limits.header_read_timeout,
            Phase::Request => limits.request_timeout,
            Phase::Idle => limits.idle_timeout,
        };
        (phase, since + limit)
    }
}

/// Every open connection's clock, and the sender that asks it to close once
/// idle: what the accept loop looks through for a connection to shed.
#[derive(Default)]
struct OpenConnections {
    next_id: u64,
    by_id: HashMap<u64, (Arc<ConnectionClock>, oneshot::Sender<()>)>,
}

impl OpenConnections {
    fn add(&mut self, clock: Arc<ConnectionClock>) -> (u64, oneshot::Receiver<()>) {
        let (shed_tx, shed_rx) = oneshot::channel();
        let id = self.next_id;
        self.next_id += 1;
        self.by_id.insert(id, (clock, shed_tx));
        (id, shed_rx)
    }

    /// Asks the connection idle the longest to close. Returns whether one was idle.
    fn shed_one_idle(&mut self) -> bool {
        let oldest = self
            .by_id
            .iter()
            .filter_map(|(id, (clock, _))| match clock.load() {
                (Phase::Idle, since) => Some((since, *id)),
                _ => None,
            })
            .min();
        let Some((_, id)) = oldest else {
            return false;
        };
        if let Some((_, shed)) = self.by_id.remove(&id) {
            let _ = shed.send(());
        }
        true
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
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    // The limits below replace it (see the module comment). Without a timer
    // hyper could not run it anyway, but the default must not depend on that.
    builder.header_read_timeout(None);
    let open = Arc::new(Mutex::new(OpenConnections::default()));
    let mut shutdown = pin!(shutdown);
    loop {
        // Accepted before a slot is taken, so an idle connection is shed
        // only for a client that is really waiting (at most one at a time).
        let stream = tokio::select! {
            // axum's accept retries, after a pause, on errors such as
            // running out of file descriptors.
            (stream, _peer) = axum::serve::Listener::accept(&mut listener) => stream,
            () = &mut shutdown => break,
        };
        let permit = tokio::select! {
            permit = take_slot(&slots, &open, &metrics) => permit,
            () = &mut shutdown => break,
        };
        // A response may leave in more than one write (head, then body):
        // Nagle's algorithm would hold the second back until the client's
        // delayed acknowledgement of the first.
        let _ = stream.set_nodelay(true);
        let clock = Arc::new(ConnectionClock::new());
        let (id, shed) = lock(&open).add(Arc::clone(&clock));
        let io = TokioIo::new(WatchedStream {
            stream,
            clock: Arc::clone(&clock),
            lingering: None,
        });
        let service = TrackedService {
            inner: TowerToHyperService::new(app.clone()),
            clock: Arc::clone(&clock),
            unread: UnreadSlot::default(),
            metrics: metrics.clone(),
        };
        let connection = graceful.watch(builder.serve_connection(io, service));
        let metrics = metrics.clone();
        let open = Arc::clone(&open);
        tokio::spawn(async move {
            metrics.open.inc();
            // hyper's own errors (a malformed head, a reset) are the client's
            // and already answered or moot.
            let _ = within_limits(connection, &clock, &limits, shed, &metrics).await;
            lock(&open).by_id.remove(&id);
            metrics.open.dec();
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

fn lock(open: &Mutex<OpenConnections>) -> std::sync::MutexGuard<'_, OpenConnections> {
    // Every critical section leaves the map whole, so a panic cannot leave it torn.
    open.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A connection slot for a client that is waiting: when all are taken, an
/// idle connection is asked to close, and the slot is the first to free.
async fn take_slot(
    slots: &Arc<Semaphore>,
    open: &Mutex<OpenConnections>,
    metrics: &ConnectionMetrics,
) -> OwnedSemaphorePermit {
    if let Ok(permit) = Arc::clone(slots).try_acquire_owned() {
        return permit;
    }
    metrics.accepts_deferred.inc();
    if !lock(open).shed_one_idle() {
        tracing::debug!("every connection slot is busy; accepting again when one frees");
    }
    // The semaphore is never closed.
    Arc::clone(slots)
        .acquire_owned()
        .await
        .unwrap_or_else(|_| unreachable!("the connection semaphore is never closed"))
}

/// Why a connection was closed before it ended on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closed {
    /// The limit of this phase ran out.
    TimedOut(Phase),
    /// Idle while the server was full, and asked to make room.
    Shed,
}

/// Drives `connection` until it ends (`Ok`, with what hyper returned), the
/// limit of the phase it is in runs out, or it is idle after `shed` fired
/// (`Err`, counted in `metrics` before the connection is dropped, which
/// closes the socket).
async fn within_limits<F: Future>(
    connection: F,
    clock: &ConnectionClock,
    limits: &ConnectionLimits,
    shed: oneshot::Receiver<()>,
    metrics: &ConnectionMetrics,
) -> Result<F::Output, Closed> {
    let mut connection = pin!(connection);
    let (_, mut armed) = clock.deadline(limits);
    let mut timer = pin!(tokio::time::sleep_until(armed));
    let mut shed = Some(shed);
    let mut shedding = false;
    poll_fn(|cx| {
        if let Poll::Ready(output) = connection.as_mut().poll(cx) {
            return Poll::Ready(Ok(output));
        }
        // The phase only changes while the connection is polled, so this is
        // the deadline until the next poll.
        let (phase, deadline) = clock.deadline(limits);
        if let Some(receiver) = &mut shed
            && let Poll::Ready(asked) = Pin::new(receiver).poll(cx)
        {
            // The sender goes unsent only with this connection's own entry,
            // removed after this returns; an error would mean "not asked".
            shedding = asked.is_ok();
            shed = None;
        }
        // A connection asked to make room while serving a request closes
        // once the response is ready.
        if shedding && phase == Phase::Idle {
            metrics.shed.inc();
            return Poll::Ready(Err(Closed::Shed));
        }
        if deadline < armed {
            armed = deadline;
            timer.as_mut().reset(deadline);
        }
        while timer.as_mut().poll(cx).is_ready() {
            if deadline <= Instant::now() {
                metrics.timed_out(phase);
                return Poll::Ready(Err(Closed::TimedOut(phase)));
            }
            // Armed for an earlier phase that has since moved on.
            armed = deadline;
            timer.as_mut().reset(deadline);
        }
        Poll::Pending
    })
    .await
}

/// The router as a hyper service that tells the connection's clock when a
/// request starts and when its response is ready, and drains what the router
/// left unread of the request body before the response goes out.
struct TrackedService {
    inner: TowerToHyperService<Router>,
    clock: Arc<ConnectionClock>,
    unread: UnreadSlot,
    metrics: ConnectionMetrics,
}

type RouterFuture =
    <TowerToHyperService<Router> as hyper::service::Service<hyper::Request<RequestBody>>>::Future;

impl hyper::service::Service<hyper::Request<Incoming>> for TrackedService {
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = TrackedResponse<RouterFuture>;

    fn call(&self, request: hyper::Request<Incoming>) -> Self::Future {
        self.clock.on_request();
        let expects_continue = request
            .headers()
            .get(hyper::header::EXPECT)
            .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        let request = request.map(|body| self.unread.wrap(body, expects_continue));
        TrackedResponse {
            inner: self.inner.call(request),
            clock: Arc::clone(&self.clock),
            unread: self.unread.clone(),
            metrics: self.metrics.clone(),
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
    /// A response future that drains the request body left unread (or marks
    /// the response `Connection: close` when it cannot), then marks the
    /// connection idle once the response is ready.
    struct TrackedResponse<F> {
        #[pin]
        inner: F,
        clock: Arc<ConnectionClock>,
        unread: UnreadSlot,
        metrics: ConnectionMetrics,
        draining: Option<Draining>,
    }
}

impl<F> Future for TrackedResponse<F>
where
    F: Future<Output = Result<axum::response::Response, std::convert::Infallible>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
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
                        this.metrics.unread_body(UNREAD_CLOSED);
                        close_after(&mut response);
                    }
                    this.clock.on_response();
                    return Poll::Ready(Ok(response));
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
            this.metrics.unread_body(UNREAD_DRAINED);
        } else {
            this.metrics.unread_body(UNREAD_CLOSED);
            close_after(&mut response);
        }
        this.clock.on_response();
        Poll::Ready(Ok(response))
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
    clock: Arc<ConnectionClock>,
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
            self.clock.on_bytes_read();
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
        header_read_timeout: Duration::from_secs(10),
        request_timeout: Duration::from_secs(30),
        idle_timeout: Duration::from_secs(75),
        max_connections: 1,
    };

    #[tokio::test(start_paused = true)]
    async fn each_phase_is_held_to_its_own_limit_from_when_it_began() {
        let clock = ConnectionClock::new();
        let opened = clock.opened;
        assert_eq!(clock.deadline(&LIMITS), (Phase::Head, opened + 10 * SEC));

        tokio::time::advance(2 * SEC).await;
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

    const SEC: Duration = Duration::from_secs(1);
}
