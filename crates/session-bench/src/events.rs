//! Event fan-out: two `session-app` processes on one PostgreSQL, a
//! Server-Sent Events subscriber on each; revoke on A, and time until each
//! subscriber has read the `revoked` event. Beside propagation between
//! instances: the same path (commit, wake-up, read) plus the sequencing
//! step and the stream.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use hdrhistogram::Histogram;
use session_test_postgres::TestDatabase;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::Context;
use crate::api::Client;
use crate::app::{Launch, Server};
use crate::measure::histogram;
use crate::report::{Figure, Row, Section, Unit};

/// Revocations measured in a full run (in the quick mode, a few).
const REVOCATIONS: usize = 500;
const QUICK_REVOCATIONS: usize = 10;
/// How long one event may take to reach a subscriber before the run fails.
const GIVE_UP: Duration = Duration::from_secs(10);

pub(crate) fn run(ctx: &Context) -> anyhow::Result<Vec<Section>> {
    let revocations = if ctx.quick {
        QUICK_REVOCATIONS
    } else {
        REVOCATIONS
    };
    let database = TestDatabase::create();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(measure(ctx, database.url(), revocations))
}

/// A Server-Sent Events stream of `GET /v1/events`, read as raw bytes.
struct Subscriber {
    stream: TcpStream,
    /// What was read and not yet matched.
    buffer: String,
}

impl Subscriber {
    async fn open(address: SocketAddr) -> anyhow::Result<Self> {
        let mut stream = TcpStream::connect(address).await?;
        stream.set_nodelay(true)?;
        let request = format!(
            "GET /v1/events HTTP/1.1\r\nHost: {address}\r\nAccept: text/event-stream\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await?;
        let mut subscriber = Self {
            stream,
            buffer: String::new(),
        };
        let head = subscriber.until("\r\n\r\n").await?;
        if !head.starts_with("HTTP/1.1 200") {
            bail!("the events stream was refused: {head}");
        }
        Ok(subscriber)
    }

    /// Reads until `text` has arrived; returns everything up to it, and
    /// drops it from what is kept.
    async fn until(&mut self, text: &str) -> anyhow::Result<String> {
        let mut chunk = [0; 4096];
        loop {
            if let Some(at) = self.buffer.find(text) {
                return Ok(self.buffer.drain(..at + text.len()).collect());
            }
            let read = tokio::time::timeout(GIVE_UP, self.stream.read(&mut chunk))
                .await
                .context("an event did not arrive")??;
            if read == 0 {
                bail!("the events stream ended");
            }
            self.buffer
                .push_str(&String::from_utf8_lossy(&chunk[..read]));
        }
    }
}

async fn measure(ctx: &Context, url: &str, revocations: usize) -> anyhow::Result<Vec<Section>> {
    let server = || {
        Server::spawn(
            &ctx.app,
            Launch {
                database_url: url,
                cache: "map",
                log: "warn",
                extra: &[],
            },
        )
    };
    let mut a = server()?;
    let mut b = server()?;
    for server in [&mut a, &mut b] {
        server.wait_ready(Duration::from_secs(60)).await?;
    }
    let mut to_a = Client::connect(a.address).await?;
    let mut on_a = Subscriber::open(a.address).await?;
    let mut on_b = Subscriber::open(b.address).await?;
    let (mut revoke, mut reach_a, mut reach_b) = (histogram(), histogram(), histogram());
    for _ in 0..revocations {
        let created = to_a.create().await?;
        // The creation's event first: the revocation's is then the next.
        let created_line = format!("\"session_id\":\"{}\"", created.id);
        on_a.until(&created_line).await?;
        on_b.until(&created_line).await?;
        let revoked_line = "event: revoked\n".to_owned();
        let started = Instant::now();
        let (revoked, a_read, b_read) = tokio::join!(
            async {
                to_a.revoke(&created.id).await?;
                anyhow::Ok(started.elapsed())
            },
            async {
                on_a.until(&revoked_line).await?;
                anyhow::Ok(started.elapsed())
            },
            async {
                on_b.until(&revoked_line).await?;
                anyhow::Ok(started.elapsed())
            },
        );
        revoke.record(micros(revoked?))?;
        reach_a.record(micros(a_read?))?;
        reach_b.record(micros(b_read?))?;
    }
    drop((a, b));

    let mut section = Section::new(
        "events",
        "Event fan-out: revocation commit to an event delivered to a subscriber",
        "A's own DELETE round trip (its commit), for the same revocations",
    );
    section.note(format!(
        "Two `session-app serve` processes on one database, A and B, each with one \
         Server-Sent Events subscriber of `GET /v1/events` (a raw keep-alive socket). \
         {revocations} sessions are created on A, each read as a `created` event by both \
         subscribers, then revoked on A; clock from sending the DELETE to A until each \
         subscriber has read the `revoked` event. On A the write wakes A's feed, which \
         sequences the event; on B the change log's NOTIFY wakes B's feed, whose step finds \
         the event A sequenced (or sequences it first). Each includes the sequencing \
         step's transaction and one read of the feed."
    ));
    section.note(
        "Both services and PostgreSQL (throwaway, loopback, durability off) share the \
         machine's cores with the client.",
    );
    for (case, reached) in [
        ("revoke on A → event on a subscriber of A", &reach_a),
        ("revoke on A → event on a subscriber of B", &reach_b),
    ] {
        for (name, q) in [("p50", 0.5), ("p99", 0.99)] {
            let figure = quantile(reached, q);
            let floor = quantile(&revoke, q);
            section.rows.push(
                Row::new(
                    format!("{case}, {name}"),
                    figure,
                    floor,
                    figure.value / floor.value.max(1.0),
                )
                .detail("max", quantile(reached, 1.0)),
            );
        }
    }
    Ok(vec![section])
}

fn quantile(histogram: &Histogram<u64>, q: f64) -> Figure {
    Figure::new(histogram.value_at_quantile(q) as f64, Unit::Microseconds)
}

fn micros(elapsed: Duration) -> u64 {
    u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX)
}
