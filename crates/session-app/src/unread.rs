//! Request bodies answered without being read, and the close that lets their
//! client read the answer.
//!
//! Forward auth never reads a body, and an early error (413 on a declared
//! `Content-Length`, 401, 415, 400) answers before reading it, yet clients
//! send bodies anyway: a gateway relays a whole upload to forward auth
//! (APISIX forward-auth with `POST`, Traefik `forwardBody`, Envoy
//! `with_request_body`). Left alone, two things go wrong. The bytes still
//! coming cannot be told from the next request, so the connection cannot be
//! kept; and a socket closed with unread bytes in its receive buffer makes
//! the kernel send a reset, which can destroy the answer before the client
//! reads it. hyper tries one read of what is already buffered and otherwise
//! closes (`poll_drain_or_close_read`); it has no option to drain further or
//! to linger (hyperium/hyper#3241, closed as not planned). So:
//!
//! - **Drain**: once the answer is ready, the rest of the body is read and
//!   dropped, at most [`DRAIN_MAX_BYTES`] within [`DRAIN_TIMEOUT`], and the
//!   connection is kept. Go's server does the same with the same bound
//!   (`maxPostHandlerReadBytes`, 256 KiB: about what a TCP receive buffer
//!   holds anyway).
//! - **Close**: a body over the bound (by its `Content-Length`, or as it is
//!   read), too slow, broken, or never invited (`Expect: 100-continue` with
//!   the body never asked for, since reading it would invite the upload) is
//!   not drained: the answer says `Connection: close`.
//! - **Linger**: every close the server starts is a lingering close, as
//!   nginx's `lingering_close`: the write side is shut down (the client reads
//!   the whole answer, then the end of stream) and whatever still arrives is
//!   read and dropped until the client closes too, [`LINGER_TIMEOUT`] passes
//!   with nothing arriving, or [`LINGER_TIME`] in all. Only then is the
//!   socket closed, with nothing unread, so without a reset.

use std::future::{Future, poll_fn};
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The most of a body left unread (bytes) that is read and dropped to keep
/// the connection; a longer body closes it. Go's `maxPostHandlerReadBytes`.
pub(crate) const DRAIN_MAX_BYTES: u64 = 256 * 1024;

/// How long the answer waits for the rest of an unread body before it
/// closes the connection instead. The request timeout bounds it too.
pub(crate) const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);

/// The most a lingering close reads and drops after the answer, in all.
/// nginx's `lingering_time` is 30 s for bodies a client may still be
/// uploading over a slow link; the clients here are gateways and services a
/// network hop away, which finish sending in milliseconds.
pub(crate) const LINGER_TIME: Duration = Duration::from_secs(2);

/// How long a lingering close waits for more bytes before it closes
/// (nginx's `lingering_timeout`, 5 s there for the same reason).
pub(crate) const LINGER_TIMEOUT: Duration = Duration::from_millis(500);

/// A request body the router dropped before its end, handed back to the
/// connection to drain.
pub(crate) struct Unread {
    body: Incoming,
    /// Whether the router ever asked for the body. hyper sends
    /// `100 Continue` on the first ask, so a body never asked for under
    /// `Expect: 100-continue` was never invited, and draining it would invite it.
    polled: bool,
    expects_continue: bool,
}

impl Unread {
    /// Reads and drops the rest of the body within [`DRAIN_MAX_BYTES`] and
    /// [`DRAIN_TIMEOUT`]; resolves to whether it all came, so the connection
    /// can serve the next request. `None` when the body must not or cannot
    /// be drained (never invited, or declared over the bound): close instead.
    pub(crate) fn drain(mut self) -> Option<impl Future<Output = bool> + Send + 'static> {
        if (self.expects_continue && !self.polled)
            || self.body.size_hint().lower() > DRAIN_MAX_BYTES
        {
            return None;
        }
        Some(async move {
            let mut left = DRAIN_MAX_BYTES;
            let read_to_end = async {
                while let Some(frame) = poll_fn(|cx| Pin::new(&mut self.body).poll_frame(cx)).await
                {
                    let Ok(frame) = frame else {
                        return false;
                    };
                    if let Some(data) = frame.data_ref() {
                        match left.checked_sub(data.len() as u64) {
                            Some(rest) => left = rest,
                            None => return false,
                        }
                    }
                }
                true
            };
            tokio::time::timeout(DRAIN_TIMEOUT, read_to_end)
                .await
                .unwrap_or(false)
        })
    }
}

/// Where a connection's request body comes back when the router drops it
/// before its end, and whether the router is waiting for more of it. One
/// per connection: HTTP/1.1 serves one request at a time. Cheap to clone;
/// clones share the slot.
#[derive(Clone, Default)]
pub(crate) struct UnreadSlot(Arc<Slot>);

#[derive(Default)]
struct Slot {
    unread: Mutex<Option<Unread>>,
    /// The router asked for more of the body than has arrived: the request
    /// waits on its client, not on the service.
    awaiting_client: AtomicBool,
}

impl UnreadSlot {
    /// The body the router sees: `body`, coming back here if dropped unread.
    pub(crate) fn wrap(&self, body: Incoming, expects_continue: bool) -> RequestBody {
        // A body handed back after its answer was sent (by a task the
        // router spawned) belongs to no request left to answer.
        drop(self.take());
        RequestBody {
            body: Some(body),
            polled: false,
            ended: false,
            expects_continue,
            slot: self.clone(),
        }
    }

    /// The body dropped unread since [`Self::wrap`], if any.
    pub(crate) fn take(&self) -> Option<Unread> {
        self.0
            .unread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// Whether the router is waiting for body bytes the client has not sent
    /// yet: a request past its time limit then is the client's to finish,
    /// and is closed rather than answered.
    pub(crate) fn awaiting_client(&self) -> bool {
        self.0.awaiting_client.load(Ordering::Relaxed)
    }

    fn set_awaiting_client(&self, waiting: bool) {
        // Read first: a body that arrives at once never writes the flag.
        if self.awaiting_client() != waiting {
            self.0.awaiting_client.store(waiting, Ordering::Relaxed);
        }
    }
}

/// A request body that, dropped before its end, goes back to its
/// connection's [`UnreadSlot`].
pub(crate) struct RequestBody {
    body: Option<Incoming>,
    polled: bool,
    /// It ended, or failed: nothing is left to drain.
    ended: bool,
    expects_continue: bool,
    slot: UnreadSlot,
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let Some(body) = this.body.as_mut() else {
            return Poll::Ready(None);
        };
        this.polled = true;
        let Poll::Ready(frame) = Pin::new(body).poll_frame(cx) else {
            this.slot.set_awaiting_client(true);
            return Poll::Pending;
        };
        this.slot.set_awaiting_client(false);
        if !matches!(frame, Some(Ok(_))) {
            this.ended = true;
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.body.as_ref().is_none_or(Incoming::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.body
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Incoming::size_hint)
    }
}

impl Drop for RequestBody {
    fn drop(&mut self) {
        self.slot.set_awaiting_client(false);
        if let Some(body) = self.body.take()
            && !self.ended
            && !body.is_end_stream()
        {
            *self
                .slot
                .0
                .unread
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(Unread {
                body,
                polled: self.polled,
                expects_continue: self.expects_continue,
            });
        }
    }
}

/// The reading half of a lingering close, once the write side is shut down:
/// reads and drops what arrives until the end of stream, [`LINGER_TIMEOUT`]
/// of silence or [`LINGER_TIME`] in all.
pub(crate) struct Lingering {
    until: Instant,
    /// Boxed: a connection lingers only at its end.
    timer: Pin<Box<Sleep>>,
}

impl Lingering {
    /// Starts the linger now.
    pub(crate) fn new() -> Self {
        let now = Instant::now();
        Self {
            until: now + LINGER_TIME,
            timer: Box::pin(tokio::time::sleep_until(
                now + LINGER_TIMEOUT.min(LINGER_TIME),
            )),
        }
    }

    /// Ready when the socket can be closed without a reset, or the linger
    /// is over. A read error ends it too: the client has reset the
    /// connection itself, and nothing is left to protect.
    pub(crate) fn poll_discard<R: AsyncRead + Unpin>(
        &mut self,
        reader: &mut R,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        let mut scratch = [0u8; 8192];
        loop {
            let mut buf = ReadBuf::new(&mut scratch);
            match Pin::new(&mut *reader).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if buf.filled().is_empty() => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) => {
                    let now = Instant::now();
                    if now >= self.until {
                        return Poll::Ready(Ok(()));
                    }
                    self.timer
                        .as_mut()
                        .reset((now + LINGER_TIMEOUT).min(self.until));
                }
                Poll::Ready(Err(_)) => return Poll::Ready(Ok(())),
                Poll::Pending => {
                    ready!(self.timer.as_mut().poll(cx));
                    return Poll::Ready(Ok(()));
                }
            }
        }
    }
}
